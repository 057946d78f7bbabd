//! `freeroute serve` (DESIGN §8) as a real process on 127.0.0.1, in front of the fake
//! provider: answers whole and streamed in both APIs, fallback before the first token,
//! keep-alives, the mid-stream error chunk, refusals in each endpoint's shape with the
//! server still serving after them, safety (Host, token, credentials), cancellation on
//! disconnect, graceful shutdown, the request log, metrics, and 200 streams at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake::{self, FakeServer, Reply, Step};
use crate::harness::{Env, KEY, wait_within};

pub const A: &str = "meta-llama/llama-3.3-70b-instruct:free";
pub const B: &str = "qwen/qwen3-32b:free";
pub const VISION: &str = "google/gemma-3-27b-it:free";

/// A catalog of two text models (A ranks first, B has structured output) and one with
/// vision, tools and structured output.
pub fn catalog() -> Reply {
    fake::catalog(vec![
        fake::model_entry(A, "0", Some(131072), &["text"], &["max_tokens"]),
        fake::model_entry(
            B,
            "0",
            Some(40960),
            &["text"],
            &["max_tokens", "response_format"],
        ),
        fake::model_entry(
            VISION,
            "0",
            Some(32768),
            &["text", "image"],
            &["tools", "response_format", "max_tokens"],
        ),
    ])
}

/// A fake whose catalog is `catalog()` and whose chats `chat` answers.
pub fn fake(chat: impl Fn(&fake::Request) -> Reply + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            catalog()
        } else {
            chat(r)
        }
    })
}

/// The longest a test's server may live, whatever happens to the test.
const SERVE_LIMIT: Duration = Duration::from_secs(300);

/// A running `freeroute serve`, killed when dropped; its stderr is collected as it comes.
pub struct Served {
    /// `timeout`, whose child is the server.
    child: Option<Child>,
    server_pid: u32,
    pub port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Starts `freeroute serve --listen 127.0.0.1:0 ARGS` and waits for its address line.
    pub fn start(env: &Env, args: &[&str]) -> Served {
        let mut full = vec!["serve", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        // Under `timeout`: a test that dies without dropping this (a panic beside client
        // threads still running) cannot leave a server behind for longer than `SERVE_LIMIT`.
        let sealed = env.cmd(&full);
        let mut cmd = std::process::Command::new("timeout");
        cmd.args(["-s", "KILL", &SERVE_LIMIT.as_secs().to_string()])
            .arg(sealed.get_program())
            .args(sealed.get_args())
            .env_clear();
        for (k, v) in sealed.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn freeroute serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().unwrap_or(0));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                panic!(
                    "freeroute serve did not start:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        };
        let tpid = child.id();
        let server_pid = std::fs::read_to_string(format!("/proc/{tpid}/task/{tpid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .expect("the server under timeout");
        Served {
            child: Some(child),
            server_pid,
            port,
            stderr,
            reader: Some(reader),
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.server_pid
    }

    /// SIGTERM, then the exit code and all of stderr (killed after `limit`).
    pub fn stop(mut self, limit: Duration) -> (i32, String) {
        let child = self.child.take().unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.server_pid.to_string()])
            .status();
        let out = wait_within(child, limit, "freeroute serve after SIGTERM");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (out.status.code().unwrap_or(-1), self.stderr())
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        http(
            self.port,
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> Resp {
        http(self.port, "GET", path, &[], b"")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The server itself, then `timeout`, which ends with it. While `timeout` runs,
            // the server's PID is still its child's (alive, or not yet reaped).
            if matches!(c.try_wait(), Ok(None)) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &self.server_pid.to_string()])
                    .status();
            }
            let _ = c.wait();
        }
    }
}

/// A response as the client read it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The `data:` payloads of an SSE body, `[DONE]` included.
    pub fn events(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(str::to_string)
            .collect()
    }

    /// The streamed text of an OpenAI SSE body.
    pub fn streamed_text(&self) -> String {
        self.events()
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), read to the end.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    exchange(port, &raw)
}

