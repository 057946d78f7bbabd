//! One HTTP client for every provider: `POST {base}/chat/completions` and `GET
//! {base}/models`. Redirects are never followed, so a key can only reach the base URL of
//! its own provider. No policy: callers read statuses and bodies.
//!
//! TLS trusts what curl trusts (the system's roots, `SSL_CERT_FILE`, `SSL_CERT_DIR`), the
//! compiled-in roots, and `[network] ca_file`. Model lists are asked for compressed; chat
//! streams are not (a compressor may hold back tokens).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue,
};

use crate::providers::{Provider, ProviderKind};
use crate::wire::openai::ChatRequest;

#[derive(Clone)]
pub struct Client {
    /// For https providers: honours the proxy variables (a corporate proxy sees only TLS).
    /// Built at its first use: reading the system's roots takes milliseconds, which a run
    /// that asks only local servers need not spend.
    http: Arc<OnceLock<Result<reqwest::Client, ClientError>>>,
    trust: Trust,
    /// For plain-http providers (loopback, `allow_insecure`): never through a proxy, which
    /// would see the key in the clear; it speaks no TLS, so it loads no roots.
    direct: reqwest::Client,
    /// `[network] preconnect`.
    pub preconnect: bool,
}

/// The HTTP client could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Its TLS set-up failed.
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] Arc<reqwest::Error>),
    /// `[network] ca_file` cannot be read or holds no certificate.
    #[error("Cannot use the certificate file {} (`[network] ca_file`): {why}", path.display())]
    CaFile { path: PathBuf, why: String },
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Build(Arc::new(e))
    }
}

/// Certificate authorities trusted besides the system's and the compiled-in roots, and
/// whether connections are opened ahead of need (`[network]`).
#[derive(Clone)]
pub struct Trust {
    extra: Vec<reqwest::Certificate>,
    preconnect: bool,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            extra: Vec::new(),
            preconnect: true,
        }
    }
}

/// The largest CA file read (a full system bundle is about 200 KiB).
const MAX_CA_FILE: u64 = 16 * 1024 * 1024;

impl Trust {
    /// Reads `[network] ca_file` (PEM, one or more certificates), when set.
    pub fn load(ca_file: Option<&Path>, preconnect: bool) -> Result<Trust, ClientError> {
        let Some(path) = ca_file else {
            return Ok(Trust {
                preconnect,
                ..Trust::default()
            });
        };
        let fail = |why: String| ClientError::CaFile {
            path: path.to_path_buf(),
            why,
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::fs::File::open(path).map_err(|e| fail(e.to_string()))?,
                MAX_CA_FILE + 1,
            ),
            &mut bytes,
        )
        .map_err(|e| fail(e.to_string()))?;
        if bytes.len() as u64 > MAX_CA_FILE {
            return Err(fail(format!("larger than {} MiB", MAX_CA_FILE >> 20)));
        }
        let extra = reqwest::Certificate::from_pem_bundle(&bytes)
            .map_err(|e| fail(format!("not PEM certificates ({})", describe_reqwest(&e))))?;
        if extra.is_empty() {
            return Err(fail("no PEM certificate in it".into()));
        }
        Ok(Trust { extra, preconnect })
    }
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("freeroute/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
}

impl Client {
    pub fn new(trust: &Trust) -> Result<Self, ClientError> {
        let direct = builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .build()?;
        Ok(Client {
            http: Arc::new(OnceLock::new()),
            trust: trust.clone(),
            direct,
            preconnect: trust.preconnect,
        })
    }

