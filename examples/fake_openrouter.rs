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
//! `GET /api/v1/models` lists those six models as free; with `FAKE_CATALOG_PAD=N`, also N
//! paid filler models (about 1 MB for N = 1,500, as OpenRouter's catalog), sent gzipped
//! when the request accepts gzip (as OpenRouter does).

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

/// The catalog's JSON, with `pad` paid filler models after the six free ones.
fn catalog(pad: usize) -> String {
    let mut entries: Vec<serde_json::Value> = [SHORT, LONG, HANG]
        .iter()
        .chain(BUSY.iter())
        .map(|id| fake::model_entry(id, "0", Some(32768), &["text"], &["max_tokens"]))
        .collect();
    entries.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    // Prose descriptions, as the real catalog has, so that it compresses as the real one
    // does (to a few times smaller), not fifty times.
    let mut rng = fastrand::Rng::with_seed(18);
    let vocabulary: Vec<String> = (0..4000)
        .map(|_| {
            let n = rng.usize(2..10);
            (0..n).map(|_| rng.lowercase()).collect()
        })
        .collect();
    entries.extend((0..pad).map(|i| {
        let mut e = fake::model_entry(
            &format!("vendor-{}/filler-model-{i}-instruct", i % 60),
            "0.0000012",
            Some(131072),
            &["text", "image"],
            &[
                "max_tokens",
                "temperature",
                "top_p",
                "tools",
                "tool_choice",
                "stop",
                "seed",
            ],
        );
        let words: Vec<&str> = (0..45)
            .map(|_| vocabulary[rng.usize(..vocabulary.len())].as_str())
            .collect();
        e["description"] = words.join(" ").into();
        e
    }));
    serde_json::json!({ "data": entries }).to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip in memory");
    e.finish().expect("gzip in memory")
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
    let pad = std::env::var("FAKE_CATALOG_PAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let list = catalog(pad);
    let models = Reply::json(200, list.clone());
    let models_gz = Reply::Binary {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("content-encoding".into(), "gzip".into()),
        ],
        body: gzip(list.as_bytes()),
    };
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
            let gz = r
                .header("accept-encoding")
                .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
            return if gz {
                models_gz.clone()
            } else {
                models.clone()
            };
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
