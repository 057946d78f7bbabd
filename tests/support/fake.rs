//! A fake OpenAI/OpenRouter-compatible server on 127.0.0.1 for tests and benchmarks.
//!
//! It speaks enough HTTP/1.1 (keep-alive, chunked responses) for reqwest and curl, records
//! every request, and answers with scripted replies that behave like the real providers in
//! `shared/reference/openrouter.md`: keep-alive comments, the usage chunk after the finish
//! chunk, error chunks inside HTTP 200 streams, hangs after the headers, dropped
//! connections. Every connection is bounded in time, and the server stops when dropped.
//!
//! A fake can fail its test (STYLE §6): dropping it panics when a handler panicked (the
//! binary only saw a dropped connection), or when it was built with `expect_chats(n)` and
//! fewer than `n` chat requests arrived.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The longest any connection is served, so a forgotten hang cannot outlive a test.
const CONNECTION_LIMIT: Duration = Duration::from_secs(90);

/// A request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which connection of this server it came on (numbered from 1 as they are accepted).
    pub connection: usize,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `model` of a chat request.
    pub fn model(&self) -> String {
        self.json()["model"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One step of a streamed reply.
#[derive(Debug, Clone)]
pub enum Step {
    /// Raw bytes of the body, sent as one chunk.
    Send(String),
    Sleep(Duration),
    /// Stop sending but keep the connection open (until the client leaves or the limit).
    Hang,
    /// Drop the connection without finishing the body.
    Drop,
    /// Raw bytes, which need not be UTF-8.
    Bytes(Vec<u8>),
    /// The same piece again and again until the client leaves (or 4 GiB were sent): a
    /// body, a line or an event that never ends.
    Flood(String),
}

#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete response with a body.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// A 200 `text/event-stream` response written step by step (chunked encoding).
    Stream {
        headers: Vec<(String, String)>,
        steps: Vec<Step>,
    },
    /// Read the request, never answer.
    Hang,
    /// On a connection that already served a request: close it without an answer (a
    /// pooled connection the server dropped as it was reused); on a new one, the reply.
    CloseIfReused(Box<Reply>),
    /// A complete response whose body need not be text (a gzipped catalog, say).
    Binary {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    pub fn json_with(status: u16, headers: &[(&str, &str)], body: impl Into<String>) -> Reply {
        let mut h: Vec<(String, String)> = vec![("content-type".into(), "application/json".into())];
        h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Reply::Full {
            status,
            headers: h,
            body: body.into(),
        }
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Full { headers, .. }
        | Reply::Stream { headers, .. }
        | Reply::Binary { headers, .. } = &mut self
        {
            headers.push((name.into(), value.into()));
        }
        self
    }

    pub fn stream(steps: Vec<Step>) -> Reply {
        Reply::Stream {
            headers: vec![],
            steps,
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct FakeServer {
    pub port: u16,
    /// Serves https (`start_tls`).
    tls: bool,
    /// The connection of each OPTIONS request answered (a client opening its
    /// connection ahead of need), never handled.
    pub preconnects: Arc<Mutex<Vec<usize>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    /// Models whose streamed reply the client walked away from before its end.
    aborted: Arc<Mutex<Vec<String>>>,
    /// Messages of handler panics, each answered by dropping its connection.
    panics: Arc<Mutex<Vec<String>>>,
    /// At least this many chat requests must have arrived when the server is dropped.
    expected_chats: usize,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeServer {
        Self::start_on(0, handler).expect("bind 127.0.0.1")
    }

    /// Starts on a given port (0: any free one).
    pub fn start_on(
        port: u16,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<FakeServer> {
        Self::start_with(port, None, handler)
    }

    /// Starts an https server on any free port: every connection's TLS is `tls`'s.
    pub fn start_tls(
        tls: tokio_rustls::TlsAcceptor,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        Self::start_with(0, Some(tls), handler).expect("bind 127.0.0.1")
    }

    fn start_with(
        port: u16,
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<FakeServer> {
        let is_tls = tls.is_some();
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let aborted = Arc::new(Mutex::new(Vec::new()));
        let gone = aborted.clone();
        let panics = Arc::new(Mutex::new(Vec::new()));
        let panicked = panics.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handler: Handler = Arc::new(handler);
        let recorded = requests.clone();
        let preconnects = Arc::new(Mutex::new(Vec::new()));
        let warmed = preconnects.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                let accept = async {
                    let mut accepted = 0;
                    loop {
                        let Ok((sock, _)) = listener.accept().await else {
                            continue;
                        };
                        let handler = handler.clone();
                        let recorded = recorded.clone();
                        let gone = gone.clone();
                        let panicked = panicked.clone();
                        let tls = tls.clone();
                        let warmed = warmed.clone();
                        accepted += 1;
                        let n = accepted;
                        let _ = sock.set_nodelay(true);
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(CONNECTION_LIMIT, async move {
                                match tls {
                                    // A client that refuses the certificate ends here.
                                    Some(tls) => {
                                        if let Ok(s) = tls.accept(sock).await {
                                            serve(s, handler, recorded, gone, panicked, warmed, n)
                                                .await
                                        }
                                    }
                                    None => {
                                        serve(sock, handler, recorded, gone, panicked, warmed, n)
                                            .await
                                    }
                                }
                            })
                            .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = rx => {}
                }
            });
        });
        Ok(FakeServer {
            port,
            preconnects,
            tls: is_tls,
            requests,
            aborted,
            panics,
            expected_chats: 0,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The same server, which fails its test when dropped before `n` chat requests
    /// arrived: for a test whose answer must come from this fake.
    pub fn expect_chats(mut self, n: usize) -> FakeServer {
        self.expected_chats = n;
        self
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Chat requests only, in arrival order.
    pub fn chats(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .collect()
    }

    /// Waits until `n` chat requests arrived (at most 30 s, then panics).
    pub fn wait_for_chats(&self, n: usize) {
        let waited = std::time::Instant::now();
        while self.chats().len() < n {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "{n} chat requests never arrived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn chat_models(&self) -> Vec<String> {
        self.chats().iter().map(Request::model).collect()
    }

    /// Models whose streamed reply the client dropped before its end.
    pub fn aborted(&self) -> Vec<String> {
        self.aborted.lock().unwrap().clone()
    }

    /// The connections on which OPTIONS requests were answered: a client opened them
    /// ahead of need.
    pub fn preconnects(&self) -> Vec<usize> {
        self.preconnects.lock().unwrap().clone()
    }

    pub fn count(&self, path_suffix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with(path_suffix))
            .count()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // A second panic while the test is already failing would abort the whole run.
        if std::thread::panicking() {
            return;
        }
        let panics = self.panics.lock().unwrap().clone();
        if let Some(first) = panics.first() {
            panic!(
                "the fake server's handler panicked {} time(s), first: {first}",
                panics.len()
            );
        }
        let chats = self.chats().len();
        assert!(
            chats >= self.expected_chats,
            "the fake server expected at least {} chat request(s), got {chats}",
            self.expected_chats
        );
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    sock: S,
    handler: Handler,
    recorded: Arc<Mutex<Vec<Request>>>,
    gone: Arc<Mutex<Vec<String>>>,
    panicked: Arc<Mutex<Vec<String>>>,
    preconnects: Arc<Mutex<Vec<usize>>>,
    connection: usize,
) {
    let mut reader = BufReader::new(sock);
    let mut served = 0usize;
    loop {
        let Some(req) = read_request(&mut reader, connection).await else {
            return;
        };
        // An OPTIONS request (a client opening its connection ahead of need) is answered
        // as a CORS-minded server does, and kept apart from the requests handlers see.
        if req.method == "OPTIONS" {
            let reply = "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
            if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            preconnects.lock().unwrap().push(connection);
            continue;
        }
        served += 1;
        recorded.lock().unwrap().push(req.clone());
        // A panic would otherwise end only this connection's task, unseen by the test.
        let reply = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&req))) {
            Ok(reply) => reply,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(a panic without a message)".into());
                panicked
                    .lock()
                    .unwrap()
                    .push(format!("{} {}: {msg}", req.method, req.path));
                return;
            }
        };
        let reply = match reply {
            Reply::CloseIfReused(_) if served > 1 => return,
            Reply::CloseIfReused(inner) => *inner,
            other => other,
        };
        let sock = reader.get_mut();
        let keep = match reply {
            Reply::Full {
                status,
                headers,
                body,
            } => whole_reply(sock, status, &headers, body.as_bytes()).await,
            Reply::CloseIfReused(_) => false,
            Reply::Binary {
                status,
                headers,
                body,
            } => whole_reply(sock, status, &headers, &body).await,
            Reply::Hang => {
                // Wait until the client goes away (a read returns 0 or fails).
                let mut buf = [0u8; 64];
                let _ = reader.read(&mut buf).await;
                false
            }
            Reply::Stream { headers, steps } => {
                let mut head = String::from(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncache-control: no-cache\r\n",
                );
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    head.push_str("content-type: text/event-stream\r\n");
                }
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut finished = true;
                for step in steps {
                    match step {
                        Step::Send(data) => {
                            if data.is_empty() {
                                continue;
                            }
                            let chunk = format!("{:x}\r\n{data}\r\n", data.len());
                            if reader.get_mut().write_all(chunk.as_bytes()).await.is_err() {
                                gone.lock().unwrap().push(req.model());
                                return;
                            }
                        }
                        Step::Sleep(d) => {
                            // A client that leaves while we wait is noticed at once.
                            let mut buf = [0u8; 64];
                            tokio::select! {
                                _ = tokio::time::sleep(d) => {}
                                _ = reader.read(&mut buf) => {
                                    gone.lock().unwrap().push(req.model());
                                    return;
                                }
                            }
                        }
                        Step::Hang => {
                            let mut buf = [0u8; 64];
                            let _ = reader.read(&mut buf).await;
                            gone.lock().unwrap().push(req.model());
                            return;
                        }
                        Step::Drop => {
                            finished = false;
                            break;
                        }
                        Step::Bytes(data) => {
                            let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                            chunk.extend_from_slice(&data);
                            chunk.extend_from_slice(b"\r\n");
                            if reader.get_mut().write_all(&chunk).await.is_err() {
                                gone.lock().unwrap().push(req.model());
                                return;
                            }
                        }
                        Step::Flood(piece) => {
                            let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                            let mut sent = 0usize;
                            while sent < 4 << 30 {
                                if reader.get_mut().write_all(chunk.as_bytes()).await.is_err() {
                                    break;
                                }
                                sent += chunk.len();
                            }
                            gone.lock().unwrap().push(req.model());
                            return;
                        }
                    }
                }
                if !finished {
                    return;
                }
                reader.get_mut().write_all(b"0\r\n\r\n").await.is_ok()
            }
        };
        if !keep {
            return;
        }
    }
}

/// A complete response with a `content-length`, in one write; false when the client left.
async fn whole_reply<S: AsyncWrite + Unpin>(
    sock: &mut S,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> bool {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    sock.write_all(&all).await.is_ok()
}

async fn read_request<S: AsyncRead + Unpin>(
    reader: &mut BufReader<S>,
    connection: usize,
) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await.ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.ok()?;
    Some(Request {
        connection,
        method,
        path,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

// ---- Realistic bodies (shapes from shared/reference/openrouter.md §3) ----

pub fn chunk(model: &str, delta: serde_json::Value, finish: Option<&str>) -> String {
    let v = serde_json::json!({
        "id": "gen-1768896871-9HgAQqS1Z72C6gApaidi",
        "provider": "OpenInference",
        "model": model,
        "object": "chat.completion.chunk",
        "created": 1768896871,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "native_finish_reason": finish, "logprobs": null}]
    });
    format!("data: {v}\n\n")
}

/// A whole OpenRouter-style stream: keep-alive comments, a role chunk, one chunk per
/// piece, the finish chunk, the usage chunk after it, `[DONE]`.
pub fn answer_steps(model: &str, pieces: &[&str]) -> Vec<Step> {
    let mut steps = vec![
        Step::Send(": OPENROUTER PROCESSING\n\n".into()),
        Step::Send(": OPENROUTER PROCESSING\n\n".into()),
        Step::Send(chunk(
            model,
            serde_json::json!({"role": "assistant", "content": "", "reasoning": null}),
            None,
        )),
    ];
    for p in pieces {
        steps.push(Step::Send(chunk(
            model,
            serde_json::json!({"role": "assistant", "content": p}),
            None,
        )));
    }
    steps.push(Step::Send(chunk(
        model,
        serde_json::json!({"role": "assistant", "content": ""}),
        Some("stop"),
    )));
    let usage = serde_json::json!({
        "id": "gen-1", "provider": "OpenInference", "model": model, "object": "chat.completion.chunk",
        "created": 1768896871,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}],
        "usage": {"prompt_tokens": 12, "completion_tokens": pieces.len(), "total_tokens": 12 + pieces.len()}
    });
    steps.push(Step::Send(format!("data: {usage}\n\n")));
    steps.push(Step::Send("data: [DONE]\n\n".into()));
    steps
}

pub fn answer(model: &str, pieces: &[&str]) -> Reply {
    Reply::stream(answer_steps(model, pieces))
}

/// As OpenRouter does while a model is slow to start: a keep-alive comment, nothing for
/// `delay`, then the answer.
pub fn late_answer(model: &str, delay: Duration, pieces: &[&str]) -> Reply {
    let mut steps = vec![
        Step::Send(": OPENROUTER PROCESSING\n\n".into()),
        Step::Sleep(delay),
    ];
    steps.extend(answer_steps(model, pieces));
    Reply::stream(steps)
}

/// Starts answering, then fails mid-stream with an error chunk in the HTTP 200 stream.
pub fn mid_stream_error(model: &str, pieces: &[&str]) -> Reply {
    let mut steps = vec![Step::Send(": OPENROUTER PROCESSING\n\n".into())];
    for p in pieces {
        steps.push(Step::Send(chunk(
            model,
            serde_json::json!({"content": p}),
            None,
        )));
    }
    let err = serde_json::json!({
        "id": "gen-abc123", "object": "chat.completion.chunk", "created": 1234567890, "model": model,
        "provider": "OpenAI",
        "error": {"code": 502, "message": "Provider disconnected mid-stream", "metadata": {"error_type": "provider_unavailable"}},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
    });
    steps.push(Step::Send(format!("data: {err}\n\n")));
    steps.push(Step::Send("data: [DONE]\n\n".into()));
    Reply::stream(steps)
}

pub fn error_json(code: u16, message: &str) -> Reply {
    Reply::json(
        code,
        serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

pub fn upstream_429(model: &str) -> Reply {
    Reply::json(429, serde_json::json!({"error": {"message": "Provider returned error", "code": 429, "metadata": {
        "raw": format!("{model} is temporarily rate-limited upstream. Please retry shortly, or add your own key to accumulate your rate limits: https://openrouter.ai/settings/integrations"),
        "provider_name": "DeepInfra", "is_byok": false, "provider_error_code": "engine_overloaded",
        "limit_source": "upstream_provider_shared_pool"}}}).to_string())
}

pub fn daily_quota_429(reset_ms: u64) -> Reply {
    let body = serde_json::json!({"error": {"message": "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day", "code": 429, "metadata": {"headers": {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset_ms.to_string()}, "limit_source": "openrouter_free_tier_daily"}}});
    Reply::json_with(
        429,
        &[
            ("X-RateLimit-Limit", "50"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", &reset_ms.to_string()),
        ],
        body.to_string(),
    )
}

/// OpenRouter's account-wide per-minute free quota spent, resetting in `in_ms`: the
/// daily one's shape with `free-models-per-min`, `X-RateLimit-Reset` in epoch ms and, as in
/// the recorded fixture, a `Retry-After` as well (reference §0 item 8, §6).
pub fn minute_quota_429(in_ms: u64) -> Reply {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let reset = (now_ms + in_ms).to_string();
    let body = serde_json::json!({"error": {"message": "Rate limit exceeded: free-models-per-min", "code": 429, "metadata": {"headers": {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}}}});
    Reply::json_with(
        429,
        &[
            ("retry-after", &in_ms.div_ceil(1000).to_string()),
            ("X-RateLimit-Limit", "20"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", &reset),
        ],
        body.to_string(),
    )
}

/// A 429 for a limit on the caller's own request rate to `model` (not a shared pool's),
/// saying when to come back.
pub fn rate_limit_429(model: &str, retry_after_s: u64) -> Reply {
    let body = serde_json::json!({"error": {"message": format!("Rate limit exceeded: limit_rpm/{model}"), "code": 429}});
    Reply::json(429, body.to_string()).with_header("retry-after", &retry_after_s.to_string())
}

/// An OpenRouter-shaped catalog entry.
pub fn model_entry(
    id: &str,
    prompt_price: &str,
    context: Option<u64>,
    inputs: &[&str],
    params: &[&str],
) -> serde_json::Value {
    serde_json::json!({
        "id": id, "canonical_slug": id, "name": id, "created": 1760000000,
        "context_length": context,
        "architecture": {"input_modalities": inputs, "output_modalities": ["text"], "modality": "text->text", "tokenizer": "Other", "instruct_type": null},
        "pricing": {"prompt": prompt_price, "completion": prompt_price, "request": "0", "image": "0"},
        "top_provider": {"context_length": context, "max_completion_tokens": null, "is_moderated": false},
        "per_request_limits": null,
        "supported_parameters": params,
        "default_parameters": null,
        "expiration_date": null
    })
}

pub fn catalog(entries: Vec<serde_json::Value>) -> Reply {
    Reply::json(200, serde_json::json!({"data": entries}).to_string())
}

/// For a standalone fake server (examples/): starts it on 127.0.0.1:`port` (0: any free
/// port) and prints the port as the first line on stdout, or says why on stderr and exits
/// with 1.
pub fn serve_standalone(
    name: &str,
    port: u16,
    handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> FakeServer {
    use std::io::Write;
    let server = FakeServer::start_on(port, handler).unwrap_or_else(|e| {
        let _ = writeln!(
            std::io::stderr(),
            "{name}: cannot bind 127.0.0.1:{port}: {e}"
        );
        std::process::exit(1);
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", server.port);
    let _ = out.flush();
    server
}

/// For a standalone fake server (examples/): returns after `limit`, or as soon as a piped
/// standard input closes (the bench script that started it has gone). A stdin that is not
/// a pipe (e.g. /dev/null for a background job) is not watched.
pub fn wait_for_limit_or_stdin_eof(limit: Duration) {
    use std::io::Read;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    if stdin_is_pipe() {
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    }
    let _ = rx.recv_timeout(limit);
}

fn stdin_is_pipe() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata("/dev/stdin").is_ok_and(|m| m.file_type().is_fifo())
    }
    #[cfg(not(unix))]
    {
        false
    }
}
