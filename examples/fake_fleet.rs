//! A scripted fleet of 20 free models behind one OpenAI-compatible endpoint on 127.0.0.1,
//! for `bench/fleet.sh`, built on the integration tests' fake server
//! (`tests/support/fake.rs`).
//!
//! Usage: `fake_fleet [PORT] [LIMIT_SECS] [SEED] [RETRY_SCALE] [PROFILE]`, or
//! `fake_fleet --describe [PROFILE]` (prints the model table as Markdown and exits), or
//! `fake_fleet --fates [PROFILE] [SEED] [N]` (prints what chance decides for prompts 1..N
//! on every model, and exits; see below). PROFILE is `base` (the default) or `heavy`.
//! RETRY_SCALE (default 1) multiplies the
//! seconds in a quota 429's `Retry-After`, for a client whose clock runs that many times
//! faster than the wall clock (bench/fleet.sh's clock ×10 phases), so that the hint means
//! the same wait on its clock as the fleet's quota window does on the wall clock. PORT 0 (the default) picks a free port; the chosen
//! port is the first line on stdout. The server exits after LIMIT_SECS (default 900), or as
//! soon as its stdin closes when stdin is a pipe (so a parent that dies, even by SIGKILL,
//! takes the server with it); on the way out it prints one JSON line of counters (per
//! model: requests and what each got) on stdout.
//!
//! Each model has its own latency distribution (log-normal time to first token, a heavy
//! tail, for some a chance to hang for seconds before answering), its own failure rates
//! (upstream-pool 429, 500, an error chunk in the middle of a 200 stream), a quota (more
//! than N requests in the last `QUOTA_WINDOW` answer 429) and, for two, an outage that
//! comes back periodically (500s). Latencies are scaled down about tenfold from real free
//! models so that 500 prompts finish in minutes.
//!
//! Two profiles of the same 20 models. `base` is the fleet above. `heavy` adds what real
//! free models do on a bad day: four of the fast models a router is drawn to (m08, m12,
//! m17, m18) take 2 s × a Pareto draw (shape 1.5, at most 20 s) for 20, 15, 12 and 8% of
//! their first tokens; m04 and m13 hang for 12 and 15 s and m14 for 30 s (4%), past a 10 s
//! deadline, so those never answer in time; and m01, m05 and m11 are a slow class, their
//! first token 2, 1.5 and 1.2 s as a rule (σ 0.3). The models it leaves alone meet the same
//! fates in both profiles.
//!
//! Repeatable: the fate of a request (failure or not, latencies) is drawn from a PRNG seeded
//! by SEED, the model and the prompt text, so the same prompt sent to the same model gets
//! the same fate in every run, whichever client sends it. Only the quota and the outages
//! depend on time (since the server started) and on the traffic so far. The draws are
//! always the same, in the same order, whatever they decide (the heavy profile's come after
//! the base fleet's, which are unchanged). `--fates` prints, per prompt (the text
//! `fleet prompt %04d: answer in one line`, as bench/fleet.sh sends it) and model, the fate
//! (`answer`, `hang`, `pool_429`, `error_500`, `mid_stream`), the first token's time and the
//! time until the body ends on an idle server (the sleeps of the stream the server sends), in
//! ms, as TSV: what `bench/fleet_oracle.py` plays its clairvoyant client on.
//!
//! `GET /api/v1/models` lists the 20 models as free (`pricing.prompt == "0"`); chat is
//! `POST /api/v1/chat/completions`, always streamed.

#[path = "../tests/support/fake.rs"]
mod fake;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fake::{Reply, Step};

/// A model answers 429 once it accepted `quota` requests in this window.
const QUOTA_WINDOW: Duration = Duration::from_secs(5);
/// Tokens in every answer, sent `PER_CHUNK` to an SSE event.
const TOKENS: usize = 30;
const PER_CHUNK: usize = 5;

/// A periodic outage: down (HTTP 500) from `start` to `start + len` seconds of every
/// `period` seconds since the server started.
#[derive(Debug, Clone, Copy)]
struct Outage {
    start: u64,
    len: u64,
    period: u64,
}