    /// The client for this provider's base URL.
    fn for_provider(&self, provider: &Provider) -> Result<&reqwest::Client, ClientError> {
        if !provider.base_url.starts_with("https://") {
            return Ok(&self.direct);
        }
        self.http
            .get_or_init(|| {
                let with_extra = self
                    .trust
                    .extra
                    .iter()
                    .fold(builder(), |b, c| b.add_root_certificate(c.clone()));
                Ok(with_extra.build()?)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn headers(provider: &Provider) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(key) = &provider.key
            && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        {
            v.set_sensitive(true);
            h.insert(AUTHORIZATION, v);
        }
        if provider.kind == ProviderKind::OpenRouter {
            // Attribution (reference §1.1); harmless elsewhere but only sent to OpenRouter.
            h.insert("X-Title", HeaderValue::from_static("freeroute"));
            h.insert("X-OpenRouter-Title", HeaderValue::from_static("freeroute"));
        }
        h
    }

    /// Sends a chat request; the caller reads status, headers and the body stream.
    pub async fn chat(
        &self,
        provider: &Provider,
        body: &ChatRequest<'_>,
    ) -> reqwest::Result<reqwest::Response> {
        // Shared, not copied, by a second send.
        let bytes = bytes::Bytes::from(serde_json::to_vec(body).expect("request serializes"));
        // A TLS set-up that failed shows as this request's (certificate) failure.
        let http = self.for_provider(provider).unwrap_or(&self.direct);
        let send = || {
            http.post(format!("{}/chat/completions", provider.base_url))
                .headers(Self::headers(provider))
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "text/event-stream, application/json")
                // A compressed stream may reach us in the compressor's blocks, not per token.
                .header(ACCEPT_ENCODING, "identity")
                .body(bytes.clone())
                .send()
        };
        match send().await {
            // A pooled connection the server had closed (it answers nothing, and the
            // request fails before any reply head): sent once more, on a new connection,
            // rather than blamed on the model. A connection that cannot be opened, or a
            // timeout, is the server's state and is not retried.
            Err(e) if e.is_request() && !e.is_connect() && !e.is_timeout() => send().await,
            other => other,
        }
    }

    /// Opens a connection to the provider's host ahead of a request it may get, so that a
    /// fail-over there does not wait for TCP and TLS (issue 18): an `OPTIONS` request to
    /// the base URL, without the key, whose small answer is read and dropped, leaving the
    /// connection in the pool. Bounded in time and bytes; its outcome does not matter.
    pub async fn preconnect(self, provider: Provider) {
        let Ok(http) = self.for_provider(&provider) else {
            return;
        };
        let fut = async {
            let mut resp = http
                .request(reqwest::Method::OPTIONS, &provider.base_url)
                .send()
                .await
                .ok()?;
            let mut read = 0;
            while let Some(piece) = resp.chunk().await.ok()? {
                read += piece.len();
                if read > PRECONNECT_BODY {
                    return None;
                }
            }
            Some(())
        };
        let _ = tokio::time::timeout(PRECONNECT_LIMIT, fut).await;
    }

    /// A local server's own description of itself (llama.cpp's `GET /props`, LM Studio's
    /// `GET /api/v0/models`, Ollama's `POST /api/show`): `url` is absolute, on the
    /// provider's host; the body, when the server answered 2xx within `timeout`.
    pub async fn describe_local(
        &self,
        provider: &Provider,
        url: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Option<Vec<u8>> {
        let http = self.for_provider(provider).ok()?;
        let req = match body {
            Some(b) => http
                .post(url)
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_string()),
            None => http.get(url),
        };
        let fut = async {
            let resp = req.headers(Self::headers(provider)).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.bytes().await.ok().map(|b| b.to_vec())
        };
        tokio::time::timeout(timeout, fut).await.ok().flatten()
    }

    /// Fetches `GET {base}/models` whole, within `timeout`.
    pub async fn models(
        &self,
        provider: &Provider,
        timeout: Duration,
    ) -> Result<Vec<u8>, FetchError> {
        let fut = async {
            let resp = self
                .for_provider(provider)
                .map_err(|e| FetchError::other(e.to_string()))?
                .get(format!("{}/models", provider.base_url))
                .headers(Self::headers(provider))
                .send()
                .await
                .map_err(|e| FetchError::other(describe_reqwest(&e)))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(FetchError {
                    status: Some(status.as_u16()),
                    ..FetchError::other(format!("HTTP {}", status.as_u16()))
                });
            }
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(piece) = resp
                .chunk()
                .await
                .map_err(|e| FetchError::other(describe_reqwest(&e)))?
            {
                if body.len() + piece.len() > MAX_MODELS_BODY {
                    return Err(FetchError::other(format!(
                        "the model list is larger than {} MiB",
                        MAX_MODELS_BODY >> 20
                    )));
                }
                body.extend_from_slice(&piece);
            }
            Ok(body)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| FetchError::timed_out(timeout))?
    }
}

/// A pre-connection's answer is read up to this size (a larger one closes it instead).
const PRECONNECT_BODY: usize = 64 * 1024;
/// A pre-connection still waiting for its answer after this is dropped.
const PRECONNECT_LIMIT: Duration = Duration::from_secs(10);

/// `scheme://host:port` of a URL: requests to one origin share a connection.
pub fn origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str()?,
        u.port_or_known_default()?
    ))
}

/// The largest model list read, counted after decompression (OpenRouter's, with every
/// model, is about 1 MiB, a tenth of that gzipped), so a compressed bomb stops here.
pub const MAX_MODELS_BODY: usize = 32 * 1024 * 1024;

/// Why a model list could not be had: the HTTP status when the server answered, and a
/// key-free description.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchError {
    pub status: Option<u16>,
    pub message: String,
    /// No answer within the time the run gave the fetch.
    pub timed_out: bool,
}

impl FetchError {
    /// A failure with no HTTP status: transport, timeout, a body that did not parse.
    pub fn other(message: impl Into<String>) -> Self {
        FetchError {
            status: None,
            message: message.into(),
            timed_out: false,
        }
    }

    /// No answer within `timeout`.
    pub fn timed_out(timeout: Duration) -> Self {
        FetchError {
            timed_out: true,
            ..Self::other(format!("no answer within {:.1}s", timeout.as_secs_f64()))
        }
    }

    /// The server refused the key (401, or 403 while listing models).
    pub fn refused_key(&self) -> bool {
        matches!(self.status, Some(401 | 403))
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A short, key-free description of a transport error.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut s = if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(inner) = src {
        last = Some(inner.to_string());
        src = inner.source();
    }
    if let Some(l) = last {
        s.push_str(": ");
        s.push_str(&l);
    }
    if untrusted_certificate(e) {
        s.push_str(" (trust its CA with SSL_CERT_FILE or `[network] ca_file`)");
    }
    s
}

/// Whether TLS failed because the server's certificate did not verify (rustls's error
/// arrives inside `io::Error`s, whose `source` skips what they wrap: look inside).
fn untrusted_certificate(e: &reqwest::Error) -> bool {
    fn unwrap_io<'a>(
        mut e: &'a (dyn std::error::Error + 'static),
    ) -> &'a (dyn std::error::Error + 'static) {
        while let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            e = inner;
        }
        e
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = src {
        let tls = unwrap_io(inner).downcast_ref::<rustls::Error>();
        if matches!(
            tls,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
            ))
        ) {
            return true;
        }
        src = inner.source();
    }
    false
}
