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
pub mod clock;
pub mod config;
pub mod discover;
pub mod error;
pub mod health;
pub mod input;
pub mod limiter;
pub mod outcome;
pub mod output;
pub mod plan;
pub mod presets;
pub mod providers;
pub mod request;
pub mod secret;
pub mod session;
pub mod settings;
pub mod store;
pub mod wire;

pub use clock::{minute_ms, now_ms, wall_time};