#[derive(Debug, Clone, Copy)]
struct Profile {
    id: &'static str,
    /// Age, for the catalog's `created`.
    days_old: u64,
    /// Median time to first token, ms, and the log-normal spread.
    ttft_ms: f64,
    sigma: f64,
    /// Chance that the first token is 3 to 10 times later than drawn (the heavy tail).
    tail: f64,
    /// Chance that the model hangs `hang_ms` before its first token (then answers, if the
    /// client is still there: a hang longer than the client's deadline never answers in time).
    hang: f64,
    hang_ms: u64,
    /// Chance that the first token takes `PARETO_BASE_MS` × a Pareto draw (shape
    /// `PARETO_ALPHA`, scale 1) instead, at most `PARETO_CAP_MS`: the heavy profile's tail.
    pareto: f64,
    /// Generation speed once started.
    tokens_per_sec: f64,
    /// Chances of an upstream-pool 429, of a 500, and of an error chunk half-way.
    p429: f64,
    p500: f64,
    mid: f64,
    /// Requests accepted per `QUOTA_WINDOW` before the model answers 429.
    quota: usize,
    outage: Option<Outage>,
}

const fn model(id: &'static str, days_old: u64, ttft_ms: f64, sigma: f64) -> Profile {
    Profile {
        id,
        days_old,
        ttft_ms,
        sigma,
        tail: 0.02,
        hang: 0.0,
        hang_ms: 0,
        pareto: 0.0,
        tokens_per_sec: 500.0,
        p429: 0.03,
        p500: 0.01,
        mid: 0.01,
        quota: 10,
        outage: None,
    }
}

/// The heavy profile's tail: the first token after 2 s × a Pareto draw of shape 1.5, at
/// most 20 s (the median of such a draw is 3.2 s, one in ten is past 9.3 s).
const PARETO_BASE_MS: f64 = 2000.0;
const PARETO_ALPHA: f64 = 1.5;
const PARETO_CAP_MS: f64 = 20_000.0;

/// The base fleet: big models are busier and more often slow, as on OpenRouter's free tier;
/// latencies are not a simple function of size (mixture-of-experts models are fast).
const FLEET: [Profile; 20] = [
    Profile {
        tail: 0.05,
        hang: 0.02,
        hang_ms: 4000,
        tokens_per_sec: 150.0,
        p429: 0.25,
        p500: 0.02,
        mid: 0.02,
        quota: 4,
        ..model("fleet/m01-405b:free", 200, 380.0, 0.5)
    },
    Profile {
        tail: 0.04,
        tokens_per_sec: 300.0,
        p429: 0.15,
        p500: 0.03,
        mid: 0.02,
        quota: 5,
        ..model("fleet/m02-235b-a22b:free", 90, 180.0, 0.5)
    },
    Profile {
        tail: 0.03,
        tokens_per_sec: 400.0,
        p429: 0.10,
        p500: 0.02,
        quota: 6,
        ..model("fleet/m03-120b:free", 120, 120.0, 0.4)
    },
    Profile {
        hang: 0.06,
        hang_ms: 6000,
        tokens_per_sec: 300.0,
        p429: 0.10,
        p500: 0.02,
        quota: 8,
        ..model("fleet/m04-70b:free", 400, 160.0, 0.4)
    },
    Profile {
        tail: 0.10,
        tokens_per_sec: 200.0,
        p429: 0.05,
        p500: 0.02,
        quota: 8,
        ..model("fleet/m05-70b:free", 300, 400.0, 0.9)
    },
    Profile {
        tokens_per_sec: 300.0,
        p429: 0.05,
        p500: 0.15,
        mid: 0.05,
        quota: 10,
        ..model("fleet/m06-49b:free", 250, 250.0, 0.5)
    },
    Profile {
        tokens_per_sec: 400.0,
        p429: 0.08,
        p500: 0.02,
        outage: Some(Outage {
            start: 40,
            len: 30,
            period: 120,
        }),
        quota: 8,
        ..model("fleet/m07-32b:free", 150, 140.0, 0.4)
    },
    Profile {
        tokens_per_sec: 600.0,
        p429: 0.05,
        quota: 10,
        ..model("fleet/m08-30b-a3b:free", 100, 60.0, 0.3)
    },
    Profile {
        tokens_per_sec: 400.0,
        p429: 0.06,
        quota: 10,
        ..model("fleet/m09-27b:free", 350, 120.0, 0.4)
    },
    Profile {
        tokens_per_sec: 450.0,
        p429: 0.05,
        p500: 0.02,
        mid: 0.03,
        quota: 12,
        ..model("fleet/m10-24b:free", 200, 110.0, 0.4)
    },
    Profile {
        tail: 0.05,
        tokens_per_sec: 350.0,
        p429: 0.04,
        p500: 0.02,
        quota: 12,
        ..model("fleet/m11-22b:free", 500, 200.0, 0.6)
    },
    Profile {
        tokens_per_sec: 600.0,
        quota: 15,
        ..model("fleet/m12-14b:free", 300, 70.0, 0.3)
    },
    Profile {
        hang: 0.08,
        hang_ms: 8000,
        quota: 15,
        ..model("fleet/m13-12b:free", 250, 80.0, 0.4)
    },
    Profile {
        tokens_per_sec: 700.0,
        p429: 0.04,
        quota: 15,
        ..model("fleet/m14-9b:free", 400, 60.0, 0.3)
    },
    Profile {
        tokens_per_sec: 800.0,
        outage: Some(Outage {
            start: 80,
            len: 40,
            period: 150,
        }),
        quota: 20,
        ..model("fleet/m15-8b:free", 450, 50.0, 0.3)
    },
    Profile {
        tokens_per_sec: 800.0,
        p429: 0.02,
        quota: 20,
        ..model("fleet/m16-8b:free", 600, 45.0, 0.3)
    },
    Profile {
        tokens_per_sec: 800.0,
        p429: 0.02,
        p500: 0.02,
        quota: 20,
        ..model("fleet/m17-7b:free", 650, 40.0, 0.3)
    },
    Profile {
        tokens_per_sec: 900.0,
        p429: 0.02,
        quota: 25,
        ..model("fleet/m18-4b:free", 300, 30.0, 0.3)
    },
    Profile {
        tokens_per_sec: 1000.0,
        p429: 0.02,
        quota: 30,
        ..model("fleet/m19-3b:free", 500, 25.0, 0.3)
    },
    Profile {
        tokens_per_sec: 1000.0,
        p429: 0.01,
        quota: 30,
        ..model("fleet/m20-1b:free", 700, 20.0, 0.2)
    },
];

