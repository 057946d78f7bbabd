//! One HTTP client for every provider: `POST {base}/chat/completions` and `GET
//! {base}/models`. Redirects are never followed, so a key can only reach the base URL of
//! its own provider. No policy: callers read statuses and bodies.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::providers::{Provider, ProviderKind};
use crate::wire::openai::ChatRequest;

#[derive(Clone)]
pub struct Client {
    /// For https providers: honours the proxy variables (a corporate proxy sees only TLS).
    http: reqwest::Client,
    /// For plain-http providers (loopback, `allow_insecure`): never through a proxy, which
    /// would see the key in the clear.
    direct: Arc<OnceLock<Result<reqwest::Client, ClientError>>>,
}

/// The HTTP client could not be built (its TLS set-up failed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[source] Arc<reqwest::Error>);

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError(Arc::new(e))
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
    pub fn new() -> Result<Self, ClientError> {
        let http = builder().build()?;
        Ok(Client {
            http,
            direct: Arc::new(OnceLock::new()),
        })
    }

    /// The client for this provider's base URL.
    fn for_provider(&self, provider: &Provider) -> Result<&reqwest::Client, ClientError> {
        if provider.base_url.starts_with("https://") {
            return Ok(&self.http);
        }
        self.direct
            .get_or_init(|| Ok(builder().no_proxy().build()?))
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
        let http = self.for_provider(provider).unwrap_or(&self.http);
        let send = || {
            http.post(format!("{}/chat/completions", provider.base_url))
                .headers(Self::headers(provider))
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "text/event-stream, application/json")
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

/// The largest model list read (OpenRouter's, with every model, is about 1 MiB).
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
    s
}
