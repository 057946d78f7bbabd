//! The network path (issue 18): which certificate authorities are trusted (the system's,
//! `SSL_CERT_FILE`, `[network] ca_file`), compressed model lists with their size bound
//! after decompression, answering from a stale catalog before refreshing it, and `-m` on a
//! cold cache asking before the catalog is learned.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    let out = env.run(&["q"]);
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

/// The paths the fake was asked, in order, shortened to `models` and `chat`.
fn order(s: &FakeServer) -> Vec<&'static str> {
    s.requests()
        .iter()
        .map(|r| match r.path.ends_with("/models") {
            true => "models",
            false => "chat",
        })
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_stale_catalog_answers_first_and_is_refreshed_after_stdout_ended() {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Set by the test once it read the end of the run's stdout; the catalog handler waits
    // for it (bounded), so a refresh made while stdout is still open is seen as such.
    let stdout_ended = Arc::new(AtomicBool::new(false));
    let refresh_saw_the_end = Arc::new(Mutex::new(Vec::new()));
    let (ended, saw) = (stdout_ended.clone(), refresh_saw_the_end.clone());
    let s = FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            let waited = std::time::Instant::now();
            while !ended.load(Ordering::SeqCst) && waited.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(5));
            }
            saw.lock().unwrap().push(ended.load(Ordering::SeqCst));
            return crate::ask::catalog();
        }
        fake::answer(&r.model(), &["ok"])
    });
    let s = s.expect_chats(3);
    let env = Env::new(&s);
    // Cold: the catalog comes first (no -m to ask without it).
    stdout_ended.store(true, Ordering::SeqCst);
    assert_eq!(env.run(&["q"]).code, 0);
    assert_eq!(order(&s), ["models", "chat"]);

    // Two hours on, the cache is stale: the answer first, its stdout ended, then the list.
    stdout_ended.store(false, Ordering::SeqCst);
    let later = (now_ms() + 2 * 3_600_000).to_string();
    let mut child = env
        .cmd(&["q"])
        .env("FREEROUTE_NOW_MS", &later)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut answer = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut answer)
        .unwrap();
    stdout_ended.store(true, Ordering::SeqCst);
    let out = crate::harness::wait_within(child, crate::harness::RUN_LIMIT, "stale run");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(answer, "ok\n");
    assert_eq!(order(&s), ["models", "chat", "chat", "models"]);
    assert_eq!(
        *refresh_saw_the_end.lock().unwrap(),
        [true, true],
        "the refresh waited for a reader of stdout to see the end"
    );

    // The refreshed copy is fresh at that time: no fetch at all.
    let out = env.run_with_env(&["q"], &[("FREEROUTE_NOW_MS", &later)]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(order(&s), ["models", "chat", "chat", "models", "chat"]);
}