/// Which fleet the server plays: the same 20 models, with `Heavy` tails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Base,
    Heavy,
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s {
            "base" => Kind::Base,
            "heavy" => Kind::Heavy,
            other => panic!("PROFILE: base or heavy, not {other:?}"),
        }
    }

    /// The base fleet as it is, or the heavy one: four of the fast models a router is drawn
    /// to get a Pareto tail of first tokens (8–20% of them take 2 s × Pareto(1.5), at most
    /// 20 s), three models hang past a 10 s deadline now and then (they never answer in
    /// time), and three big ones are a slow class (first token 1.2–2 s as a rule).
    fn fleet(self) -> [Profile; 20] {
        let mut f = FLEET;
        if self == Kind::Base {
            return f;
        }
        let mut set = |id: &str, change: &dyn Fn(&mut Profile)| {
            change(
                f.iter_mut()
                    .find(|p| p.id == id)
                    .expect("a model of the base fleet"),
            )
        };
        // Heavy tails on fast models.
        set("fleet/m08-30b-a3b:free", &|p| p.pareto = 0.20);
        set("fleet/m12-14b:free", &|p| p.pareto = 0.15);
        set("fleet/m17-7b:free", &|p| p.pareto = 0.12);
        set("fleet/m18-4b:free", &|p| p.pareto = 0.08);
        // Hangs past the deadline.
        set("fleet/m04-70b:free", &|p| p.hang_ms = 12_000);
        set("fleet/m13-12b:free", &|p| p.hang_ms = 15_000);
        set("fleet/m14-9b:free", &|p| {
            p.hang = 0.04;
            p.hang_ms = 30_000;
        });
        // The slow class.
        set("fleet/m01-405b:free", &|p| {
            p.ttft_ms = 2000.0;
            p.sigma = 0.3;
        });
        set("fleet/m05-70b:free", &|p| {
            p.ttft_ms = 1500.0;
            p.sigma = 0.3;
        });
        set("fleet/m11-22b:free", &|p| {
            p.ttft_ms = 1200.0;
            p.sigma = 0.3;
        });
        f
    }
}

const WORDS: &[&str] = &[
    "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".",
];

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Outage,
    Quota,
    Pool429,
    Error500,
    /// A complete answer: first token after `ttft`, `hung` when it came from a hang.
    Answer {
        ttft: Duration,
        hung: bool,
    },
    /// An error chunk after half of the answer.
    MidStream {
        ttft: Duration,
    },
}

