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

/// Wall-clock Unix milliseconds. `FREEROUTE_NOW_MS` pins it (tests control the clock
/// through it instead of sleeping).
pub fn now_ms() -> u64 {
    if let Some(ms) = std::env::var("FREEROUTE_NOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return ms;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
