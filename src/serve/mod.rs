//! `freeroute serve` (DESIGN §8): the OpenAI Chat Completions and Anthropic Messages APIs on
//! a local port. Every request is read into a `Request` (`openai.rs`, `anthropic.rs`) and
//! asked through the one `Session` of the process exactly as a single run is (plan → room →
//! ask → record, in `answer`), so requests share one catalog, one limiter and one health
//! view, and each outcome is recorded in the state beside the CLI's.
//!
//! Why one thread: `Session` keeps its health, limiter and rng in `RefCell`s (it is not
//! `Send`). The server runs on the current-thread runtime inside a `LocalSet`, holds the
//! session in an `Rc` and spawns each connection and each request with `spawn_local`. A
//! proxy's work is waiting on sockets, so one core is plenty (the benchmark in `bench/`
//! measures it), and the session stays as every other front end uses it: no lock is ever
//! held across an await, and none is needed.

mod anthropic;
mod http;
mod metrics;
mod openai;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::error::{Error, ErrorKind, Result};
use crate::input::Input;
use crate::outcome::{Answer, AttemptOutcome, AttemptRecord};
use crate::output::Printer;
use crate::plan::DropReason;
use crate::request::{self, AnswerSchema, Request};
use crate::session::{Job, LogLine, Room, Session, Stop, TokenSink};
use crate::settings::Serve;
use crate::wire::openai::Message;
use http::Body;
use metrics::Metrics;

/// A connection must have sent a request's headers this soon after it opened.
const HEADERS_WITHIN: Duration = Duration::from_secs(10);
/// An idle keep-alive connection, or a client that stopped reading, is closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// While no token has come, a streamed response gets a keep-alive this often (DESIGN §8:
/// at least every 10 s). The first one also commits the response to 200: a request that
/// fails sooner gets its real status instead.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Requests in flight are given this long to finish after SIGINT/SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);
/// Tokens already waiting are joined into one chunk of at most about this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Model names that mean "route among every eligible model".
const AUTO: [&str; 3] = ["auto", "freeroute", "openrouter/free"];

/// Which API a request speaks: its error shape and its stream's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

