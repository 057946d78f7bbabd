//! Fake rate-limited providers on 127.0.0.1 for `bench/batch.sh`, built on the integration
//! tests' fake server (`tests/support/fake.rs`).
//!
//! Usage: `fake_limited [PORT] [LIMIT_SECS] [WINDOW_MS] [NAME=LIMIT]...`. PORT 0 (the
//! default) picks a free port; the chosen port is the first line on stdout. WINDOW_MS
//! (default 1000) is the length of each provider's window; the providers default to
//! `p20=20 p10=10 p5=5`. The server exits after LIMIT_SECS (default 300), or as soon as its
//! stdin closes when stdin is a pipe (so a parent that dies, even by SIGKILL, takes the
//! server with it). On the way out it prints one JSON line on stdout: per provider, the
//! requests, the answers, the largest number of requests seen in any window, and every
//! violation (a request that made more than LIMIT requests within WINDOW_MS).
//!
//! Each provider NAME is served under `/NAME/v1`: `POST /NAME/v1/chat/completions` answers
//! a short streamed reply after 2 to 6 ms, or HTTP 429 when the request is over the limit
//! (counted as a violation: all requests count, answered or not, as a strict provider
//! would). `GET /NAME/v1/models` lists one model, `m1`.
//!
//! With `FAKE_LIMITED_TIMES=FILE` in the environment, every arrival is also written to
//! FILE on the way out, one `NAME MS` line each (ms since the server started).
//!
//! Requests are counted in a sliding window: on arrival at time t, the requests that
//! arrived in (t - WINDOW_MS, t], this one included, must be at most LIMIT. The largest
//! such count over all arrivals is the largest count of any window of that length.

#[path = "../tests/support/fake.rs"]
mod fake;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake::{Reply, Step};

/// Violations listed in full per provider (all are counted).
const LISTED_VIOLATIONS: usize = 20;

/// One provider's limit and what it saw.
#[derive(Debug)]
struct Counter {
    limit: usize,
    /// Arrival times (ms since the server started) within the last window.
    recent: VecDeque<f64>,
    requests: u64,
    answered: u64,
    /// The largest count in any window.
    max_in_window: usize,
    violations: u64,
    /// (arrival ms, requests in the window ending then), the first few.
    listed: Vec<(f64, usize)>,
    first_ms: Option<f64>,
    last_ms: f64,
    /// Every arrival (ms since the server started), for `FAKE_LIMITED_TIMES`.
    all: Vec<f64>,
}

impl Counter {
    fn new(limit: usize) -> Counter {
        Counter {
            limit,
            recent: VecDeque::new(),
            requests: 0,
            answered: 0,
            max_in_window: 0,
            violations: 0,
            listed: Vec::new(),
            first_ms: None,
            last_ms: 0.0,
            all: Vec::new(),
        }
    }

    /// Counts a request arriving at `t` ms; true when it stays within the limit.
    fn arrive(&mut self, t: f64, window_ms: f64) -> bool {
        while self.recent.front().is_some_and(|&a| a <= t - window_ms) {
            self.recent.pop_front();
        }
        self.recent.push_back(t);
        self.requests += 1;
        self.first_ms.get_or_insert(t);
        self.last_ms = t;
        self.all.push(t);
        let n = self.recent.len();
        self.max_in_window = self.max_in_window.max(n);
        if n > self.limit {
            self.violations += 1;
            if self.listed.len() < LISTED_VIOLATIONS {
                self.listed.push((t, n));
            }
            return false;
        }
        self.answered += 1;
        true
    }