impl Fate {
    fn name(self) -> &'static str {
        match self {
            Fate::Outage => "outage_500",
            Fate::Quota => "quota_429",
            Fate::Pool429 => "pool_429",
            Fate::Error500 => "error_500",
            Fate::Answer { hung: true, .. } => "hang_then_answer",
            Fate::Answer { .. } => "answer",
            Fate::MidStream { .. } => "mid_stream_error",
        }
    }
}

/// FNV-1a: a hash that is the same on every platform and Rust version.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The request's fate as far as chance decides it (no quota, no outage).
fn draw(p: &Profile, seed: u64, prompt: &str) -> Fate {
    let mut rng = fastrand::Rng::with_seed(fnv1a(&[
        &seed.to_le_bytes(),
        p.id.as_bytes(),
        prompt.as_bytes(),
    ]));
    // Always the same draws in the same order, whatever they decide.
    let u_fail = rng.f64();
    let (u1, u2) = (rng.f64().max(f64::MIN_POSITIVE), rng.f64());
    let u_tail = rng.f64();
    let tail_mult = 3.0 + 7.0 * rng.f64();
    let u_hang = rng.f64();
    let u_mid = rng.f64();
    // Drawn after the base fleet's draws, so that its fates are the same as before.
    let u_pareto = rng.f64();
    let pareto_mult = (1.0 - rng.f64()).powf(-1.0 / PARETO_ALPHA);

    if u_fail < p.p429 {
        return Fate::Pool429;
    }
    if u_fail < p.p429 + p.p500 {
        return Fate::Error500;
    }
    // Box-Muller: a standard normal draw.
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let mut ms = p.ttft_ms * (p.sigma * z).exp();
    if u_tail < p.tail {
        ms *= tail_mult;
    }
    if u_pareto < p.pareto {
        ms = (PARETO_BASE_MS * pareto_mult).min(PARETO_CAP_MS);
    }
    let hung = u_hang < p.hang;
    if hung {
        ms = p.hang_ms as f64;
    }
    let ttft = Duration::from_secs_f64(ms / 1000.0);
    if u_mid < p.mid {
        Fate::MidStream { ttft }
    } else {
        Fate::Answer { ttft, hung }
    }
}

/// The last user message's text: what seeds a request's fate.
fn prompt_of(r: &fake::Request) -> String {
    let v = r.json();
    let Some(msgs) = v["messages"].as_array() else {
        return String::new();
    };
    msgs.iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// Pieces of `PER_CHUNK` words each, `TOKENS` words in all.
fn pieces() -> Vec<String> {
    let words: Vec<&str> = WORDS.iter().copied().cycle().take(TOKENS).collect();
    words.chunks(PER_CHUNK).map(|c| c.concat()).collect()
}

fn stream(p: &Profile, ttft: Duration, broken: bool) -> Reply {
    Reply::stream(stream_steps(p, ttft, broken))
}

/// The body of a streamed answer (`broken`: an error chunk after half of it), step by step.
fn stream_steps(p: &Profile, ttft: Duration, broken: bool) -> Vec<Step> {
    let gap = Duration::from_secs_f64(PER_CHUNK as f64 / p.tokens_per_sec);
    let pieces = pieces();
    let shown = if broken {
        pieces.len() / 2
    } else {
        pieces.len()
    };
    let mut steps = vec![
        Step::Send(": OPENROUTER PROCESSING\n\n".into()),
        Step::Sleep(ttft),
        Step::Send(fake::chunk(
            p.id,
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        )),
    ];
    for (i, piece) in pieces[..shown].iter().enumerate() {
        if i > 0 {
            steps.push(Step::Sleep(gap));
        }
        steps.push(Step::Send(fake::chunk(
            p.id,
            serde_json::json!({"role": "assistant", "content": piece}),
            None,
        )));
    }
    if broken {
        steps.push(Step::Sleep(gap));
        let err = serde_json::json!({
            "id": "gen-fleet", "object": "chat.completion.chunk", "created": 1768896871, "model": p.id,
            "error": {"code": 502, "message": "Provider disconnected mid-stream", "metadata": {"error_type": "provider_unavailable"}},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
        });
        steps.push(Step::Send(format!("data: {err}\n\n")));
        steps.push(Step::Send("data: [DONE]\n\n".into()));
        return steps;
    }
    steps.push(Step::Send(fake::chunk(
        p.id,
        serde_json::json!({"role": "assistant", "content": ""}),
        Some("stop"),
    )));
    let usage = serde_json::json!({
        "id": "gen-fleet", "model": p.id, "object": "chat.completion.chunk", "created": 1768896871,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}],
        "usage": {"prompt_tokens": 12, "completion_tokens": TOKENS, "total_tokens": 12 + TOKENS}
    });
    steps.push(Step::Send(format!("data: {usage}\n\n")));
    steps.push(Step::Send("data: [DONE]\n\n".into()));
    steps
}