/// A request refused or failed as a whole, in words any endpoint can render.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    /// The word of DESIGN §8 (`model_not_found`, `rate_limited`, …).
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn retry(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    fn response(&self, api: Api) -> Response<Body> {
        let mut r = match api {
            Api::OpenAi => openai::error_response(self),
            Api::Anthropic => anthropic::error_response(self),
        };
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// What a client asked, read from either API's body: the conversation in the OpenAI wire
/// shape that `request::build` takes, and the routing and sampling it chose.
pub struct Asked {
    pub messages: Vec<Message>,
    pub tools: Option<Vec<Value>>,
    /// `auto`, `none`, `required` or a tool's name.
    pub tool_choice: Option<String>,
    pub schema: Option<AnswerSchema>,
    /// The `model` field as sent (echoed when no model answered yet).
    pub model: Option<String>,
    /// OpenRouter's `models` fallback list.
    pub models: Vec<String>,
    /// `provider.only` / `provider.ignore`.
    pub only: Vec<String>,
    pub ignore: Vec<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Other sampling parameters, passed on.
    pub params: serde_json::Map<String, Value>,
    pub stream: bool,
}

/// What the server shares between its connections.
struct Server {
    session: Session,
    settings: Serve,
    printer: Printer,
    metrics: RefCell<Metrics>,
    /// Requests answered at once.
    gate: Arc<Semaphore>,
    /// Requests waiting for the gate.
    waiting: Cell<usize>,
    /// Fired when the drain time after a signal is over: requests still running are
    /// cancelled, so their attempts are recorded.
    stop: Cancel,
    /// Requests whose ask is still running (recorded when it ends).
    asking: Cell<usize>,
}

/// How long a background refresh of the model lists may take.
const CATALOG_FETCH: Duration = Duration::from_secs(15);

/// Serves until SIGINT or SIGTERM, then drains and returns (exit 0).
pub fn run(
    session: Session,
    settings: Serve,
    rt: &tokio::runtime::Runtime,
    printer: &Printer,
) -> Result<()> {
    let listen = settings.listen;
    let listener = rt
        .block_on(TcpListener::bind(listen))
        .map_err(|e| Error::config(format!("Cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let server = Rc::new(Server {
        gate: Arc::new(Semaphore::new(settings.max_concurrency)),
        session,
        printer: Printer::new(printer.quiet, printer.verbose, true),
        settings,
        metrics: RefCell::new(Metrics::default()),
        waiting: Cell::new(0),
        stop: Cancel::default(),
        asking: Cell::new(0),
    });
    server.printer.report(&format!(
        "freeroute serve: listening on http://{addr} ({} models from {} providers){}",
        server.session.models().len(),
        server.session.providers.len(),
        if server.settings.token.is_some() {
            "; clients must send the token"
        } else {
            ""
        }
    ));
    let local = tokio::task::LocalSet::new();
    local.block_on(rt, serve(server, listener))
}

async fn serve(server: Rc<Server>, listener: TcpListener) -> Result<()> {
    // One catalog for every request, refreshed in the background per `catalog_ttl`
    // (DESIGN §8); a failed refresh keeps the models a provider had.
    let refresher = tokio::task::spawn_local({
        let server = server.clone();
        async move {
            let every = Duration::from_secs(server.settings.ask.route.catalog_ttl.max(1));
            loop {
                tokio::time::sleep(every).await;
                for note in server.session.refresh_catalogs(CATALOG_FETCH).await {
                    server.printer.note(&note);
                }
            }
        }
    });
    let closing = Cancel::default();
    let open = Rc::new(Cell::new(0usize));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // A failed accept (too many open files) must not end the server.
                let Ok((sock, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = sock.set_nodelay(true);
                open.set(open.get() + 1);
                let open = open.clone();
                let server = server.clone();
                let closing = closing.clone();
                tokio::task::spawn_local(async move {
                    connection(server, sock, closing).await;
                    open.set(open.get() - 1);
                });
            }
            () = &mut signal => break,
        }
    }
    drop(listener);
    refresher.abort();
    server
        .printer
        .report("freeroute serve: shutting down (requests in flight get 10 s)");
    closing.fire();
    let drained = tokio::time::timeout(DRAIN, async {
        while open.get() > 0 || server.asking.get() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        // Cut the rest short: their attempts end as `cancelled` and are recorded.
        server.stop.fire();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while server.asking.get() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let sigterm = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = sigterm => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One client connection: HTTP/1.1 with keep-alive, its head read within `HEADERS_WITHIN`,
/// idle for at most `IDLE`, closed gracefully on shutdown.
async fn connection(server: Rc<Server>, sock: tokio::net::TcpStream, closing: Cancel) {
    let asked = Rc::new(Cell::new(false));
    let seen = asked.clone();
    let svc = service_fn(move |req| {
        seen.set(true);
        handle(server.clone(), req)
    });
    let io = TokioIo::new(http::Timed::new(sock, IDLE));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    // A client that sent no request head in time is dropped; one that did is hyper's.
    let first = async {
        tokio::time::sleep(HEADERS_WITHIN).await;
        if asked.get() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(first);
    let mut shutting = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = &mut first => return,
            () = closing.fired(), if !shutting => {
                shutting = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One request, in its own task: a panic there is a 500 for this request alone.
async fn handle(
    server: Rc<Server>,
    req: hyper::Request<Incoming>,
) -> std::result::Result<Response<Body>, Infallible> {
    let api = if req.uri().path().starts_with("/v1/messages") {
        Api::Anthropic
    } else {
        Api::OpenAi
    };
    let endpoint = metrics::endpoint(req.method(), req.uri().path());
    let cancel = Cancel::default();
    let mut guard = FireOnDrop(Some(cancel.clone()));
    let task = tokio::task::spawn_local(route(server.clone(), req, cancel));
    let response = match task.await {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_panic() {
                "a bug in freeroute (see the server's stderr)"
            } else {
                "the request was stopped"
            };
            let mut log = RequestLog::new(&server, endpoint, Instant::now());
            log.status = 500;
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("Internal error: {why}"),
            )
            .response(api)
        }
    };
    guard.disarm();
    Ok(response)
}

async fn route(
    server: Rc<Server>,
    req: hyper::Request<Incoming>,
    cancel: Cancel,
) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let endpoint = metrics::endpoint(req.method(), &path);
    let mut log = RequestLog::new(&server, endpoint, started);
    let api = if path.starts_with("/v1/messages") {
        Api::Anthropic
    } else {
        Api::OpenAi
    };
    if let Err(r) = check_access(&server, &req, &path) {
        log.status = r.status.as_u16();
        return r.response(api);
    }
    // A test's way to prove that a panic costs one request, not the server: debug builds
    // (which the tests run) only; a release build has no such switch.
    #[cfg(debug_assertions)]
    if req.headers().contains_key("x-freeroute-test-panic") {
        panic!("a panic asked for by x-freeroute-test-panic");
    }
    let method = req.method().clone();
    let result = match (method, path.as_str()) {
        (Method::GET, "/healthz") => Ok(http::json(
            StatusCode::OK,
            &json!({"ok": true, "providers": server.session.providers.len(),
                    "models": server.session.models().len()}),
        )),
        (Method::GET, "/v1/models") => Ok(http::json(StatusCode::OK, &model_list(&server))),
        (Method::GET, "/metrics") => Ok(http::text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            server.metrics.borrow().render(
                &server.session,
                server.settings.max_concurrency - server.gate.available_permits(),
                server.waiting.get(),
            ),
        )),
        (Method::POST, "/v1/chat/completions" | "/v1/messages") => {
            chat(&server, req, api, cancel, &mut log).await
        }
        // Claude Code asks for a count before long requests: freeroute's own estimate.
        (Method::POST, "/v1/messages/count_tokens") => count_tokens(req).await,
        (_, "/healthz" | "/v1/models" | "/metrics" | "/v1/chat/completions" | "/v1/messages") => {
            Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} does not take this method", path),
            ))
        }
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "No endpoint {path}: POST /v1/chat/completions, POST /v1/messages, GET /v1/models, GET /healthz, GET /metrics"
            ),
        )),
    };
    match result {
        Ok(r) => {
            log.status = log.status.max(r.status().as_u16());
            r
        }
        Err(refusal) => {
            log.status = refusal.status.as_u16();
            refusal.response(api)
        }
    }
}