/// Sends raw bytes and reads the response to the end of the connection.
pub fn exchange(port: u16, raw: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to serve");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(raw).expect("send the request");
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        panic!("reading the response failed after {} bytes: {e}", buf.len());
    }
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A plain chat body.
pub fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream,
           "messages": [{"role": "user", "content": "Say hi"}]})
}

/// The sealed environment of every serve test.
pub fn env(server: &FakeServer) -> Env {
    Env::new(server)
}

#[test]
fn serve_answers_whole_and_streamed_with_the_answering_model() {
    let server = fake(|r| fake::answer(&r.model(), &["Hel", "lo"])).expect_chats(4);
    let env = env(&server);
    let s = Served::start(&env, &["--prefer", A]);
    let r = s.post("/v1/chat/completions", &chat("auto", false));
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["model"], A);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(r.header("x-freeroute-provider"), Some("openrouter"));
    assert_eq!(r.header("x-freeroute-attempts"), Some("1"));
    assert!(r.header("access-control-allow-origin").is_none(), "no CORS");

    let r = s.post("/v1/chat/completions", &chat("auto", true));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.streamed_text(), "Hello");
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        assert_eq!(c["model"], A, "{e}");
        assert_eq!(c["provider"], "openrouter", "{e}");
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    let finish: Vec<&str> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        })
        .map(|s| Box::leak(s.into_boxed_str()) as &str)
        .collect();
    assert_eq!(finish, ["stop"]);
    // The client's own credentials never go upstream; the provider's key does.
    let r = http(
        s.port,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer client-secret-xyz")],
        chat("auto", false).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    for c in server.chats() {
        assert_eq!(
            c.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    // Sampling parameters are passed on as given.
    let mut body = chat("auto", false);
    for (k, v) in [
        ("top_p", json!(0.5)),
        ("stop", json!(["END"])),
        ("seed", json!(42)),
        ("frequency_penalty", json!(0.25)),
        ("presence_penalty", json!(0.5)),
        ("max_completion_tokens", json!(77)),
        ("temperature", json!(0.0)),
    ] {
        body[k] = v;
    }
    assert_eq!(s.post("/v1/chat/completions", &body).status, 200);
    let sent = server.chats().last().unwrap().json();
    assert_eq!(sent["top_p"], json!(0.5));
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["seed"], json!(42));
    assert_eq!(sent["frequency_penalty"], json!(0.25));
    assert_eq!(sent["presence_penalty"], json!(0.5));
    assert_eq!(sent["max_tokens"], json!(77));
    assert_eq!(sent["temperature"], json!(0.0));
    let log = s.stderr();
    assert!(!log.contains(KEY), "{log}");
    assert!(!log.contains("Say hi"), "no prompt in the log: {log}");
}

#[test]
fn serve_falls_back_after_a_429_before_the_first_token() {
    let server = fake(|r| match r.model().as_str() {
        A | VISION => fake::upstream_429(&r.model()),
        _ => fake::answer(B, &["from ", "B"]),
    })
    .expect_chats(4);
    let env = env(&server);
    let s = Served::start(&env, &[]);
    let mut first = chat(A, false);
    first["models"] = json!([B]);
    let r = s.post("/v1/chat/completions", &first);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from B");
    assert_eq!(r.json()["model"], B);
    assert_eq!(r.header("x-freeroute-attempts"), Some("2"));
    // Streamed: the client never sees the model that failed.
    let mut body = chat(VISION, true);
    body["models"] = json!([B]);
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.streamed_text(), "from B");
    assert!(!r.body.contains(VISION), "{}", r.body);
    assert_eq!(server.chat_models(), [A, B, VISION, B]);
}

