//! Run-level errors: a kind from DESIGN §4, a message, an optional hint, and the attempts
//! made before the run gave up. The only table of exit codes lives here (DESIGN §4).
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

/// A run-level failure. `Display` is the one-line message; the hint is printed below it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// Attempts made before the run failed (empty for errors found before routing).
    pub attempts: Vec<AttemptRecord>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
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

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_attempts(mut self, attempts: Vec<AttemptRecord>) -> Self {
        self.attempts = attempts;
        self
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::internal(format!("I/O error: {e}"))
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
    fn kinds_serialize_as_design_strings() {
        let s = serde_json::to_string(&ErrorKind::NoEligibleModel).unwrap();
        assert_eq!(s, "\"no_eligible_model\"");
    }
}