/// The `Host` check against DNS rebinding (when no token is required) and the token.
fn check_access(
    server: &Server,
    req: &hyper::Request<Incoming>,
    path: &str,
) -> std::result::Result<(), Refusal> {
    match &server.settings.token {
        None => {
            let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
            if !host.is_some_and(loopback_host) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "host_refused",
                    "Refused Host header: without a token only loopback names are served (localhost, 127.0.0.1, [::1])",
                ));
            }
        }
        Some(token) if path != "/healthz" => {
            let h = req.headers();
            let bearer = h
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let key = h.get("x-api-key").and_then(|v| v.to_str().ok());
            let ok = [bearer, key]
                .into_iter()
                .flatten()
                .any(|t| constant_time_eq(t.trim().as_bytes(), token.expose().as_bytes()));
            if !ok {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "Missing or wrong token: send `Authorization: Bearer <token>` or `x-api-key`",
                ));
            }
        }
        Some(_) => {}
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `localhost`, `127.0.0.0/8` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `GET /v1/models`: `auto`, then every model eligible for a plain text request, each id
/// once, `owned_by` the first provider that serves it in plan order.
fn model_list(server: &Server) -> Value {
    let plan = server
        .session
        .plan_of(&server.settings.ask.route, &Default::default());
    let mut seen = BTreeSet::new();
    let mut data =
        vec![json!({"id": "auto", "object": "model", "created": 0, "owned_by": "freeroute"})];
    for c in &plan.candidates {
        if seen.insert(c.model.id.clone()) {
            data.push(json!({"id": c.model.id, "object": "model",
                             "created": c.model.created.unwrap_or(0),
                             "owned_by": c.model.provider,
                             "context_length": c.model.context}));
        }
    }
    json!({"object": "list", "data": data})
}

