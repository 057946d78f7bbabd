//! Where the health model (`health::Health`) is kept between runs (DESIGN §5, §9): behind
//! the `Store` trait, so that the shared store (`redis.rs`) takes the file's place without
//! the plan or the attempts knowing. A run reads one snapshot before planning, reserves
//! each request in its provider's windows just before sending it, and makes one update
//! when it is done; no lock is ever held across network I/O. What stays on this host
//! whatever the store (conversations, the request log) is in `file.rs`.

pub mod file;
pub mod redis;

use crate::health::Health;
use crate::providers::Limits;

pub use file::{FileStore, LogCounts, write_atomic};
pub use redis::{RedisStore, open};

/// `stats --reset [--shared]`: forgets this host's memory (its state, request log and
/// conversations), or, with `shared`, the shared memory's; returns what was forgotten.
pub fn forget(
    memory: &crate::settings::Memory,
    providers: &[crate::providers::Provider],
    shared: bool,
) -> crate::error::Result<String> {
    use crate::error::Error;
    let host = FileStore::new(file::state_dir());
    if !shared {
        host.reset()
            .map_err(|e| Error::internal("Cannot reset the state").with_source(e))?;
        return Ok("Forgot all remembered health, latency, cool-downs, quotas, the request log and the conversations kept for --continue".into());
    }
    let url = memory.redis_url.as_ref().ok_or_else(|| {
        Error::usage(format!(
            "No shared memory to reset: {} is not set",
            memory.url_env
        ))
    })?;
    let store = RedisStore::connect(memory, url, providers, host)
        .map_err(|(why, _)| Error::config(format!("Cannot reach the shared memory: {why}")))?;
    store
        .reset()
        .map_err(|e| Error::config("Cannot reset the shared memory").with_source(e))?;
    Ok(format!(
        "Forgot the shared health, cool-downs, quotas and windows at {}",
        store.location().unwrap_or_default()
    ))
}

/// One request about to be sent: it is counted in every window of its provider before it
/// goes (DESIGN §9 "reserve, then send"), atomically with every other process sharing the
/// store, so that all of them together never exceed the provider's limits. The presets
/// know no per-model window (a model's own limit is learned softly, for ranking), so the
/// windows are the provider's: the sliding minute and the provider's day, with the daily
/// limit the provider stated in a 429 in place of the documented one.
#[derive(Debug, Clone, Copy)]
pub struct Reservation<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    /// The documented (or configured) limits.
    pub limits: Limits,
    /// When the provider's day starts (`Provider::day_offset_ms`).
    pub day_offset_ms: i64,
    pub now_ms: u64,
}

/// What a reservation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Counted: send it.
    Taken,
    /// A window (or a block) of the provider is full until then: send nothing there.
    Full { until_ms: u64 },
}

/// Why the store could not be read or written; the run goes on without memory.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The health model's home.
pub trait Store {
    /// The health as last written, read without a lock (the shared store's as read when
    /// it was opened). An unreadable file reads as fresh (it is set aside by the next
    /// `update`).
    fn snapshot(&self) -> Health;

    /// Applies `change` atomically with every other process (the file's lock, Redis's
    /// compare-and-set), with the run's line for this host's request log; returns notes
    /// for the user and the health as written: the file store's includes other runs'
    /// updates, the shared store's those to the entries this run changed.
    fn update(
        &self,
        change: &mut dyn FnMut(&mut Health),
        log_line: Option<&str>,
    ) -> Result<(Vec<String>, Health), StoreError>;

    /// Reserves the request in every window of its provider. A store that cannot be
    /// reached never costs the answer: the reservation is then `Taken` and the fault is
    /// told by the next `update`.
    fn reserve(&self, r: &Reservation) -> Reserved;

    /// Forgets the health (the file store also its request log and conversations).
    fn reset(&self) -> Result<(), StoreError>;

    /// Where it lives, for `stats` (`None`: nowhere, the run has no memory).
    fn location(&self) -> Option<String>;
}
