//! freeroute: answer a prompt with a free LLM, falling back across free models and
//! providers. Data flows one way (DESIGN §7):
//!
//! ```text
//! cli + config ─▶ request ─▶ plan (filter, rank) ─▶ attempt (wire: client, sse) ─▶ outcome ─▶ output + state
//! ```
//!
//! `app` calls the stages in that order; policy (filter, rank, classify, decay) is pure.

pub mod app;
pub mod attempt;
pub mod batch;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod discover;
pub mod error;
pub mod input;
pub mod limiter;
pub mod outcome;
pub mod output;
pub mod plan;
pub mod presets;
pub mod providers;
pub mod request;
pub mod secret;
pub mod state;
pub mod wire;

/// The length of a "minute" quota window in ms: 60,000, or `FREEROUTE_WINDOW_MS` so that
/// tests and simulations can scale per-minute limits down to seconds.
pub fn minute_ms() -> u64 {
    static MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MS.get_or_init(|| {
        std::env::var("FREEROUTE_WINDOW_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v| v > 0)
            .unwrap_or(60_000)
    })
}

/// Unix milliseconds on the clock of the memory (cool-downs, fading counts, quota
/// windows): the wall clock, unless `FREEROUTE_NOW_MS` sets it at start-up. Tests pin it
/// there; with `FREEROUTE_CLOCK_RATE=R` as well it runs R times as fast as the wall clock
/// from there on (bench/fleet.sh puts the memory on its fleet's faster time scale so).
pub fn now_ms() -> u64 {
    if let Some(ms) = set_now_ms() {
        let ran = started().elapsed().as_secs_f64() * 1000.0;
        return ms + (ran * clock_rate().unwrap_or(0.0)) as u64;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long `ms` of the memory's clock (`now_ms`) last on the wall clock: the time to
/// sleep until a moment of that clock.
pub fn wall_time(ms: u64) -> std::time::Duration {
    let rate = clock_rate()
        .filter(|_| set_now_ms().is_some())
        .unwrap_or(1.0);
    std::time::Duration::from_secs_f64(ms as f64 / 1000.0 / rate)
}

fn set_now_ms() -> Option<u64> {
    std::env::var("FREEROUTE_NOW_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
}

fn clock_rate() -> Option<f64> {
    std::env::var("FREEROUTE_CLOCK_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r > 0.0)
}

fn started() -> std::time::Instant {
    static AT: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *AT.get_or_init(std::time::Instant::now)
}