/// A chat request of either API: read, admitted, answered whole or streamed.
async fn chat(
    server: &Rc<Server>,
    req: hyper::Request<Incoming>,
    api: Api,
    cancel: Cancel,
    log: &mut RequestLog,
) -> std::result::Result<Response<Body>, Refusal> {
    // A body that trickles in is bounded like an idle connection.
    let body = tokio::time::timeout(IDLE, http::read_body(req))
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "The request body did not arrive within {} s",
                    IDLE.as_secs()
                ),
            )
        })?;
    let body = body.map_err(|e| match e {
        http::BodyError::TooLarge => Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("The request body is over {} MiB", http::MAX_BODY >> 20),
        ),
        http::BodyError::Broken(why) => {
            Refusal::invalid(format!("The request body did not arrive whole: {why}"))
        }
    })?;
    let asked = match api {
        Api::OpenAi => openai::parse(&body)?,
        Api::Anthropic => anthropic::parse(&body)?,
    };
    let stream = asked.stream;
    let requested = asked.model.clone();
    let request = request_of(server, asked, api)?;
    let permit = admit(server).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.asking.set(server.asking.get() + 1);
    tokio::task::spawn_local(answer(server.clone(), request, tx, cancel.clone(), permit));
    if !stream {
        let done = loop {
            match rx.recv().await {
                Some(Ev::Done(d)) => break d,
                Some(_) => continue,
                None => return Err(internal()),
            }
        };
        log.fill(&done);
        return match done.result {
            Ok(a) => {
                let mut r = match api {
                    Api::OpenAi => openai::whole(&a),
                    Api::Anthropic => anthropic::whole(&a),
                };
                let h = r.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&a.provider) {
                    h.insert("x-freeroute-provider", v);
                }
                h.insert("x-freeroute-attempts", HeaderValue::from(done.attempts));
                Ok(r)
            }
            Err(refusal) => Err(refusal),
        };
    }
    // Streamed: hold the status until the first event or keep-alive, so that a request
    // that fails at once gets its real status and error body.
    let first = tokio::select! {
        ev = rx.recv() => Some(ev),
        () = tokio::time::sleep(KEEPALIVE) => None,
    };
    let pending = match first {
        Some(None) => return Err(internal()),
        Some(Some(Ev::Done(d))) if d.result.is_err() => {
            log.fill(&d);
            return Err(d.result.expect_err("an error"));
        }
        Some(Some(ev)) => Some(ev),
        None => None,
    };
    log.status = 200;
    // Until the answer is done, the line says the client went away.
    log.error = Some("client_closed");
    let encoder: Box<dyn Encoder> = match api {
        Api::OpenAi => Box::new(openai::Stream::new(requested)),
        Api::Anthropic => Box::new(anthropic::Stream::new(requested)),
    };
    // Committed by the keep-alive timer: the first keep-alive goes out now.
    let first_tick = match pending {
        None => tokio::time::Instant::now(),
        Some(_) => tokio::time::Instant::now() + KEEPALIVE,
    };
    let state = Streaming {
        rx,
        pending,
        encoder,
        forwarded: false,
        finished: false,
        log: log.take(),
        guard: FireOnDrop(Some(cancel)),
        tick: tokio::time::interval_at(first_tick, KEEPALIVE),
    };
    Ok(http::sse(futures_util::stream::unfold(
        state,
        Streaming::next,
    )))
}

/// `POST /v1/messages/count_tokens`: the context estimate a plan uses (DESIGN §8: an image
/// counts as a fixed number of tokens).
async fn count_tokens(
    req: hyper::Request<Incoming>,
) -> std::result::Result<Response<Body>, Refusal> {
    let body = http::read_body(req)
        .await
        .map_err(|_| Refusal::invalid("The request body did not arrive whole"))?;
    let asked = anthropic::parse(&body)?;
    let tools = asked.tools.as_ref().map_or(0, |t| {
        crate::wire::openai::estimate_text(&Value::Array(t.clone()).to_string())
    });
    Ok(http::json(
        StatusCode::OK,
        &json!({"input_tokens": request::estimate_tokens(&asked.messages) + tools}),
    ))
}

fn internal() -> Refusal {
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error: the request's task ended without an answer (see the server's stderr)",
    )
}

/// A place among the requests answered at once, waiting for one when all are taken;
/// 503 when four times as many already wait (DESIGN §8).
async fn admit(server: &Server) -> std::result::Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    if let Ok(p) = server.gate.clone().try_acquire_owned() {
        return Ok(p);
    }
    if server.waiting.get() >= 4 * server.settings.max_concurrency {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "Too many requests at once ({} answered, {} waiting)",
                server.settings.max_concurrency,
                server.waiting.get()
            ),
        )
        .retry(1));
    }
    struct Waiting<'a>(&'a Cell<usize>);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    server.waiting.set(server.waiting.get() + 1);
    let _w = Waiting(&server.waiting);
    server
        .gate
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| internal())
}