#[test]
fn serve_sends_keepalives_while_a_hung_model_is_given_up_on() {
    // Unmeasured with another candidate left, A gets half of the 12 s deadline; B is
    // started beside it after 3 s (the patience when nothing is measured) and takes 4 s
    // more: the first token comes after the 5 s the status is held.
    let server = fake(|r| match r.model().as_str() {
        A => Reply::Hang,
        _ => {
            let mut steps = vec![Step::Sleep(Duration::from_secs(4))];
            steps.extend(fake::answer_steps(B, &["late ", "answer"]));
            Reply::stream(steps)
        }
    })
    .expect_chats(2);
    let env = env(&server);
    let s = Served::start(&env, &["--timeout", "12"]);
    let mut body = chat(A, true);
    body["models"] = json!([B]);
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200);
    assert!(
        r.body.starts_with(": "),
        "a keep-alive comment first: {}",
        r.body
    );
    assert_eq!(r.streamed_text(), "late answer");
    assert_eq!(r.events().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        server.aborted(),
        Vec::<String>::new(),
        "a Hang reply is not a stream"
    );
}

#[test]
fn serve_ends_a_broken_stream_with_an_error_chunk_and_falls_back_when_whole() {
    let server = fake(|r| match r.model().as_str() {
        A => fake::mid_stream_error(A, &["par", "tial"]),
        _ => fake::answer(B, &["whole"]),
    });
    let env = env(&server);
    let s = Served::start(&env, &[]);
    let r = s.post("/v1/chat/completions", &chat(A, true));
    assert_eq!(r.status, 200);
    let events = r.events();
    assert_eq!(r.streamed_text(), "partial");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "error", "{last}");
    assert_eq!(last["error"]["code"], 502);
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broke off")
    );
    // Not streamed, nothing was forwarded: the next model answers.
    let mut body = chat(A, false);
    body["models"] = json!([B]);
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "whole");
}

#[test]
fn serve_refuses_what_no_model_can_do_and_unknown_models() {
    let server = fake(|_| fake::answer(A, &["x"]));
    let env = env(&server).config(&format!("\n[defaults]\nexclude = [\"{VISION}\"]\n"));
    let s = Served::start(&env, &[]);
    let image = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let r = s.post("/v1/chat/completions", &image);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "no_eligible_model");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("image input")
    );
    let r = s.post("/v1/chat/completions", &chat("no/such-model", false));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/models")
    );
    // Anthropic's shape for the same refusal.
    let r = s.post(
        "/v1/messages",
        &json!({"model": "no/such-model", "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let mut listed: Vec<String> = s.get("/v1/models").json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed[0], "auto");
    listed.sort();
    assert_eq!(listed, ["auto", A, B]);
    assert_eq!(server.chats().len(), 0);
}

#[test]
fn serve_answers_429_with_retry_after_when_every_model_is_rate_limited() {
    let server = fake(|r| fake::rate_limit_429(&r.model(), 40)).expect_chats(3);
    let env = env(&server);
    let s = Served::start(&env, &["--timeout", "5"]);
    let r = s.post("/v1/chat/completions", &chat("auto", false));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((30..=40).contains(&secs), "{secs}");
    assert_eq!(server.chats().len(), 3, "each model once");
    // Streamed, the same: a status, not a stream.
    let r = s.post("/v1/chat/completions", &chat("auto", true));
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("retry-after").is_some());
}

#[test]
fn serve_keeps_a_providers_window_across_concurrent_requests() {
    let server = fake(|_| fake::answer(A, &["ok"]));
    let env = env(&server).config("requests_per_minute = 5\n");
    let s = Arc::new(Served::start(&env, &["--timeout", "3"]));
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.post("/v1/chat/completions", &chat("auto", false)))
        })
        .collect();
    let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    let statuses: Vec<u16> = joined
        .into_iter()
        .map(|r| r.expect("a client thread").status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&c| c == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&c| c == 429).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(server.chats().len(), 5, "the window is never over-sent");
}

