//! A load generator for `bench/serve.sh`: sends streamed chat requests to an
//! OpenAI-compatible URL on loopback and reports latency and throughput as one JSON line.
//!
//! Usage: `bench_client URL MODEL REQUESTS CONCURRENCY [TOKEN]`. Each request is
//! `{"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "hi"}]}`, read
//! to its end; a response that is not 200 or lacks `[DONE]` counts as an error. Requests are
//! bounded by REQUESTS and each by a 120 s timeout, so a run always ends.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: bench_client URL MODEL REQUESTS CONCURRENCY [TOKEN]");
        std::process::exit(2);
    }
    let url = args[1].clone();
    let model = args[2].clone();
    let total: usize = args[3].parse().expect("REQUESTS is a number");
    let conc: usize = args[4].parse().expect("CONCURRENCY is a number");
    let token = args.get(5).cloned().unwrap_or_else(|| "sk-bench".into());
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "loopback URLs only: {url}"
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(conc)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a client");
    let body = format!(
        "{{\"model\":\"{model}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}"
    );
    let one = |client: reqwest::Client, url: String, body: String, token: String| async move {
        let started = Instant::now();
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .await;
        let ok = match resp {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) => b.windows(6).any(|w| w == b"[DONE]"),
                Err(_) => false,
            },
            _ => false,
        };
        (ok, started.elapsed())
    };
    let started = Instant::now();
    let mut running = FuturesUnordered::new();
    let mut launched = 0;
    let mut times = Vec::with_capacity(total);
    let mut errors = 0usize;
    while launched < total || !running.is_empty() {
        while launched < total && running.len() < conc {
            running.push(one(
                client.clone(),
                url.clone(),
                body.clone(),
                token.clone(),
            ));
            launched += 1;
        }
        if let Some((ok, took)) = running.next().await {
            if ok {
                times.push(took);
            } else {
                errors += 1;
            }
        }
    }
    let wall = started.elapsed();
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"requests\":{total},\"concurrency\":{conc},\"ok\":{},\"errors\":{errors},\"median_ms\":{:.3},\"p90_ms\":{:.3},\"wall_s\":{:.3},\"per_s\":{:.1}}}",
        times.len(),
        pct(0.5),
        pct(0.9),
        wall.as_secs_f64(),
        times.len() as f64 / wall.as_secs_f64()
    );
}