/// The `Request` of what the client asked: the server's settings, with the client's model
/// choice, provider filters, limits and sampling (DESIGN §8 "Choosing models").
fn request_of(server: &Server, asked: Asked, api: Api) -> std::result::Result<Request, Refusal> {
    let session = &server.session;
    let mut ask = server.settings.ask.clone();
    let concrete = asked
        .model
        .as_deref()
        .filter(|m| !(AUTO.contains(m) || api == Api::Anthropic && m.starts_with("claude-")));
    let models: Vec<String> = concrete
        .map(str::to_string)
        .into_iter()
        .chain(
            asked
                .models
                .iter()
                .filter(|m| !AUTO.contains(&m.as_str()))
                .cloned(),
        )
        .collect();
    for id in &models {
        if !session.models().iter().any(|m| &m.id == id) {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "Unknown model `{id}`: GET /v1/models lists the ids served here (or use `auto`)"
                ),
            ));
        }
    }
    if !models.is_empty() {
        ask.route.models = models;
    }
    if !asked.only.is_empty() {
        ask.route.providers = match ask.route.providers.is_empty() {
            true => asked.only.clone(),
            false => ask
                .route
                .providers
                .iter()
                .filter(|p| asked.only.contains(p))
                .cloned()
                .collect(),
        };
        if ask.route.providers.is_empty() {
            return Err(no_provider_left());
        }
    }
    if !asked.ignore.is_empty() {
        let base: Vec<String> = match ask.route.providers.is_empty() {
            true => session.providers.iter().map(|p| p.name.clone()).collect(),
            false => ask.route.providers.clone(),
        };
        ask.route.providers = base
            .into_iter()
            .filter(|p| !asked.ignore.contains(p))
            .collect();
        if ask.route.providers.is_empty() {
            return Err(no_provider_left());
        }
    }
    ask.max_tokens = asked.max_tokens.or(ask.max_tokens);
    ask.temperature = asked.temperature.or(ask.temperature);
    ask.tool_choice = asked.tool_choice;
    ask.stream = asked.stream;
    let input = Input {
        prompt: String::new(),
        images: Vec::new(),
        tools: asked.tools,
        schema: asked.schema,
        messages: Some(asked.messages),
        kept: Vec::new(),
    };
    let mut req =
        request::build(&ask, input, None).map_err(|e| Refusal::invalid(e.full_message()))?;
    req.params = asked.params;
    Ok(req)
}

fn no_provider_left() -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "no_eligible_model",
        "No eligible model: provider.only and provider.ignore leave no provider",
    )
}

/// What the answering task tells the response.
enum Ev {
    /// The attempt whose tokens follow.
    Answering {
        provider: String,
        model: String,
    },
    Token(String),
    Done(Done),
}

struct Done {
    result: std::result::Result<Answer, Refusal>,
    /// Attempts sent, race and hedge losers included.
    attempts: usize,
}

/// The tokens of the winning attempt, into the response.
struct ChannelSink {
    tx: mpsc::UnboundedSender<Ev>,
}

impl TokenSink for ChannelSink {
    fn attempt_started(&mut self, _provider: &str, _model: &str) {}
    fn token(&mut self, text: &str) -> bool {
        self.tx.send(Ev::Token(text.to_string())).is_ok()
    }
    fn trace(&mut self, _msg: String) {}
    fn answering(&mut self, provider: &str, model: &str) {
        let _ = self.tx.send(Ev::Answering {
            provider: provider.into(),
            model: model.into(),
        });
    }
}

