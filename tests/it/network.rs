//! The network path (issue 18): which certificate authorities are trusted (the system's,
//! `SSL_CERT_FILE`, `[network] ca_file`), compressed model lists with their size bound
//! after decompression, answering from a stale catalog before refreshing it, and `-m` on a
//! cold cache asking before the catalog is learned.

use std::io::Write;
use std::sync::Arc;

use crate::fake::{self, FakeServer, Reply};
use crate::harness::Env;

/// A test CA and a certificate it signed for 127.0.0.1 and localhost.
struct TestPki {
    ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "freeroute test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf = leaf_params
        .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

/// An https provider on 127.0.0.1 whose model is listed in the config (no catalog fetch).
fn corp_env(server: &FakeServer) -> Env {
    Env::bare().config(&format!(
        "[providers.corp]\nbase_url = \"{}\"\nmodels = [{{ id = \"corp-model\" }}]\n",
        server.url("/v1")
    ))
}

#[test]
fn a_private_ca_is_trusted_from_ca_file_or_ssl_cert_file() {
    let pki = test_pki();
    let s = FakeServer::start_tls(pki.acceptor.clone(), |r| {
        fake::answer(&r.model(), &["Hello"])
    })
    .expect_chats(2);
    let env = corp_env(&s);
    let ca = env.path("config/freeroute/corp-ca.pem");
    std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
    std::fs::write(&ca, &pki.ca_pem).unwrap();

    // Unknown to the system's roots and the built-in ones: a clear error naming the fix.
    let out = env.run(&["hi"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stderr.contains("UnknownIssuer"), "{out}");
    assert!(
        out.stderr.contains("SSL_CERT_FILE") && out.stderr.contains("[network] ca_file"),
        "{out}"
    );
    assert!(
        s.chats().is_empty(),
        "no request passed an untrusted TLS handshake"
    );

    // As curl: SSL_CERT_FILE names the bundle to trust.
    let out = env.run_with_env(&["hi"], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello\n"), "{out}");

    // `[network] ca_file`, relative to the config file.
    let env = env.config("[network]\nca_file = \"corp-ca.pem\"\n");
    let out = env.run(&["hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello\n"), "{out}");
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_config_error_naming_it() {
    let s = FakeServer::start(|_| fake::error_json(500, "never asked"));
    let env = Env::new(&s).config("[network]\nca_file = \"nothing.pem\"\n");
    std::fs::create_dir_all(env.path("config/freeroute")).unwrap();
    std::fs::write(
        env.path("config/freeroute/nothing.pem"),
        "not a certificate\n",
    )
    .unwrap();
    let out = env.run(&["hi"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("nothing.pem"), "{out}");
    assert!(out.stderr.contains("[network] ca_file"), "{out}");
    assert!(s.requests().is_empty());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn accepts_gzip(r: &fake::Request) -> bool {
    r.header("accept-encoding")
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
}

/// A catalog of `n` OpenRouter-shaped free models.
fn big_catalog(n: usize) -> String {
    let entries: Vec<_> = (0..n)
        .map(|i| {
            fake::model_entry(
                &format!("vendor/model-{i}:free"),
                "0",
                Some(131072),
                &["text"],
                &["max_tokens", "temperature", "tools"],
            )
        })
        .collect();
    serde_json::json!({ "data": entries }).to_string()
}

#[test]
fn the_model_list_is_asked_for_gzipped_and_chats_are_not() {
    let body = big_catalog(300);
    let packed = gzip(body.as_bytes());
    assert!(packed.len() * 5 < body.len());
    let s = FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            if accepts_gzip(r) {
                return Reply::Binary {
                    status: 200,
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("content-encoding".into(), "gzip".into()),
                    ],
                    body: packed.clone(),
                };
            }
            return Reply::json(200, body.clone());
        }
        fake::answer(&r.model(), &["ok"])
    })
    .expect_chats(1);
    let env = Env::new(&s);
    let out = env.run(&["-m", "vendor/model-299:free", "q"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "{out}");
    let list = &s.requests()[0];
    assert!(
        list.path.ends_with("/models") && accepts_gzip(list),
        "{list:?}"
    );
    let chat = &s.chats()[0];
    assert_eq!(chat.header("accept-encoding"), Some("identity"), "{chat:?}");
}

#[test]
fn a_gzip_bomb_in_the_model_list_stops_at_the_bound() {
    // 40 MiB of JSON whitespace, a few dozen KiB on the wire.
    let mut body = b"{\"data\": [".to_vec();
    body.resize(40 << 20, b' ');
    body.extend_from_slice(b"]}");
    let packed = gzip(&body);
    assert!(packed.len() < 1 << 20);
    let s = FakeServer::start(move |_| Reply::Binary {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("content-encoding".into(), "gzip".into()),
        ],
        body: packed.clone(),
    });
    let env = Env::new(&s);
    let out = env.run(&["models"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("larger than 32 MiB"), "{out}");
}
