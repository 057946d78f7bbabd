//! freeroute: answer a prompt with a free LLM, falling back across free models and
//! providers. Data flows one way (DESIGN §7):
//!
//! ```text
//! cli + config ─▶ settings ─▶ request ─▶ session: plan (filter, rank) ─▶ attempt (wire) ─▶ record
//!                                                                   └─▶ outcome ─▶ output
//! ```
//!
//! `settings` resolves every setting once; `session` is the one ask path that a single run
//! (`app`), each `batch` item and each `serve` request share; policy (filter, rank, classify, `health`) is pure.

pub mod app;
pub mod attempt;
pub mod batch;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod discover;
pub mod error;
pub mod health;
pub mod input;
pub mod limiter;
pub mod manual;
pub mod outcome;
pub mod output;
pub mod plan;
pub mod presets;
pub mod providers;
pub mod request;
pub mod secret;
pub mod serve;
pub mod session;
pub mod settings;
pub mod store;
pub mod wire;

pub use clock::{from_ms_f64, later, minute_ms, now_ms, wall_time};