/// One request through the session, as a single run: plan, wait for room when every
/// provider it could use is full and the deadline allows, ask, record.
async fn answer(
    server: Rc<Server>,
    req: Request,
    tx: mpsc::UnboundedSender<Ev>,
    cancel: Cancel,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    struct Asking<'a>(&'a Cell<usize>);
    impl Drop for Asking<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    let _asking = Asking(&server.asking);
    let started = Instant::now();
    let deadline = started + req.timeout;
    let session = &server.session;
    let stopped = async {
        tokio::select! {
            () = cancel.fired() => {}
            () = server.stop.fired() => {}
        }
    };
    tokio::pin!(stopped);
    let mut sink = ChannelSink { tx: tx.clone() };
    let done = loop {
        let jobs = session.plan(&req);
        if let Room::At(until) = session.room(&jobs) {
            if until + crate::attempt::FIRST_TOKEN_FLOOR < deadline {
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => continue,
                    () = &mut stopped => break Done {
                        result: Err(Refusal::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "cancelled",
                            "The request was cancelled while it waited for a provider to have room",
                        )),
                        attempts: 0,
                    },
                }
            }
            let secs = until
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
                .ceil() as u64;
            break Done {
                result: Err(Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Every provider that could answer is at its request limit until after this request's deadline",
                )
                .retry(secs)),
                attempts: 0,
            };
        }
        if let Some(e) = Session::unanswerable(&jobs) {
            break Done {
                result: Err(refusal_of_plan(&jobs, e)),
                attempts: 0,
            };
        }
        let run = session.ask(&jobs, deadline, &mut sink, &mut stopped).await;
        let starved = run.attempts.is_empty()
            && matches!(run.result, Some(Err(Stop::Error(_))))
            && !session.any_room(&jobs);
        if starved && Instant::now() + crate::attempt::FIRST_TOKEN_FLOOR < deadline {
            // Another request took the last slot first: wait for room like a batch item.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for n in session.record(&run.attempts, &LogLine::of(&req, &run.attempts, false)) {
            server.printer.note(&n);
        }
        server.metrics.borrow_mut().attempts(&run.attempts);
        let attempts = run.attempts.len();
        let result = match run.result {
            Some(Ok(successes)) => {
                let total = started.elapsed().as_millis() as u64;
                let a = crate::outcome::answer(&successes, run.attempts, total);
                server
                    .metrics
                    .borrow_mut()
                    .first_token(a.timing.first_token_ms);
                Ok(a)
            }
            Some(Err(Stop::Error(e))) => Err(refusal_of_run(&e)),
            Some(Err(Stop::OutputClosed)) | None => Err(Refusal::new(
                StatusCode::from_u16(499).expect("a valid status"),
                "cancelled",
                "The client went away",
            )),
        };
        break Done { result, attempts };
    };
    let _ = tx.send(Ev::Done(done));
}

/// No job has a candidate: nothing has what the request needs (404), or what would do is
/// out of quota for now (429 until the soonest reset).
fn refusal_of_plan(jobs: &[Job], e: Error) -> Refusal {
    if e.kind == ErrorKind::NoEligibleModel {
        return Refusal::new(StatusCode::NOT_FOUND, "no_eligible_model", e.message);
    }
    let now = crate::now_ms();
    let soonest = jobs
        .iter()
        .flat_map(|j| &j.plan.dropped)
        .filter_map(|d| match &d.reason {
            DropReason::ProviderBlocked { until_ms, .. } => Some(*until_ms),
            _ => None,
        })
        .min();
    Refusal::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.message)
        .retry(soonest.map_or(60, |t| t.saturating_sub(now).div_ceil(1000)))
}

/// A run that ended without an answer: every attempt rate-limited or out of quota (429),
/// the deadline (504), or anything else (502).
fn refusal_of_run(e: &Error) -> Refusal {
    let tried: Vec<&AttemptRecord> = e
        .attempts
        .iter()
        .filter(|a| a.outcome != AttemptOutcome::Cancelled)
        .collect();
    let limited = |a: &&AttemptRecord| {
        matches!(
            a.outcome,
            AttemptOutcome::RateLimited | AttemptOutcome::QuotaExhausted
        )
    };
    if e.kind == ErrorKind::Deadline {
        return Refusal::new(StatusCode::GATEWAY_TIMEOUT, "deadline", e.message.clone());
    }
    if !tried.is_empty() && tried.iter().all(limited) {
        let now = crate::now_ms();
        let soonest = tried.iter().filter_map(|a| a.retry_at_ms).min();
        return Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            e.message.clone(),
        )
        .retry(soonest.map_or(30, |t| t.saturating_sub(now).div_ceil(1000)));
    }
    if tried.is_empty() && e.kind == ErrorKind::AllFailed {
        return Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            e.message.clone(),
        )
        .retry(1);
    }
    Refusal::new(StatusCode::BAD_GATEWAY, "all_failed", e.message.clone())
}