#[test]
fn serve_refuses_bad_input_in_the_endpoints_shape_and_keeps_serving() {
    let server = fake(|_| fake::answer(A, &["fine"]));
    let env = env(&server);
    let s = Served::start(&env, &[]);
    let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("malformed JSON", b"{\"messages\": [".to_vec(), 400),
        ("not JSON at all", b"hello".to_vec(), 400),
        (
            "wrong type",
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "unknown role",
            json!({"messages": [{"role": "wizard", "content": "x"}]})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "bad image part",
            user(json!([{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]))
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "no messages",
            json!({"messages": []}).to_string().into_bytes(),
            400,
        ),
        (
            "messages missing",
            json!({"model": "auto"}).to_string().into_bytes(),
            400,
        ),
        (
            "only a system message",
            json!({"messages": [{"role": "system", "content": "x"}]})
                .to_string()
                .into_bytes(),
            400,
        ),
    ];
    for (what, body, status) in cases {
        let r = http(s.port, "POST", "/v1/chat/completions", &[], &body);
        assert_eq!(r.status, status, "{what}: {r:?}");
        let v = r.json();
        assert!(v["error"]["message"].is_string(), "{what}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{what}");
        let r = s.post("/v1/chat/completions", &chat("auto", false));
        assert_eq!(r.status, 200, "after {what}");
    }
    // Anthropic's shape.
    let r = http(
        s.port,
        "POST",
        "/v1/messages",
        &[],
        b"{\"max_tokens\": 5, \"messages\": 7}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // A body over 32 MiB, declared: refused before it is read.
    let mut raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 40000000\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b' '; 1024]);
    let r = exchange(s.port, &raw);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "body_too_large");
    // A body cut short: the client goes away; the server goes on.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-length: 500\r\n\r\n{\"messages\"").unwrap();
    drop(c);
    // Headers that never finish: the connection is closed (DESIGN §8: within 10 s).
    let mut slow = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: loc")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).expect("closed, not timed out");
    assert_eq!(n, 0, "closed without a response");
    let r = s.post("/v1/chat/completions", &chat("auto", false));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "fine");
}

