//! Run-level errors, in the shape of jj's `cli/src/command_error.rs`: a kind from DESIGN §4
//! (which picks the exit code: the only table of exit codes lives here), a message, the
//! source chain of what caused it, hints for the user, and the attempts made before the
//! run gave up. Modules below the command line return their own typed errors
//! (`wire::client::ClientError`, `providers::BaseUrlError`, `request::SchemaError`,
//! `batch::jsonl::LineError`, `store::StoreError`, …); the `From` impls at the bottom turn
//! them into an `Error` of the right kind at the boundary. `output::Printer::error` is the
//! one place an `Error` is printed, and `Error::exit_code` the one place its code is picked.
//! A failed *attempt* is never an `Err` (see `outcome.rs`); `Err` is for the run as a whole.

use serde::Serialize;

use crate::outcome::AttemptRecord;

/// What went wrong with the run as a whole; serialized as `error.kind` in `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Usage,
    Input,
    Config,
    NoEligibleModel,
    AllFailed,
    Deadline,
    Interrupted,
    Internal,
}

impl ErrorKind {
    /// The exit code of DESIGN §4 for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Internal => 1,
            ErrorKind::Usage | ErrorKind::Input => 2,
            ErrorKind::NoEligibleModel => 3,
            ErrorKind::AllFailed => 4,
            ErrorKind::Deadline => 5,
            ErrorKind::Config => 6,
            ErrorKind::Interrupted => 130,
        }
    }
}

/// What caused an error: any error type, kept whole (not as text) so a caller can still
/// ask what it was.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A run-level failure. `Display` is the message alone; [`Error::full_message`] follows
/// the source chain; the hints are printed below it, one a line.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    #[source]
    source: Option<Source>,
    pub hints: Vec<String>,
    /// Attempts made before the run failed (empty for errors found before routing).
    pub attempts: Vec<AttemptRecord>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
            hints: Vec::new(),
            attempts: Vec::new(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// What caused it; printed after the message as `message: cause: its cause`.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// One more thing the user can do about it (printed on a line of its own).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    pub fn with_attempts(mut self, attempts: Vec<AttemptRecord>) -> Self {
        self.attempts = attempts;
        self
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }

    /// The message and every cause after it, on one line: `Cannot read image a.png: No
    /// such file or directory (os error 2)`. What both the plain and the `--json` output
    /// show; a cause whose text the message already ends with is not repeated.
    pub fn full_message(&self) -> String {
        let mut line = self.message.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.is_empty() && !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        line
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::internal("I/O error").with_source(e)
    }
}

impl From<crate::wire::client::ClientError> for Error {
    fn from(e: crate::wire::client::ClientError) -> Self {
        use crate::wire::client::ClientError;
        match e {
            ClientError::CaFile { .. } => Error::config(e.to_string())
                .with_hint("Point `[network] ca_file` at a PEM file of CA certificates"),
            ClientError::Build(_) => Error::internal("Cannot make network requests").with_source(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(ErrorKind::Usage.exit_code(), 2);
        assert_eq!(ErrorKind::Input.exit_code(), 2);
        assert_eq!(ErrorKind::NoEligibleModel.exit_code(), 3);
        assert_eq!(ErrorKind::AllFailed.exit_code(), 4);
        assert_eq!(ErrorKind::Deadline.exit_code(), 5);
        assert_eq!(ErrorKind::Config.exit_code(), 6);
        assert_eq!(ErrorKind::Interrupted.exit_code(), 130);
        assert_eq!(ErrorKind::Internal.exit_code(), 1);
    }

    #[test]
    fn the_full_message_follows_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot build the HTTP client")]
        struct Outer(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no CA file");
        let err = Error::config("Cannot start").with_source(Outer(io));
        assert_eq!(
            err.full_message(),
            "Cannot start: cannot build the HTTP client: no CA file"
        );
        assert_eq!(err.to_string(), "Cannot start");
        assert_eq!(err.exit_code(), 6);
        let io = std::error::Error::source(&err)
            .and_then(|c| c.source())
            .and_then(|c| c.downcast_ref::<std::io::Error>())
            .expect("the cause is kept whole, not as text");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn hints_accumulate_in_order() {
        let err = Error::usage("bad").with_hint("first").with_hint("second");
        assert_eq!(err.hints, ["first", "second"]);
    }

    #[test]
    fn kinds_serialize_as_design_strings() {
        let s = serde_json::to_string(&ErrorKind::NoEligibleModel).unwrap();
        assert_eq!(s, "\"no_eligible_model\"");
    }
}