/// Turns what the answering task sends into one API's SSE events.
pub trait Encoder {
    /// A keep-alive while no token has come.
    fn keepalive(&mut self) -> String;
    fn answering(&mut self, provider: &str, model: &str);
    fn token(&mut self, text: &str) -> String;
    /// The rest of a finished answer: text not streamed (a checked schema answer), tool
    /// calls, the finish, usage, the end.
    fn finish(&mut self, answer: &Answer, forwarded: bool) -> String;
    /// A failure after the response began: one error event, then the end.
    fn fail(&mut self, refusal: &Refusal) -> String;
}

/// A streamed response's state: what the task sends, keep-alives until the first token.
struct Streaming {
    rx: mpsc::UnboundedReceiver<Ev>,
    pending: Option<Ev>,
    encoder: Box<dyn Encoder>,
    forwarded: bool,
    finished: bool,
    log: RequestLog,
    /// Cancels the ask when the client goes away (this body dropped unfinished).
    guard: FireOnDrop,
    tick: tokio::time::Interval,
}

impl Streaming {
    async fn next(mut self) -> Option<(Bytes, Streaming)> {
        if self.finished {
            return None;
        }
        let mut out = String::new();
        // Wait for the first event (or a keep-alive), then take whatever else is already
        // there: a fast upstream's tokens go out in few writes, not one each.
        let first = match self.pending.take() {
            Some(ev) => Some(ev),
            None => tokio::select! {
                ev = self.rx.recv() => ev,
                _ = self.tick.tick(), if !self.forwarded => {
                    return Some((Bytes::from(self.encoder.keepalive()), self));
                }
            },
        };
        let mut ev = first;
        // Tokens already waiting become one chunk: clients take any split of the text.
        let mut text = String::new();
        loop {
            match ev {
                Some(Ev::Answering { provider, model }) => {
                    self.encoder.answering(&provider, &model);
                }
                Some(Ev::Token(t)) => {
                    self.forwarded = true;
                    text += &t;
                }
                Some(Ev::Done(d)) => {
                    if !text.is_empty() {
                        out += &self.encoder.token(&std::mem::take(&mut text));
                    }
                    self.finished = true;
                    self.guard.disarm();
                    self.log.fill(&d);
                    self.log.status = 200;
                    out += &match &d.result {
                        Ok(a) => self.encoder.finish(a, self.forwarded),
                        Err(r) => self.encoder.fail(r),
                    };
                    break;
                }
                None => {
                    if !text.is_empty() {
                        out += &self.encoder.token(&std::mem::take(&mut text));
                    }
                    self.finished = true;
                    out += &self.encoder.fail(&internal());
                    break;
                }
            }
            if text.len() >= COALESCE_BYTES {
                break;
            }
            ev = match self.rx.try_recv() {
                Ok(e) => Some(e),
                Err(mpsc::error::TryRecvError::Empty) => {
                    if out.is_empty() && text.is_empty() {
                        // Only an `Answering` so far: wait for what follows it.
                        tokio::select! {
                            e = self.rx.recv() => e,
                            _ = self.tick.tick(), if !self.forwarded => {
                                return Some((Bytes::from(self.encoder.keepalive()), self));
                            }
                        }
                    } else {
                        break;
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
        }
        if !text.is_empty() {
            out += &self.encoder.token(&text);
        }
        Some((Bytes::from(out), self))
    }
}

/// A cancellation that any number of futures can wait for.
#[derive(Clone, Default)]
struct Cancel(Rc<(Cell<bool>, Notify)>);

impl Cancel {
    fn fire(&self) {
        self.0.0.set(true);
        self.0.1.notify_waiters();
    }

    async fn fired(&self) {
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.0.get() {
                return;
            }
            notified.await;
        }
    }
}

/// Fires its cancellation when dropped while armed: a response dropped unfinished means
/// the client went away.
struct FireOnDrop(Option<Cancel>);

impl FireOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for FireOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fire();
        }
    }
}