    fn report(&self) -> serde_json::Value {
        let span = self.first_ms.map_or(0.0, |f| self.last_ms - f);
        serde_json::json!({
            "limit": self.limit,
            "requests": self.requests,
            "answered": self.answered,
            "max_in_window": self.max_in_window,
            "violations": self.violations,
            "violations_listed": self.listed.iter()
                .map(|(t, n)| serde_json::json!({"at_ms": round(*t), "in_window": n}))
                .collect::<Vec<_>>(),
            "first_ms": self.first_ms.map(round),
            "last_ms": round(self.last_ms),
            "span_ms": round(span),
        })
    }
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

fn usage(why: &str) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "fake_limited: {why}\nusage: fake_limited [PORT] [LIMIT_SECS] [WINDOW_MS] [NAME=LIMIT]..."
    );
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(0, |a| {
        a.parse()
            .unwrap_or_else(|_| usage("PORT: a number from 0 to 65535"))
    });
    let limit = Duration::from_secs(args.next().map_or(300, |a| {
        a.parse()
            .unwrap_or_else(|_| usage("LIMIT_SECS: a whole number of seconds"))
    }));
    let window_ms: f64 = args.next().map_or(1000.0, |a| {
        a.parse::<u64>()
            .unwrap_or_else(|_| usage("WINDOW_MS: a whole number of milliseconds")) as f64
    });
    let mut providers: BTreeMap<String, Counter> = BTreeMap::new();
    for a in args {
        let Some((name, n)) = a.split_once('=') else {
            usage("providers are NAME=LIMIT");
        };
        let n: usize = n
            .parse()
            .unwrap_or_else(|_| usage("LIMIT: a whole number of requests"));
        if name.is_empty() || name.contains('/') || n == 0 {
            usage("NAME must be a path segment, LIMIT at least 1");
        }
        providers.insert(name.to_string(), Counter::new(n));
    }
    if providers.is_empty() {
        for (name, n) in [("p20", 20), ("p10", 10), ("p5", 5)] {
            providers.insert(name.to_string(), Counter::new(n));
        }
    }

    let started = Instant::now();
    let counters = Arc::new(Mutex::new(providers));
    let seen = counters.clone();
    let server = fake::serve_standalone("fake_limited", port, move |r| {
        let t = started.elapsed().as_secs_f64() * 1000.0;
        let Some((name, rest)) = r.path.trim_start_matches('/').split_once('/') else {
            return fake::error_json(404, "Not Found");
        };
        if r.method == "GET" && rest == "v1/models" && seen.lock().unwrap().contains_key(name) {
            let entry = fake::model_entry("m1", "0", Some(8192), &["text"], &["max_tokens"]);
            return fake::catalog(vec![entry]);
        }
        if r.method != "POST" || rest != "v1/chat/completions" {
            return fake::error_json(404, "Not Found");
        }
        let within = match seen.lock().unwrap().get_mut(name) {
            Some(c) => c.arrive(t, window_ms),
            None => return fake::error_json(404, "Not Found"),
        };
        if !within {
            return fake::error_json(429, "Rate limit exceeded: requests per window");
        }
        let mut steps = vec![Step::Sleep(Duration::from_millis(fastrand::u64(2..=6)))];
        steps.extend(fake::answer_steps(&r.model(), &["ok", " from ", name]));
        Reply::stream(steps)
    });

    fake::wait_for_limit_or_stdin_eof(limit);
    drop(server);

    let counters = counters.lock().unwrap();
    if let Some(path) = std::env::var_os("FAKE_LIMITED_TIMES") {
        let mut text = String::new();
        for (name, c) in counters.iter() {
            for t in &c.all {
                text.push_str(&format!("{name} {t:.3}\n"));
            }
        }
        if let Err(e) = std::fs::write(&path, text) {
            let _ = writeln!(std::io::stderr(), "fake_limited: cannot write times: {e}");
        }
    }
    let per: serde_json::Map<String, serde_json::Value> = counters
        .iter()
        .map(|(name, c)| (name.clone(), c.report()))
        .collect();
    let report = serde_json::json!({
        "window_ms": window_ms,
        "requests": counters.values().map(|c| c.requests).sum::<u64>(),
        "violations": counters.values().map(|c| c.violations).sum::<u64>(),
        "providers": per,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{report}");
    let _ = out.flush();
}
