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
pub mod catalog;
pub mod cli;
pub mod config;
pub mod discover;
pub mod error;
pub mod input;
pub mod outcome;
pub mod output;
pub mod plan;
pub mod presets;
pub mod providers;
pub mod request;
pub mod secret;
pub mod state;
pub mod wire;

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
