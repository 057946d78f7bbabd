//! Where the health model (`health::Health`) is kept between runs (DESIGN §5): behind the
//! `Store` trait, so that a shared store (DESIGN §9) can take the file's place without the
//! plan or the attempts knowing. A run reads one snapshot before planning and makes one
//! update under the store's lock when it is done; no lock is ever held across network I/O.
//! What stays on this host whatever the store (conversations, the request log) is in
//! `file.rs` too.

pub mod file;

use crate::health::Health;

pub use file::{FileStore, LogCounts, write_atomic};

/// Why the store could not be read or written; the run goes on without memory.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The health model's home.
pub trait Store {
    /// The health as last written, read without a lock. An unreadable copy reads as
    /// fresh (it is set aside by the next `update`).
    fn snapshot(&self) -> Health;

    /// Read-modify-write under the store's lock, written atomically, with the run's line
    /// for the request log; returns notes for the user and the health as written (other
    /// runs' updates included).
    fn update(
        &self,
        change: &mut dyn FnMut(&mut Health),
        log_line: Option<&str>,
    ) -> Result<(Vec<String>, Health), StoreError>;

    /// Forgets the health (the file store also its request log and conversations).
    fn reset(&self) -> Result<(), StoreError>;

    /// Where it lives, for `stats` (`None`: nowhere, the run has no memory).
    fn location(&self) -> Option<String>;
}
