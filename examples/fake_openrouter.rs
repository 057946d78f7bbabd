//! A standalone fake OpenRouter on 127.0.0.1 for `bench/run.sh`, built on the integration
//! tests' fake server (`tests/support/fake.rs`), with no artificial delay.
//!
//! Usage: `fake_openrouter [PORT] [LIMIT_SECS]`. PORT 0 (the default) picks a free port;
//! the chosen port is the first line on stdout. The server exits after LIMIT_SECS (default
//! 300), and as soon as its stdin closes when stdin is a pipe (so a parent that dies, even
//! by SIGKILL, takes the server with it).
//!
//! Models (`POST /api/v1/chat/completions`, by the request's `model`):
//! - `bench/short:free`: a 20-token streamed answer, one chunk write per event;
//! - `bench/long:free`: a 2,000-token streamed answer, 250 SSE events per chunk write;
//! - `bench/busy-1:free`, `bench/busy-2:free`, `bench/busy-3:free`: upstream HTTP 429;
//! - `bench/hang:free`: one keep-alive comment, then nothing until the client leaves.
//!
//! `GET /api/v1/models` lists those six models as free.

#[path = "../tests/support/fake.rs"]
mod fake;

use std::time::Duration;

use fake::{Reply, Step};

const SHORT: &str = "bench/short:free";
const LONG: &str = "bench/long:free";
const BUSY: [&str; 3] = [
    "bench/busy-1:free",
    "bench/busy-2:free",
    "bench/busy-3:free",
];
const HANG: &str = "bench/hang:free";

/// SSE events coalesced into one chunk write for the long answer.
const EVENTS_PER_WRITE: usize = 250;

const WORDS: &[&str] = &[
    "The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ".",
    " Streaming",
    " tokens",
    " arrive",
    " one",
    " by",
    " one",
    ",",
    " fast",
    " and",
    " steady",
];

fn pieces(n: usize) -> Vec<&'static str> {
    WORDS.iter().copied().cycle().take(n).collect()
}

/// Joins consecutive `Send` steps into writes of at most `per_write` steps each. Every
/// step is a whole SSE event, so the framing is unchanged.
fn coalesce(steps: Vec<Step>, per_write: usize) -> Vec<Step> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut n = 0;
    for step in steps {
        match step {
            Step::Send(s) => {
                buf.push_str(&s);
                n += 1;
                if n == per_write {
                    out.push(Step::Send(std::mem::take(&mut buf)));
                    n = 0;
                }
            }
            other => {
                if !buf.is_empty() {
                    out.push(Step::Send(std::mem::take(&mut buf)));
                    n = 0;
                }
                out.push(other);
            }
        }
    }
    if !buf.is_empty() {
        out.push(Step::Send(buf));
    }
    out
}

fn catalog() -> Reply {
    let mut entries: Vec<serde_json::Value> = [SHORT, LONG, HANG]
        .iter()
        .chain(BUSY.iter())
        .map(|id| fake::model_entry(id, "0", Some(32768), &["text"], &["max_tokens"]))
        .collect();
    entries.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    fake::catalog(entries)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .map(|a| a.parse().expect("PORT: a number from 0 to 65535"))
        .unwrap_or(0);
    let limit = Duration::from_secs(
        args.next()
            .map(|a| a.parse().expect("LIMIT_SECS: a whole number of seconds"))
            .unwrap_or(300),
    );

    // Built once; each request gets a clone.
    let models = catalog();
    let short = fake::answer(SHORT, &pieces(20));
    let long = Reply::stream(coalesce(
        fake::answer_steps(LONG, &pieces(2000)),
        EVENTS_PER_WRITE,
    ));
    let busy: Vec<(&str, Reply)> = BUSY.iter().map(|m| (*m, fake::upstream_429(m))).collect();
    let hang = Reply::stream(vec![
        Step::Send(": OPENROUTER PROCESSING\n\n".into()),
        Step::Hang,
    ]);

    let server = fake::serve_standalone("fake_openrouter", port, move |r| {
        if r.method == "GET" && r.path == "/api/v1/models" {
            return models.clone();
        }
        if r.method != "POST" || r.path != "/api/v1/chat/completions" {
            return fake::error_json(404, "Not Found");
        }
        let model = r.model();
        match model.as_str() {
            SHORT => short.clone(),
            LONG => long.clone(),
            HANG => hang.clone(),
            m => match busy.iter().find(|(id, _)| *id == m) {
                Some((_, reply)) => reply.clone(),
                None => fake::error_json(400, &format!("{m} is not a valid model ID")),
            },
        }
    });

    fake::wait_for_limit_or_stdin_eof(limit);
    drop(server);
}