/// How long the server takes to send the whole body: its sleeps, on an idle server.
fn body_time(steps: &[Step]) -> Duration {
    steps
        .iter()
        .map(|s| match s {
            Step::Sleep(d) => *d,
            _ => Duration::ZERO,
        })
        .sum()
}

fn quota_429(p: &Profile, retry_after_s: u64) -> Reply {
    let body = serde_json::json!({"error": {"message": format!("Rate limit exceeded: limit_rpm/{}", p.id), "code": 429,
        "metadata": {"raw": format!("{} is rate-limited: {} requests per {} s", p.id, p.quota, QUOTA_WINDOW.as_secs()),
        "provider_name": "Fleet", "is_byok": false}}});
    Reply::json_with(
        429,
        &[("retry-after", &retry_after_s.to_string())],
        body.to_string(),
    )
}

fn catalog(fleet: &[Profile], now_s: u64) -> Reply {
    let entries = fleet
        .iter()
        .map(|p| {
            let mut e = fake::model_entry(
                p.id,
                "0",
                Some(32768),
                &["text"],
                &["max_tokens", "temperature"],
            );
            e["created"] = serde_json::json!(now_s.saturating_sub(p.days_old * 86_400));
            e
        })
        .collect();
    fake::catalog(entries)
}

/// Per model, how many requests got each fate.
type Counters = BTreeMap<&'static str, BTreeMap<&'static str, u64>>;

struct World {
    started: Instant,
    /// Per model, when it accepted its recent requests (for the quota).
    accepted: HashMap<&'static str, VecDeque<Instant>>,
    counters: Counters,
}

impl World {
    fn fate(&mut self, p: &Profile, seed: u64, prompt: &str) -> (Fate, u64) {
        let now = Instant::now();
        let since = now.duration_since(self.started).as_secs();
        let fate = if p
            .outage
            .is_some_and(|o| (since % o.period) >= o.start && (since % o.period) < o.start + o.len)
        {
            (Fate::Outage, 0)
        } else {
            let q = self.accepted.entry(p.id).or_default();
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= QUOTA_WINDOW)
            {
                q.pop_front();
            }
            if q.len() >= p.quota {
                let free_at = *q.front().expect("quota > 0") + QUOTA_WINDOW;
                (
                    Fate::Quota,
                    free_at.duration_since(now).as_secs_f64().ceil() as u64,
                )
            } else {
                q.push_back(now);
                (draw(p, seed, prompt), 0)
            }
        };
        let c = self.counters.entry(p.id).or_default();
        *c.entry("requests").or_default() += 1;
        *c.entry(fate.0.name()).or_default() += 1;
        fate
    }
}

fn describe(kind: Kind) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "| model | first token median | spread (σ) | slow tail | Pareto tail | hangs | tokens/s | 429 (pool) | 500 | error mid-stream | quota per {} s | outage |",
        QUOTA_WINDOW.as_secs()
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"
    );
    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    for p in &kind.fleet() {
        let hang = if p.hang > 0.0 {
            format!("{} for {} s", pct(p.hang), p.hang_ms / 1000)
        } else {
            "-".into()
        };
        let pareto = if p.pareto > 0.0 {
            format!(
                "{} {:.0} s × Pareto({}), ≤ {:.0} s",
                pct(p.pareto),
                PARETO_BASE_MS / 1000.0,
                PARETO_ALPHA,
                PARETO_CAP_MS / 1000.0
            )
        } else {
            "-".into()
        };
        let outage = p.outage.map_or("-".into(), |o| {
            format!(
                "500s from {} s to {} s of every {} s",
                o.start,
                o.start + o.len,
                o.period
            )
        });
        let _ = writeln!(
            out,
            "| `{}` | {:.0} ms | {:.1} | {} ×3–10 | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            p.id,
            p.ttft_ms,
            p.sigma,
            pct(p.tail),
            pareto,
            hang,
            p.tokens_per_sec,
            pct(p.p429),
            pct(p.p500),
            pct(p.mid),
            p.quota,
            outage
        );
    }
}

