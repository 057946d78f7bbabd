//! `GET /metrics` (DESIGN §8): counters and histograms of this server's requests and
//! attempts, and each provider's remaining quota, in Prometheus' text format. Labels carry
//! names only: never a key, a prompt or an answer.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hyper::Method;

use crate::outcome::AttemptRecord;
use crate::session::Session;

/// Bucket bounds, in seconds, of both histograms.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: BTreeMap<(&'static str, u16), u64>,
    attempts: BTreeMap<(String, String, &'static str), u64>,
    first_token: Histogram,
    request: Histogram,
}

/// The endpoint label of a request: one of the served paths, else `other`.
pub fn endpoint(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => "/v1/chat/completions",
        (&Method::POST, "/v1/messages") => "/v1/messages",
        (&Method::POST, "/v1/messages/count_tokens") => "/v1/messages/count_tokens",
        (&Method::GET, "/v1/models") => "/v1/models",
        (&Method::GET, "/healthz") => "/healthz",
        (&Method::GET, "/metrics") => "/metrics",
        _ => "other",
    }
}

impl Metrics {
    pub fn request(&mut self, endpoint: &'static str, status: u16, took: Duration) {
        *self.requests.entry((endpoint, status)).or_default() += 1;
        if matches!(endpoint, "/v1/chat/completions" | "/v1/messages") {
            self.request.observe(took.as_secs_f64());
        }
    }

    pub fn attempts(&mut self, attempts: &[AttemptRecord]) {
        for a in attempts {
            *self
                .attempts
                .entry((a.provider.clone(), a.model.clone(), a.outcome.as_str()))
                .or_default() += 1;
        }
    }

    pub fn first_token(&mut self, ms: Option<u64>) {
        if let Some(ms) = ms {
            self.first_token.observe(ms as f64 / 1000.0);
        }
    }

    pub fn render(&self, session: &Session, in_flight: usize, waiting: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP freeroute_requests_in_flight Chat requests being answered now.\n\
             # TYPE freeroute_requests_in_flight gauge\nfreeroute_requests_in_flight {in_flight}\n\
             # HELP freeroute_requests_waiting Chat requests waiting for --max-concurrency.\n\
             # TYPE freeroute_requests_waiting gauge\nfreeroute_requests_waiting {waiting}"
        );
        out += "# HELP freeroute_requests_total Requests answered, by endpoint and HTTP status.\n\
                # TYPE freeroute_requests_total counter\n";
        for ((e, s), n) in &self.requests {
            let _ = writeln!(
                out,
                "freeroute_requests_total{{endpoint=\"{e}\",status=\"{s}\"}} {n}"
            );
        }
        out += "# HELP freeroute_attempts_total Attempts sent upstream, by provider, model and outcome.\n\
                # TYPE freeroute_attempts_total counter\n";
        for ((p, m, o), n) in &self.attempts {
            let _ = writeln!(
                out,
                "freeroute_attempts_total{{provider=\"{}\",model=\"{}\",outcome=\"{o}\"}} {n}",
                escape(p),
                escape(m)
            );
        }
        self.first_token.render(
            "freeroute_first_token_seconds",
            "Time from sending to the answering attempt's first token.",
            &mut out,
        );
        self.request.render(
            "freeroute_request_seconds",
            "Time to answer a chat request, to its last byte queued.",
            &mut out,
        );
        out += "# HELP freeroute_quota_remaining Requests a provider's known window has left.\n\
                # TYPE freeroute_quota_remaining gauge\n";
        let now = crate::now_ms();
        let health = session.health();
        for p in &session.providers {
            let Some(s) = health.providers.get(&p.name) else {
                continue;
            };
            let minute = s
                .per_minute
                .map(|n| n.saturating_sub(s.requests_this_minute(now)));
            let day = s
                .day_limit
                .or(s.per_day)
                .map(|n| n.saturating_sub(s.requests_today(now)));
            for (window, left) in [("minute", minute), ("day", day)] {
                if let Some(left) = left {
                    let _ = writeln!(
                        out,
                        "freeroute_quota_remaining{{provider=\"{}\",window=\"{window}\"}} {left}",
                        escape(&p.name)
                    );
                }
            }
        }
        out
    }
}

/// A label value as Prometheus' text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