/// The request log line (DESIGN §8: never prompt or answer text) and the request metrics,
/// written when the response is done with (a streamed one when its body ends or is dropped).
struct RequestLog {
    server: Option<Rc<Server>>,
    endpoint: &'static str,
    started: Instant,
    status: u16,
    provider: Option<String>,
    model: Option<String>,
    attempts: usize,
    first_token_ms: Option<u64>,
    tokens: Option<(u64, u64)>,
    error: Option<&'static str>,
}

impl RequestLog {
    fn new(server: &Rc<Server>, endpoint: &'static str, started: Instant) -> Self {
        RequestLog {
            server: Some(server.clone()),
            endpoint,
            started,
            status: 0,
            provider: None,
            model: None,
            attempts: 0,
            first_token_ms: None,
            tokens: None,
            error: None,
        }
    }

    /// Moves the line out (into a streamed body); this one then writes nothing.
    fn take(&mut self) -> RequestLog {
        RequestLog {
            server: self.server.take(),
            endpoint: self.endpoint,
            started: self.started,
            status: self.status,
            provider: None,
            model: None,
            attempts: 0,
            first_token_ms: None,
            tokens: None,
            error: self.error.take(),
        }
    }

    fn fill(&mut self, d: &Done) {
        self.attempts = d.attempts;
        match &d.result {
            Ok(a) => {
                self.status = 200;
                self.error = None;
                self.provider = Some(a.provider.clone());
                self.model = Some(a.model.clone());
                self.first_token_ms = a.timing.first_token_ms;
                self.tokens = a
                    .usage
                    .as_ref()
                    .map(|u| (u.prompt_tokens, u.completion_tokens));
            }
            Err(r) => {
                self.status = r.status.as_u16();
                self.error = Some(r.code);
            }
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        // A request's panic is logged once, as its 500, by `handle`.
        let Some(server) = self.server.take().filter(|_| !std::thread::panicking()) else {
            return;
        };
        // A streamed body dropped before its end: the client went away.
        let status = if self.status == 0 { 499 } else { self.status };
        let total_ms = self.started.elapsed().as_millis() as u64;
        server
            .metrics
            .borrow_mut()
            .request(self.endpoint, status, self.started.elapsed());
        let line = if server.settings.log_json {
            json!({
                "time": rfc3339(wall_ms()),
                "endpoint": self.endpoint,
                "status": status,
                "provider": self.provider,
                "model": self.model,
                "attempts": self.attempts,
                "first_token_ms": self.first_token_ms,
                "total_ms": total_ms,
                "prompt_tokens": self.tokens.map(|t| t.0),
                "completion_tokens": self.tokens.map(|t| t.1),
                "error": self.error,
            })
            .to_string()
        } else {
            let who = match (&self.provider, &self.model) {
                (Some(p), Some(m)) => format!(" {p}/{m}"),
                _ => String::new(),
            };
            let mut s = format!(
                "{} {} {status}{who} attempts={} total_ms={total_ms}",
                rfc3339(wall_ms()),
                self.endpoint,
                self.attempts
            );
            if let Some(ms) = self.first_token_ms {
                s.push_str(&format!(" first_token_ms={ms}"));
            }
            if let Some((p, c)) = self.tokens {
                s.push_str(&format!(" tokens={p}+{c}"));
            }
            if let Some(e) = self.error {
                s.push_str(&format!(" error={e}"));
            }
            s
        };
        server.printer.report(&line);
    }
}

/// `2026-12-01T21:26:32.123Z` from Unix milliseconds.
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Unique enough ids for responses (`chatcmpl-…`, `msg_…`).
fn response_id(prefix: &str) -> String {
    format!("{prefix}{:016x}{:08x}", wall_ms(), fastrand::u32(..))
}

/// The wall clock in Unix milliseconds (log times and ids are the wall's, never the memory's
/// clock, which tests may pin).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix seconds now, for `created`.
fn unix_secs() -> u64 {
    wall_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_only() {
        for ok in [
            "localhost",
            "localhost:4020",
            "127.0.0.1:4020",
            "127.1.2.3",
            "[::1]:4020",
            "[::1]",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:4020",
            "10.0.0.1:4020",
            "localhost.evil.example",
            "[::2]:1",
            "",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_788_825_600_000), "2026-09-08T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