#[test]
fn one_model_on_a_cold_cache_is_asked_before_the_catalog_is_learned() {
    use crate::ask::{BIG, MID};
    let s = crate::ask::server(|r| fake::answer(&r.model(), &["ok"]));
    let env = Env::new(&s);
    let out = env.run(&["-m", BIG, "q"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "{out}");
    assert_eq!(order(&s), ["chat", "models"]);
    assert_eq!(s.chat_models(), [BIG]);
    // Learned: the next run plans from the cache.
    assert_eq!(env.run(&["-m", MID, "q"]).code, 0);
    assert_eq!(order(&s), ["chat", "models", "chat"]);
}

#[test]
fn the_catalog_comes_first_when_the_request_needs_what_only_it_tells() {
    use crate::ask::{BIG, MID};
    let long = "word ".repeat(4_000);
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.json");
    std::fs::write(
        &tools,
        r#"[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#,
    )
    .unwrap();
    let tools = tools.to_str().unwrap();
    let cases: Vec<(&str, Vec<&str>, Option<&str>)> = vec![
        ("tools", vec!["--tools", tools, "-m", BIG, "q"], None),
        ("a long prompt", vec!["-m", BIG], Some(long.as_str())),
        ("two picks", vec!["-m", BIG, "-m", MID, "q"], None),
        ("a paid-looking id", vec!["-m", "openai/gpt-4", "q"], None),
    ];
    for (why, args, stdin) in cases {
        let s = crate::ask::server(|r| fake::answer(&r.model(), &["ok"]));
        let env = Env::new(&s);
        let out = env.run_with_stdin(&args, stdin);
        assert_eq!(order(&s).first(), Some(&"models"), "{why}: {out}");
    }
}

#[test]
fn the_connection_to_the_next_provider_is_opened_while_the_first_attempt_runs() {
    use crate::ask::BIG;
    // The second provider, at another host (port): its connection is opened ahead.
    let corp = FakeServer::start(|r| fake::answer(&r.model(), &["from corp"])).expect_chats(1);
    let corp_warmed = {
        let c = corp.preconnects.clone();
        move || !c.lock().unwrap().is_empty()
    };
    // The first answers 429 once the other's connection is open (and a moment more for
    // the client to put it in its pool), so the fail-over finds it there.
    let or = crate::ask::server(move |r| {
        let waited = std::time::Instant::now();
        while !corp_warmed() && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        fake::upstream_429(&r.model())
    })
    .expect_chats(1);
    let env = Env::new(&or).config(&format!(
        "[providers.corp]\nbase_url = \"{}\"\nmodels = [{{ id = \"corp-model\" }}]\n",
        corp.url("/v1")
    ));
    let out = env.run(&["-v", "-m", BIG, "-m", "corp-model", "q"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "from corp\n"), "{out}");
    assert!(
        out.stderr.contains("pre-connecting to http://127.0.0.1:"),
        "{out}"
    );
    let warmed = corp.preconnects();
    assert_eq!(warmed.len(), 1, "{out}");
    assert_eq!(
        corp.chats()[0].connection,
        warmed[0],
        "the chat went over the connection opened ahead"
    );
    assert!(
        or.preconnects().is_empty(),
        "its connection was the attempt's own"
    );
}

#[test]
fn no_connection_is_opened_ahead_to_the_host_already_asked() {
    use crate::ask::{BIG, MID};
    let s = crate::ask::server(|r| match r.model().as_str() {
        BIG => fake::upstream_429(BIG),
        m => fake::answer(m, &["ok"]),
    })
    .expect_chats(2);
    let out = Env::new(&s).run(&["-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(s.preconnects().is_empty());
}

#[test]
fn preconnect_false_opens_no_connection_ahead() {
    use crate::ask::BIG;
    let corp = FakeServer::start(|r| fake::answer(&r.model(), &["from corp"])).expect_chats(1);
    let or = crate::ask::server(|r| fake::upstream_429(&r.model())).expect_chats(1);
    let env = Env::new(&or).config(&format!(
        "[providers.corp]\nbase_url = \"{}\"\nmodels = [{{ id = \"corp-model\" }}]\n[network]\npreconnect = false\n",
        corp.url("/v1")
    ));
    let out = env.run(&["-m", BIG, "-m", "corp-model", "q"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "from corp\n"), "{out}");
    assert!(corp.preconnects().is_empty());
}

#[test]
fn a_pinned_model_on_a_cold_cache_waits_for_no_other_catalog() {
    use crate::ask::BIG;
    use std::sync::atomic::{AtomicBool, Ordering};
    // The other list is answered only once the chat was asked (or 10 s passed): a run
    // that waited for it before asking would be seen to.
    let asked = Arc::new(AtomicBool::new(false));
    let after_the_chat = Arc::new(Mutex::new(Vec::new()));
    let (a, seen) = (asked.clone(), after_the_chat.clone());
    let other = FakeServer::start(move |r| {
        if !r.path.ends_with("/models") {
            return fake::error_json(500, "never asked");
        }
        let waited = std::time::Instant::now();
        while !a.load(Ordering::SeqCst) && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.lock().unwrap().push(a.load(Ordering::SeqCst));
        crate::ask::catalog()
    });
    let s = crate::ask::server(move |r| {
        asked.store(true, Ordering::SeqCst);
        fake::answer(&r.model(), &["ok"])
    })
    .expect_chats(1);
    let env = Env::new(&s).config(&format!(
        "[providers.other]\nbase_url = \"{}\"\n",
        other.url("/v1")
    ));
    let out = env.run(&["-m", &format!("openrouter/{BIG}"), "q"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "{out}");
    assert_eq!(order(&s), ["chat", "models"]);
    assert_eq!(
        *after_the_chat.lock().unwrap(),
        [true],
        "learned after the answer"
    );
    // Both catalogs are cached now: a run that needs them fetches nothing.
    let out = env.run(&["q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(other.count("/models") + s.count("/models"), 2);
}