/// `--fates`: for prompts 1..=n as bench/fleet.sh sends them and every model, the fate chance
/// draws (quota and outages aside: they depend on the traffic and the clock) and the time
/// from the request to the end of the body on an idle server, in ms (for a failure: until
/// the failure is sent). TSV with a header line.
fn fates(kind: Kind, seed: u64, n: u32) {
    let fleet = kind.fleet();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let _ = writeln!(out, "prompt\tmodel\tfate\tfirst_token_ms\tdone_ms");
    for i in 1..=n {
        let prompt = format!("fleet prompt {i:04}: answer in one line");
        for p in &fleet {
            let (name, ttft, done) = match draw(p, seed, &prompt) {
                Fate::Pool429 => ("pool_429", None, Duration::ZERO),
                Fate::Error500 => ("error_500", None, Duration::ZERO),
                Fate::Answer { ttft, hung } => (
                    if hung { "hang" } else { "answer" },
                    Some(ttft),
                    body_time(&stream_steps(p, ttft, false)),
                ),
                Fate::MidStream { ttft } => (
                    "mid_stream",
                    Some(ttft),
                    body_time(&stream_steps(p, ttft, true)),
                ),
                Fate::Outage | Fate::Quota => unreachable!("draw decides neither"),
            };
            let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
            let _ = writeln!(
                out,
                "{i}\t{}\t{name}\t{}\t{}",
                p.id,
                ttft.map_or("-".into(), ms),
                ms(done)
            );
        }
    }
    let _ = out.flush();
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let kind_arg = |a: Option<String>| a.as_deref().map_or(Kind::Base, Kind::parse);
    if args.peek().is_some_and(|a| a == "--describe") {
        args.next();
        describe(kind_arg(args.next()));
        return;
    }
    if args.peek().is_some_and(|a| a == "--fates") {
        args.next();
        let kind = kind_arg(args.next());
        let seed = args
            .next()
            .map_or(1, |a| a.parse().expect("SEED: a whole number"));
        let n = args
            .next()
            .map_or(500, |a| a.parse().expect("N: a whole number of prompts"));
        fates(kind, seed, n);
        return;
    }
    let port: u16 = args
        .next()
        .map(|a| a.parse().expect("PORT: a number from 0 to 65535"))
        .unwrap_or(0);
    let limit = Duration::from_secs(
        args.next()
            .map(|a| a.parse().expect("LIMIT_SECS: a whole number of seconds"))
            .unwrap_or(900),
    );
    let seed: u64 = args
        .next()
        .map(|a| a.parse().expect("SEED: a whole number"))
        .unwrap_or(1);
    let retry_scale: u64 = args
        .next()
        .map(|a| a.parse().expect("RETRY_SCALE: a whole number"))
        .unwrap_or(1);
    let fleet: &'static [Profile; 20] = Box::leak(Box::new(kind_arg(args.next()).fleet()));

    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let models = catalog(fleet, now_s);
    let world = Arc::new(Mutex::new(World {
        started: Instant::now(),
        accepted: HashMap::new(),
        counters: BTreeMap::new(),
    }));
    let w = world.clone();
    let server = fake::serve_standalone("fake_fleet", port, move |r| {
        if r.method == "GET" && r.path == "/api/v1/models" {
            return models.clone();
        }
        if r.method != "POST" || r.path != "/api/v1/chat/completions" {
            return fake::error_json(404, "Not Found");
        }
        let model = r.model();
        let Some(p) = fleet.iter().find(|p| p.id == model) else {
            return fake::error_json(400, &format!("{model} is not a valid model ID"));
        };
        let (fate, retry_after) = w.lock().expect("world lock").fate(p, seed, &prompt_of(r));
        match fate {
            Fate::Outage => fake::error_json(500, "Internal Server Error (upstream outage)"),
            Fate::Quota => quota_429(p, retry_after * retry_scale),
            Fate::Pool429 => fake::upstream_429(p.id),
            Fate::Error500 => fake::error_json(500, "Internal Server Error"),
            Fate::Answer { ttft, .. } => stream(p, ttft, false),
            Fate::MidStream { ttft } => stream(p, ttft, true),
        }
    });

    fake::wait_for_limit_or_stdin_eof(limit);

    let mut aborted: BTreeMap<String, u64> = BTreeMap::new();
    for m in server.aborted() {
        *aborted.entry(m).or_default() += 1;
    }
    let counters = world.lock().expect("world lock").counters.clone();
    let summary = serde_json::json!({"models": counters, "client_left_stream": aborted});
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{summary}");
    let _ = out.flush();
    drop(out);
    drop(server);
}
