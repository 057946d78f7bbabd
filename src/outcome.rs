//! What a run produced: each attempt's outcome and the answer. The `Serialize` impls here
//! are the `--json` shape of DESIGN §4, so field names must match it exactly.

use serde::Serialize;

use crate::wire::openai::Usage;

/// The outcome of one attempt (DESIGN §4 `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Ok,
    RateLimited,
    QuotaExhausted,
    AuthFailed,
    PaymentRequired,
    CapabilityMissing,
    PolicyBlocked,
    ContextTooLong,
    ServerError,
    Timeout,
    ConnectionFailed,
    StreamInterrupted,
    EmptyAnswer,
    InvalidAnswer,
    BadRequest,
    Moderated,
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::RateLimited => "rate_limited",
            AttemptOutcome::QuotaExhausted => "quota_exhausted",
            AttemptOutcome::AuthFailed => "auth_failed",
            AttemptOutcome::PaymentRequired => "payment_required",
            AttemptOutcome::CapabilityMissing => "capability_missing",
            AttemptOutcome::PolicyBlocked => "policy_blocked",
            AttemptOutcome::ContextTooLong => "context_too_long",
            AttemptOutcome::ServerError => "server_error",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::ConnectionFailed => "connection_failed",
            AttemptOutcome::StreamInterrupted => "stream_interrupted",
            AttemptOutcome::EmptyAnswer => "empty_answer",
            AttemptOutcome::InvalidAnswer => "invalid_answer",
            AttemptOutcome::BadRequest => "bad_request",
            AttemptOutcome::Moderated => "moderated",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

/// One attempt as `--json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub provider: String,
    pub model: String,
    pub outcome: AttemptOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    /// Completion tokens per second of a successful attempt, for the memory.
    #[serde(skip)]
    pub tokens_per_sec: Option<f64>,
    /// When this model (or its provider, see `provider_wide`) may be tried again, Unix ms.
    #[serde(skip)]
    pub retry_at_ms: Option<u64>,
    /// The failure concerns every model of the provider (quota, key, balance, policy).
    #[serde(skip)]
    pub provider_wide: bool,
    /// The request's estimated size (prompt and output reserve), kept for an answer and for
    /// a `context_too_long`, so that the model's limit is learned and never set below what
    /// it answered.
    #[serde(skip)]
    pub context_tokens: Option<u64>,
    /// Which piece of a split translation this attempt served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub piece: Option<usize>,
    /// The provider's daily request limit, when its quota reply stated it.
    #[serde(skip)]
    pub day_limit: Option<u32>,
    /// A 429 that a limit on our own request rate explains (`Failure::own_rate_limit`).
    #[serde(skip)]
    pub own_rate_limit: bool,
    /// The capability a `capability_missing` attempt showed the model lacks.
    #[serde(skip)]
    pub missing: Option<crate::catalog::Capability>,
    /// A `context_too_long` attempt's sizes in the server's own tokens, when it said them.
    #[serde(skip)]
    pub counted: crate::attempt::classify::TokenCount,
    /// The catalog entry (`Model::entry`) the attempt was planned on: what it teaches holds
    /// for that entry, and is forgotten when the entry changes (DESIGN §5).
    #[serde(skip)]
    pub catalog_entry: Option<String>,
    /// Sent to a server on this machine (a loopback base URL): what it teaches is believed
    /// for an hour, not a day (DESIGN §5).
    #[serde(skip)]
    pub local: bool,
    /// A `cancelled` attempt that had no first token by its patience (the next candidate
    /// was started beside it, and won): its first token takes at least `elapsed_ms`.
    #[serde(skip)]
    pub overtaken: bool,
}

impl AttemptRecord {
    /// An attempt with its outcome and nothing else known yet.
    pub fn new(provider: &str, model: &str, outcome: AttemptOutcome, elapsed_ms: u64) -> Self {
        AttemptRecord {
            provider: provider.to_string(),
            model: model.to_string(),
            outcome,
            status: None,
            error: None,
            elapsed_ms,
            first_token_ms: None,
            tokens_per_sec: None,
            retry_at_ms: None,
            provider_wide: false,
            day_limit: None,
            piece: None,
            context_tokens: None,
            own_rate_limit: false,
            missing: None,
            counted: Default::default(),
            catalog_entry: None,
            local: false,
            overtaken: false,
        }
    }

    /// A race or hedge loser, dropped when another candidate produced a token first.
    pub fn cancelled(provider: &str, model: &str, elapsed: std::time::Duration) -> Self {
        Self::new(
            provider,
            model,
            AttemptOutcome::Cancelled,
            elapsed.as_millis() as u64,
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub first_token_ms: Option<u64>,
    pub total_ms: u64,
}

/// A successful run.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub ok: bool,
    pub content: String,
    pub model: String,
    pub provider: String,
    pub finish_reason: Option<String>,
    pub tool_calls: Vec<serde_json::Value>,
    pub usage: Option<Usage>,
    pub timing: Timing,
    /// Present (and true) only when a paid model answered under `--allow-paid`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paid: bool,
    /// The model and provider of each piece, when a long translation was split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pieces: Option<Vec<Piece>>,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Piece {
    pub model: String,
    pub provider: String,
}

/// The `--json` answer of a run: one success, or the pieces of a split translation.
pub fn answer(
    successes: &[crate::attempt::Success],
    attempts: Vec<AttemptRecord>,
    total_ms: u64,
) -> Answer {
    let first = &successes[0];
    let usage = successes
        .iter()
        .filter_map(|s| s.usage.clone())
        .reduce(|mut a, b| {
            a.prompt_tokens += b.prompt_tokens;
            a.completion_tokens += b.completion_tokens;
            a.total_tokens += b.total_tokens;
            a
        });
    Answer {
        ok: true,
        content: successes
            .iter()
            .map(|s| s.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n"),
        model: first.model.clone(),
        provider: first.provider.clone(),
        finish_reason: successes.last().and_then(|s| s.finish_reason.clone()),
        tool_calls: successes
            .iter()
            .flat_map(|s| s.tool_calls.clone())
            .collect(),
        usage,
        timing: Timing {
            first_token_ms: first.first_token_ms,
            total_ms,
        },
        paid: successes.iter().any(|s| s.paid),
        pieces: (successes.len() > 1).then(|| {
            successes
                .iter()
                .map(|s| Piece {
                    model: s.model.clone(),
                    provider: s.provider.clone(),
                })
                .collect()
        }),
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_match_design() {
        for o in [
            AttemptOutcome::QuotaExhausted,
            AttemptOutcome::StreamInterrupted,
            AttemptOutcome::Ok,
        ] {
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                serde_json::Value::String(o.as_str().into())
            );
        }
    }
}