#[test]
fn serve_answers_the_anthropic_messages_api_with_its_event_sequence() {
    let server = fake(|r| {
        let v = r.json();
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][0]["content"], "Be brief.");
        assert_eq!(v["max_tokens"], 64);
        fake::answer(A, &["Bon", "jour"])
    })
    .expect_chats(2);
    let env = env(&server);
    let s = Served::start(&env, &["-m", A]);
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "system": "Be brief.",
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]});
    let r = s.post("/v1/messages", &body);
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], A, "the model that answered, not claude-*");
    assert_eq!(v["content"][0], json!({"type": "text", "text": "Bonjour"}));
    assert_eq!(v["stop_reason"], "end_turn");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = s.post("/v1/messages", &streamed);
    assert_eq!(r.status, 200);
    let mut names: Vec<&str> = r
        .body
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("event: ")))
        .collect();
    // Tokens that arrive together may share a delta.
    names.dedup();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(r.body.contains(&format!("\"model\":\"{A}\"")));
    let r = s.post("/v1/messages/count_tokens", &body);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn serve_passes_tools_and_returns_tool_calls_in_both_apis() {
    let call = |r: &fake::Request| {
        let v = r.json();
        assert_eq!(v["tools"][0]["function"]["name"], "get_weather", "{v}");
        Reply::stream(vec![
            Step::Send(fake::chunk(
                VISION,
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":"}}]}),
                None,
            )),
            Step::Send(fake::chunk(
                VISION,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                None,
            )),
            Step::Send(fake::chunk(VISION, json!({}), Some("tool_calls"))),
            Step::Send("data: [DONE]\n\n".into()),
        ])
    };
    let server = fake(call).expect_chats(3);
    let env = env(&server);
    let s = Served::start(&env, &[]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body =
        json!({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools});
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{r:?}");
    let m = &r.json()["choices"][0];
    assert_eq!(m["finish_reason"], "tool_calls");
    assert_eq!(
        m["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let args: Value = serde_json::from_str(
        m["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = s.post("/v1/chat/completions", &streamed);
    assert!(r.body.contains("\"tool_calls\":[{"), "{}", r.body);
    assert!(
        r.body.contains("\"finish_reason\":\"tool_calls\""),
        "{}",
        r.body
    );
    let anthropic = json!({"model": "claude-x", "max_tokens": 100,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let r = s.post("/v1/messages", &anthropic);
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["input"], json!({"city": "Paris"}));
}

#[test]
fn serve_checks_a_json_schema_answer_and_tries_the_next_model() {
    let server = fake(|r| {
        let v = r.json();
        assert_eq!(v["response_format"]["type"], "json_schema", "{v}");
        match r.model().as_str() {
            VISION => fake::answer(VISION, &["{\"born\": \"soon\"}"]),
            _ => fake::answer(B, &["{\"born\": ", "1815}"]),
        }
    })
    .expect_chats(2);
    let env = env(&server);
    let s = Served::start(&env, &[]);
    let schema = json!({"type": "object", "required": ["born"], "properties": {"born": {"type": "integer"}}});
    let body = json!({"model": VISION, "models": [B], "stream": true,
        "messages": [{"role": "user", "content": "born?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}});
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{r:?}");
    // Checked before anything is sent: the client sees only the valid answer, from B.
    assert_eq!(r.streamed_text(), "{\"born\": 1815}");
    assert!(!r.body.contains(VISION), "{}", r.body);
    assert_eq!(server.chat_models(), [VISION, B]);
    let bad = json!({"messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 12}}}});
    let r = s.post("/v1/chat/completions", &bad);
    assert_eq!(r.status, 400, "an invalid schema: {r:?}");
}

#[test]
fn serve_cancels_the_upstream_attempt_when_the_client_goes_away() {
    let server = fake(|_| {
        let mut steps = fake::answer_steps(A, &["a"]);
        steps.insert(3, Step::Sleep(Duration::from_secs(20)));
        Reply::stream(steps)
    })
    .expect_chats(1);
    let env = env(&server);
    let s = Served::start(&env, &["-m", A]);
    let body = chat("auto", true).to_string();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    server.wait_for_chats(1);
    drop(c);
    let waited = Instant::now();
    while server.aborted().is_empty() {
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "upstream never cancelled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.aborted(), [A]);
    // The attempt is recorded as cancelled.
    let (code, log) = s.stop(Duration::from_secs(20));
    assert_eq!(code, 0, "{log}");
    let requests = std::fs::read_to_string(env.state_dir().join("requests.jsonl")).unwrap();
    assert!(requests.contains("\"outcome\":\"cancelled\""), "{requests}");
}

#[test]
fn serve_guards_host_and_token_and_refuses_to_listen_openly_without_one() {
    let server = fake(|_| fake::answer(A, &["ok"]));
    let env = env(&server);
    let s = Served::start(&env, &[]);
    let r = http(s.port, "GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"ok": true, "providers": 1, "models": 3}));
    let raw = format!(
        "GET /v1/models HTTP/1.1\r\nhost: attacker.example:{}\r\nconnection: close\r\n\r\n",
        s.port
    );
    let r = exchange(s.port, raw.as_bytes());
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "host_refused");
    drop(s);

    let out = env.run(&["serve", "--listen", "192.0.2.1:4020"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("--token-env"), "{out}");
    let out = env.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token-env",
        "SERVE_TOKEN_UNSET",
    ]);
    assert_eq!(out.code, 6, "{out}");

    let env = env.var("SERVE_TOKEN", "tok-0123456789");
    let s = Served::start(&env, &["--token-env", "SERVE_TOKEN"]);
    let body = chat("auto", false).to_string();
    let r = http(s.port, "POST", "/v1/chat/completions", &[], body.as_bytes());
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = http(
        s.port,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer wrong")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);
    let r = http(
        s.port,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer tok-0123456789")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = http(
        s.port,
        "POST",
        "/v1/messages",
        &[("x-api-key", "tok-0123456789")],
        json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // With a token the Host check is off; /healthz needs no token.
    let r = exchange(
        s.port,
        format!(
            "GET /healthz HTTP/1.1\r\nhost: box.lan:{}\r\nconnection: close\r\n\r\n",
            s.port
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    for c in server.chats() {
        assert_ne!(c.header("authorization"), Some("Bearer tok-0123456789"));
    }
}

#[test]
fn serve_drains_on_sigterm_records_the_state_and_logs_json_lines() {
    let server = fake(|_| {
        let mut steps = fake::answer_steps(A, &["slow ", "but ", "whole"]);
        steps.insert(3, Step::Sleep(Duration::from_millis(1500)));
        Reply::stream(steps)
    })
    .expect_chats(2);
    let env = env(&server);
    let s = Served::start(&env, &["--log-format", "json", "-m", A]);
    let r = s.post("/v1/chat/completions", &chat("auto", false));
    assert_eq!(r.status, 200);
    let port = s.port;
    let inflight = std::thread::spawn(move || {
        http(
            port,
            "POST",
            "/v1/chat/completions",
            &[],
            chat("auto", true).to_string().as_bytes(),
        )
    });
    server.wait_for_chats(2);
    let (code, log) = s.stop(Duration::from_secs(20));
    assert_eq!(code, 0, "{log}");
    let r = inflight.join().unwrap();
    assert_eq!(
        r.streamed_text(),
        "slow but whole",
        "the request in flight finished"
    );
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for l in &lines {
        assert_eq!(l["endpoint"], "/v1/chat/completions");
        assert_eq!(l["status"], 200);
        assert_eq!(l["provider"], "openrouter");
        assert_eq!(l["model"], A);
        assert_eq!(l["attempts"], 1);
        assert!(l["total_ms"].is_u64() && l["time"].is_string());
    }
    assert!(!log.contains("Say hi") && !log.contains("whole\""), "{log}");
    // What the server spent is in the state a CLI run reads.
    let stats = env.run(&["stats", "--json"]);
    let row = crate::harness::stats_row(&stats.json(), "models", "model", A);
    assert!(row["ok"].as_f64().unwrap() > 1.9, "{row}");
}

#[test]
fn serve_counts_requests_and_attempts_in_metrics() {
    let server = fake(|r| match r.model().as_str() {
        A => fake::upstream_429(A),
        _ => fake::answer(B, &["ok"]),
    });
    let env = env(&server);
    let s = Served::start(&env, &[]);
    let mut body = chat(A, false);
    body["models"] = json!([B]);
    assert_eq!(s.post("/v1/chat/completions", &body).status, 200);
    assert_eq!(
        s.post("/v1/chat/completions", &json!({"messages": []}))
            .status,
        400
    );
    let m = s.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    for line in [
        "freeroute_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 1",
        "freeroute_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"} 1",
        &format!(
            "freeroute_attempts_total{{provider=\"openrouter\",model=\"{A}\",outcome=\"rate_limited\"}} 1"
        ),
        &format!(
            "freeroute_attempts_total{{provider=\"openrouter\",model=\"{B}\",outcome=\"ok\"}} 1"
        ),
        "freeroute_first_token_seconds_count 1",
        "freeroute_request_seconds_count 2",
        "freeroute_quota_remaining{provider=\"openrouter\",window=\"minute\"} 18",
    ] {
        assert!(m.body.contains(line), "missing {line}:\n{}", m.body);
    }
    assert!(!m.body.contains(KEY));
}

#[test]
fn serve_streams_to_200_clients_at_once() {
    let words: Vec<String> = (0..50).map(|i| format!("w{i} ")).collect();
    let whole: String = words.concat();
    let server = fake(move |_| {
        let pieces: Vec<&str> = words.iter().map(String::as_str).collect();
        fake::answer(A, &pieces)
    })
    .expect_chats(200);
    // A local server of the user's: no free-tier window, so all 200 go at once.
    let env = Env::bare().config(&format!(
        "[providers.local]\nbase_url = \"{}\"\n",
        server.url("/v1")
    ));
    let s = Arc::new(Served::start(&env, &[]));
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let s = s.clone();
            // Named, so that no request explores another model beside it (an extra request).
            std::thread::spawn(move || s.post("/v1/chat/completions", &chat(A, true)))
        })
        .collect();
    // Every client is joined before anything is asserted, so a failure drops the server.
    let responses: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    for r in responses {
        let r = r.unwrap_or_else(|_| panic!("a client failed; the server said:\n{}", s.stderr()));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.streamed_text(), whole);
        assert_eq!(r.events().last().map(String::as_str), Some("[DONE]"));
    }
    assert_eq!(server.chats().len(), 200, "one upstream request each");
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap_or_default();
    if let Some(kb) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        assert!(kb < 200 * 1024, "peak RSS {kb} kB");
    }
}

#[test]
fn serve_answers_503_past_max_concurrency_and_its_queue() {
    let server = fake(|r| {
        let mut steps = fake::answer_steps(&r.model(), &["done"]);
        steps.insert(0, Step::Sleep(Duration::from_millis(1500)));
        Reply::stream(steps)
    })
    .expect_chats(5);
    let env = env(&server);
    let s = Arc::new(Served::start(&env, &["--max-concurrency", "1"]));
    // One answered at once, four waiting: the queue is full.
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.post("/v1/chat/completions", &chat("auto", false)))
        })
        .collect();
    let waited = Instant::now();
    loop {
        let m = s.get("/metrics").body;
        if m.contains("freeroute_requests_in_flight 1")
            && m.contains("freeroute_requests_waiting 4")
        {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "never queued:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = s.post("/v1/chat/completions", &chat("auto", false));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    let responses: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    for r in responses {
        let r = r.expect("a client thread");
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[test]
fn serve_closes_connections_that_idle_or_stop_reading() {
    // An answer far larger than the sockets' buffers, so a client that never reads stalls
    // the server's writes.
    let piece = "x".repeat(64 * 1024);
    let server = fake(move |r| {
        let pieces: Vec<&str> = std::iter::repeat_n(piece.as_str(), 256).collect();
        fake::answer(&r.model(), &pieces)
    });
    let env = env(&server).limit(Duration::from_secs(150));
    let s = Served::start(&env, &["-m", A]);
    // A keep-alive connection that answered once and then idles.
    let mut idle = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut first = [0u8; 512];
    assert!(idle.read(&mut first).unwrap() > 0, "the first answer");
    // A client that sends a streamed request and never reads.
    let body = chat("auto", true).to_string();
    let mut stuck = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        stuck,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // The idle one is closed (DESIGN §8: after 60 s).
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).expect("closed, not timed out");
    // The stalled one is given up on: its request's log line says the client went away.
    let waited = Instant::now();
    while !s.stderr().contains("error=client_closed") {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "the stalled client was never dropped:\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stuck);
    let r = s.post("/v1/chat/completions", &chat("auto", false));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len(),
        256 * 64 * 1024
    );
}

#[test]
fn serve_refreshes_its_catalog_in_the_background_per_catalog_ttl() {
    const NEW: &str = "new/model-9b:free";
    let asked = Arc::new(Mutex::new(0usize));
    let counter = asked.clone();
    let server = FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            let mut n = counter.lock().unwrap();
            *n += 1;
            if *n == 1 {
                catalog()
            } else {
                // The second list has one model more.
                fake::catalog(vec![
                    fake::model_entry(A, "0", Some(131072), &["text"], &["max_tokens"]),
                    fake::model_entry(NEW, "0", Some(8192), &["text"], &["max_tokens"]),
                ])
            }
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = env(&server).config("[defaults]\ncatalog_ttl = 1\n");
    let s = Served::start(&env, &[]);
    assert!(!s.get("/v1/models").body.contains(NEW));
    let waited = std::time::Instant::now();
    while !s.get("/v1/models").body.contains(NEW) {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the catalog was never refreshed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A model the new list no longer has is gone; the new one answers.
    assert!(!s.get("/v1/models").body.contains(VISION));
    let r = s.post("/v1/chat/completions", &chat(NEW, false));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_panic_in_one_request_is_its_500_and_the_server_keeps_serving() {
    let server = fake(|r| fake::answer(&r.model(), &["ok"]));
    let env = env(&server);
    let s = Served::start(&env, &[]);
    let body = chat(A, false).to_string();
    let r = http(
        s.port,
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("x-freeroute-test-panic", "1"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("\"internal\""), "{}", r.body);
    // The next request is answered as if nothing happened.
    let r = s.post("/v1/chat/completions", &chat(A, false));
    assert_eq!(r.status, 200, "{}", r.body);
    let (code, stderr) = s.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("x-freeroute-test-panic"),
        "the panic is logged: {stderr}"
    );
}
