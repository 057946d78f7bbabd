//! Reads a failed reply into a `Failure` following the table of DESIGN §3, with the facts of
//! `reference/openrouter.md` §1.5–§1.6 (two kinds of 429, moderation 403, capability vs
//! data-policy 404, epoch-millisecond resets). Pure: the clock comes in as `now_ms`.

use serde_json::Value;

use crate::catalog::Capability;
use crate::outcome::AttemptOutcome;
use crate::providers::Dialect;
use crate::wire::openai::{WireError, parse_error_body};

/// The least time a model that failed transiently is left alone (DESIGN §3).
pub const MIN_COOLDOWN_MS: u64 = 30_000;
/// How long a provider whose account blocks free models by data policy is left alone.
pub const POLICY_BLOCK_MS: u64 = 3_600_000;

/// A classified failure: what it was, whether it hits the whole provider, and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub outcome: AttemptOutcome,
    pub provider_wide: bool,
    /// Unix ms until which the model (or provider, when `provider_wide`) should be skipped.
    pub retry_at_ms: Option<u64>,
    pub message: String,
    /// The provider's daily request limit, when a daily-quota 429 states it.
    pub day_limit: Option<u32>,
    /// A 429 that a limit on this caller's request rate explains: not a pool shared with
    /// every other user (OpenRouter's upstream), which says nothing about how much we may
    /// send, nor a daily or token limit. The memory learns the model's limit from it.
    pub own_rate_limit: bool,
    /// When the server said to come back (`Retry-After` and kin), as it said it: the
    /// cool-down (`retry_at_ms`) may be longer.
    pub hint_ms: Option<u64>,
    /// With `capability_missing`: the capability the model lacks, when known. The memory
    /// remembers the miss by this value, never by the message's words.
    pub missing: Option<Capability>,
    /// With `context_too_long`: the server's own token counts, when its error gives them.
    pub counted: TokenCount,
}

/// What a context-length refusal says in the server's own tokens: llama.cpp's
/// `n_prompt_tokens` and `n_ctx`, OpenRouter's "maximum context length is N tokens …
/// you requested about M tokens". Each bounded to `MAX_COUNTED_TOKENS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCount {
    /// The model's context, as the server counts it.
    pub limit: Option<u64>,
    /// The refused request's size, as the server counts it.
    pub requested: Option<u64>,
}

/// No model has a context of a billion tokens; a larger count is not believed.
pub const MAX_COUNTED_TOKENS: u64 = 1_000_000_000;

impl TokenCount {
    /// Reads the counts off a refusal: llama.cpp's fields first, else the message's words.
    pub fn of(body: &[u8], message: &str) -> TokenCount {
        let err = serde_json::from_slice::<Value>(body)
            .ok()
            .map(|v| v["error"].clone())
            .unwrap_or_default();
        let field = |k: &str| err[k].as_u64();
        let lower = message.to_ascii_lowercase();
        let said = |phrases: &[&str]| phrases.iter().find_map(|p| number_after(&lower, p));
        let bounded = |n: Option<u64>| n.filter(|&n| n > 0 && n <= MAX_COUNTED_TOKENS);
        TokenCount {
            limit: bounded(field("n_ctx").or_else(|| {
                said(&[
                    "context size (",
                    "context length is ",
                    "context window is ",
                    "context length of ",
                ])
            })),
            requested: bounded(field("n_prompt_tokens").or_else(|| {
                said(&[
                    "request (",
                    "requested about ",
                    "you requested ",
                    "resulted in ",
                ])
            })),
        }
    }
}

/// The number (digits, maybe with thousands commas) right after `phrase` in `text`.
fn number_after(text: &str, phrase: &str) -> Option<u64> {
    let rest = &text[text.find(phrase)? + phrase.len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .take(12)
        .collect();
    digits.parse().ok()
}

/// The headers that matter for classification, already read off the response.
#[derive(Debug, Default, Clone)]
pub struct RetryHeaders {
    pub retry_after: Option<String>,
    pub retry_after_ms: Option<String>,
    pub ratelimit_reset: Option<String>,
    pub ratelimit_limit: Option<String>,
}

impl Failure {
    fn new(outcome: AttemptOutcome, message: String) -> Self {
        Failure {
            outcome,
            provider_wide: false,
            retry_at_ms: None,
            message,
            day_limit: None,
            hint_ms: None,
            own_rate_limit: false,
            missing: None,
            counted: TokenCount::default(),
        }
    }
    fn lacking(mut self) -> Self {
        self.missing = capability_named(&self.message);
        self
    }
    fn provider(mut self) -> Self {
        self.provider_wide = true;
        self
    }
    fn until(mut self, at: Option<u64>) -> Self {
        self.retry_at_ms = at;
        self
    }
}

/// Which capability a "No endpoints found that support …" message names (reference §1.5).
pub fn capability_named(message: &str) -> Option<Capability> {
    let m = message.to_ascii_lowercase();
    if m.contains("image") {
        Some(Capability::Vision)
    } else if m.contains("tool") {
        Some(Capability::Tools)
    } else if m.contains("response_format") || m.contains("structured") || m.contains("json") {
        Some(Capability::Schema)
    } else {
        None
    }
}

/// Classifies a non-200 HTTP reply.
pub fn classify_http(status: u16, headers: &RetryHeaders, body: &[u8], now_ms: u64) -> Failure {
    use AttemptOutcome::*;
    let err = parse_error_body(body);
    let message = describe(status, err.as_ref(), body);
    let meta = err.as_ref().and_then(|e| e.metadata.as_ref());
    let lower = searchable(&message, meta);
    let retry_hint = retry_at(headers, meta, now_ms);
    let cooldown = Some(
        retry_hint
            .unwrap_or(now_ms + MIN_COOLDOWN_MS)
            .max(now_ms + MIN_COOLDOWN_MS),
    );
    let mut failure = match status {
        429 if is_free_quota(&lower) => {
            // Without a reset time, the minute window is the shortest the quota can be.
            let until = retry_hint.unwrap_or(now_ms + 60_000);
            let mut f = Failure::new(QuotaExhausted, message)
                .provider()
                .until(Some(until));
            if lower.contains("per-day") || lower.contains("daily") {
                let limit = header_value(
                    headers.ratelimit_limit.as_deref(),
                    meta,
                    "X-RateLimit-Limit",
                );
                f.day_limit = limit.and_then(|v| v.trim().parse().ok());
            }
            f
        }
        // The server's Retry-After as it is (DESIGN §3); a repeat once it ran out backs off
        // from 30 s, and without a hint the memory backs off from 30 s (`health::backoff`).
        429 => Failure {
            own_rate_limit: !is_shared_pool(&lower, meta) && !names_other_limit(&lower),
            ..Failure::new(RateLimited, message).until(retry_hint)
        },
        401 => Failure::new(AuthFailed, message).provider(),
        403 if meta
            .is_some_and(|m| m.get("reasons").is_some() || m.get("flagged_input").is_some()) =>
        {
            Failure::new(Moderated, message)
        }
        403 => Failure::new(AuthFailed, message).provider(),
        402 => Failure::new(PaymentRequired, message)
            .provider()
            .until(retry_hint),
        404 if lower.contains("data policy") || lower.contains("guardrail") => {
            Failure::new(PolicyBlocked, message)
                .provider()
                .until(Some(now_ms + POLICY_BLOCK_MS))
        }
        404 if lower.contains("no endpoints found") => {
            Failure::new(CapabilityMissing, message).lacking()
        }
        // llama.cpp answers an image to a text-only model with a 500; waiting will not help.
        400 | 500 if is_missing_vision(&lower) => Failure {
            missing: Some(Capability::Vision),
            ..Failure::new(CapabilityMissing, message)
        },
        400 | 413 if is_context_error(&lower) => Failure {
            counted: TokenCount::of(body, &message),
            ..Failure::new(ContextTooLong, message)
        },
        413 => Failure {
            counted: TokenCount::of(body, &message),
            ..Failure::new(ContextTooLong, message)
        },
        400 | 404 | 422 => Failure::new(BadRequest, message),
        300..=399 => Failure::new(
            ServerError,
            format!("{message} (redirects are not followed)"),
        )
        .until(cooldown),
        _ => Failure::new(ServerError, message).until(cooldown),
    };
    failure.hint_ms = retry_hint;
    failure
}

/// What a reply's rate-limit headers say about the provider's request quota: until when
/// it is used up, when a window shows no requests left (reference §0 item 20). Read on
/// every reply, successful or not.
pub fn quota_from_headers(
    dialect: Dialect,
    get: &dyn Fn(&str) -> Option<String>,
    now_ms: u64,
) -> Option<(u64, String)> {
    let zero = |name: &str| {
        get(name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|n| n <= 0.0)
    };
    let reset = |name: &str, fallback_ms: u64| {
        get(name)
            .and_then(|v| duration_ms(&v))
            .unwrap_or(fallback_ms)
            .clamp(1000, LONGEST_WAIT_MS)
    };
    let (remaining, reset_name, window, fallback) = match dialect {
        Dialect::OpenRouter => return None,
        Dialect::Groq => (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "requests today",
            3_600_000,
        ),
        Dialect::Cerebras => {
            if zero("x-ratelimit-remaining-tokens-minute") {
                let ms = reset("x-ratelimit-reset-tokens-minute", 60_000);
                return Some((now_ms + ms, "no tokens left this minute".into()));
            }
            (
                "x-ratelimit-remaining-requests-day",
                "x-ratelimit-reset-requests-day",
                "requests today",
                3_600_000,
            )
        }
        Dialect::Mistral => (
            "x-ratelimit-remaining-req-minute",
            "x-ratelimit-reset-req-minute",
            "requests this minute",
            60_000,
        ),
        Dialect::Generic => (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "requests",
            60_000,
        ),
    };
    zero(remaining).then(|| {
        (
            now_ms.saturating_add(reset(reset_name, fallback)),
            format!("no {window} left (rate-limit headers)"),
        )
    })
}

/// `2m59.56s`, `7.66s`, `1h2m`, `120ms`, or plain seconds.
pub fn duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Some((secs.max(0.0) * 1000.0).round() as u64);
    }
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = t.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                0.001
            }
            ('h', _) => 3600.0,
            ('m', _) => 60.0,
            ('s', _) => 1.0,
            _ => return None,
        };
        total += n * unit;
        any = true;
    }
    (any && num.is_empty()).then(|| (total * 1000.0).round() as u64)
}

/// Classifies an `error` object that arrived inside an HTTP 200 reply (a chunk or the body).
/// DESIGN §3: such an error is a `server_error` of this model.
pub fn classify_embedded(err: &WireError, now_ms: u64) -> Failure {
    let code = match &err.code {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let mut message = err
        .message
        .clone()
        .unwrap_or_else(|| "error inside the answer stream".into());
    if !code.is_empty() {
        message = format!("{message} (code {code})");
    }
    Failure::new(AttemptOutcome::ServerError, message).until(Some(now_ms + MIN_COOLDOWN_MS))
}

/// OpenRouter relays an upstream provider's 429 (reference §3.3): a pool shared with every
/// user of that provider, whatever we sent.
fn is_shared_pool(lower: &str, meta: Option<&Value>) -> bool {
    lower.contains("upstream")
        || lower.contains("provider returned error")
        || meta.is_some_and(|m| m.get("provider_code").is_some())
}

/// A 429 whose text names a daily or token limit rather than a request rate.
fn names_other_limit(lower: &str) -> bool {
    ["per day", "per-day", "daily", "token"]
        .iter()
        .any(|w| lower.contains(w))
}

fn is_missing_vision(lower: &str) -> bool {
    [
        "image input is not supported",
        "does not support image",
        "images are not supported",
        "vision is not supported",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

fn is_free_quota(lower: &str) -> bool {
    lower.contains("free-models-per") || lower.contains("openrouter_free_tier")
}

fn is_context_error(lower: &str) -> bool {
    [
        "context length",
        "context_length",
        "context window",
        "maximum context",
        "context size",
        "exceed_context",
        "too many tokens",
        "prompt is too long",
        "too long",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// The human message: `error.message`, plus upstream detail (`metadata.raw`) when it is text.
fn describe(status: u16, err: Option<&WireError>, body: &[u8]) -> String {
    let text = match err {
        Some(e) => {
            let mut m = e.message.clone().unwrap_or_default();
            if let Some(raw) = e
                .metadata
                .as_ref()
                .and_then(|m| m.get("raw"))
                .and_then(Value::as_str)
                && !raw.is_empty()
            {
                m = format!("{m}: {raw}");
            }
            m
        }
        // The whole (bounded) body: it is redacted, then shortened, where it is shown.
        None => String::from_utf8_lossy(body).trim().to_string(),
    };
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        text
    }
}

/// The message and the metadata fields that carry a classification, lower-cased.
fn searchable(message: &str, meta: Option<&Value>) -> String {
    let mut s = message.to_ascii_lowercase();
    if let Some(m) = meta {
        for key in ["limit_source", "error_type", "provider_code"] {
            if let Some(v) = m.get(key).and_then(Value::as_str) {
                s.push(' ');
                s.push_str(&v.to_ascii_lowercase());
            }
        }
    }
    s
}

/// A rate-limit header, from the response or from `metadata.headers` of the body.
fn header_value(direct: Option<&str>, meta: Option<&Value>, name: &str) -> Option<String> {
    direct.map(str::to_string).or_else(|| {
        let h = meta?.get("headers")?;
        let v = h.get(name).or_else(|| h.get(name.to_ascii_lowercase()))?;
        v.as_str()
            .map(str::to_string)
            .or_else(|| v.as_u64().map(|n| n.to_string()))
    })
}

/// The longest wait a server is believed at classification: a day (a daily quota's reset)
/// and a little. The memory cuts it further (`health::SERVER_WAIT_MAX_MS`, a provider's
/// next reset).
pub const LONGEST_WAIT_MS: u64 = 25 * 3_600_000;

/// When to try again (see `hinted_at`), never later than `LONGEST_WAIT_MS` from now.
fn retry_at(h: &RetryHeaders, meta: Option<&Value>, now_ms: u64) -> Option<u64> {
    hinted_at(h, meta, now_ms).map(|t| t.min(now_ms.saturating_add(LONGEST_WAIT_MS)))
}

/// When to try again: `X-RateLimit-Reset` (epoch **ms**, in headers or `metadata.headers`),
/// `retry-after-ms`, or `Retry-After` (seconds or an HTTP date).
fn hinted_at(h: &RetryHeaders, meta: Option<&Value>, now_ms: u64) -> Option<u64> {
    if let Some(reset) = header_value(h.ratelimit_reset.as_deref(), meta, "X-RateLimit-Reset")
        && let Ok(n) = reset.trim().parse::<u64>()
    {
        // Epoch milliseconds (reference §1.6); tolerate seconds from other dialects.
        let ms = if n < 100_000_000_000 { n * 1000 } else { n };

        if ms > now_ms {
            return Some(ms);
        }
    }
    if let Some(ms) = h
        .retry_after_ms
        .as_deref()
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(now_ms.saturating_add(ms.max(0.0) as u64));
    }
    let ra = h.retry_after.as_deref()?.trim();
    if let Ok(secs) = ra.parse::<f64>() {
        return Some(now_ms.saturating_add((secs.max(0.0) * 1000.0) as u64));
    }
    let when = httpdate::parse_http_date(ra).ok()?;
    let ms = when.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(ms.max(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptOutcome::*;

    const NOW: u64 = 1_788_800_000_000;

    fn http(status: u16, body: &str) -> Failure {
        classify_http(status, &RetryHeaders::default(), body.as_bytes(), NOW)
    }

    #[test]
    fn daily_free_quota_is_provider_wide_until_reset_in_ms() {
        let body = r#"{"error":{"message":"Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day","code":429,"metadata":{"headers":{"X-RateLimit-Limit":"50","X-RateLimit-Remaining":"0","X-RateLimit-Reset":"1788825600000"},"limit_source":"openrouter_free_tier_daily"}}}"#;
        let f = http(429, body);
        assert_eq!(f.outcome, QuotaExhausted);
        assert!(f.provider_wide);
        assert_eq!(f.day_limit, Some(50));
        assert_eq!(f.retry_at_ms, Some(1_788_825_600_000));
    }

    #[test]
    fn per_minute_quota_uses_header_reset() {
        let h = RetryHeaders {
            ratelimit_reset: Some("1788800060000".into()),
            ..Default::default()
        };
        let f = classify_http(
            429,
            &h,
            br#"{"error":{"message":"Rate limit exceeded: free-models-per-min","code":429}}"#,
            NOW,
        );
        assert_eq!(f.outcome, QuotaExhausted);
        assert_eq!(f.retry_at_ms, Some(1_788_800_060_000));
    }

    #[test]
    fn upstream_429_cools_only_the_model() {
        let body = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"x is temporarily rate-limited upstream","provider_name":"DeepInfra","limit_source":"upstream_provider_shared_pool"}}}"#;
        let f = http(429, body);
        assert_eq!(f.outcome, RateLimited);
        assert!(!f.provider_wide);
        // No hint: the memory's back-off decides (at least 30 s, longer on repeats).
        assert_eq!(f.retry_at_ms, None);
        assert!(!f.own_rate_limit);
        assert!(f.message.contains("rate-limited upstream"));
    }

    #[test]
    fn relayed_upstream_429s_are_a_shared_pool_and_own_limits_are_not() {
        // The two shapes of reference §3.3 that do not say "upstream".
        let a = r#"{"error":{"message":"Rate limit exceeded","code":429,"metadata":{"error_type":"rate_limit_exceeded","provider_code":"rate_limited"}}}"#;
        let b = r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"{\"error\":{\"code\":429,\"message\":\"Resource exhausted\"}}","provider_name":"Google"}}}"#;
        for body in [a, b] {
            let f = http(429, body);
            assert_eq!(f.outcome, RateLimited, "{body}");
            assert!(!f.own_rate_limit, "{body}");
        }
        // A limit on our own requests (Groq-style per-model RPM).
        let own = r#"{"error":{"message":"Rate limit reached for model `llama-3.1-8b-instant` on requests per minute (RPM): Limit 30, Used 30","type":"requests","code":"rate_limit_exceeded"}}"#;
        let f = http(429, own);
        assert_eq!(f.outcome, RateLimited);
        assert!(f.own_rate_limit);
        // A daily or token limit teaches nothing about the request rate.
        for own_other in [
            r#"{"error":{"message":"Quota exceeded: requests per day","code":429}}"#,
            r#"{"error":{"message":"Rate limit reached on tokens per minute (TPM)","code":429}}"#,
        ] {
            let f = http(429, own_other);
            assert_eq!(f.outcome, RateLimited, "{own_other}");
            assert!(!f.own_rate_limit, "{own_other}");
        }
    }

    #[test]
    fn retry_after_longer_than_minimum_is_kept() {
        let h = RetryHeaders {
            retry_after: Some("120".into()),
            ..Default::default()
        };
        let f = classify_http(429, &h, b"{}", NOW);
        assert_eq!(f.retry_at_ms, Some(NOW + 120_000));
        let h = RetryHeaders {
            retry_after: Some("2".into()),
            ..Default::default()
        };
        assert_eq!(
            classify_http(503, &h, b"", NOW).retry_at_ms,
            Some(NOW + MIN_COOLDOWN_MS)
        );
    }

    #[test]
    fn auth_payment_moderation() {
        assert_eq!(
            http(401, r#"{"error":{"message":"User not found.","code":401}}"#).outcome,
            AuthFailed
        );
        assert!(http(401, "{}").provider_wide);
        assert_eq!(
            http(403, r#"{"error":{"message":"no","code":403}}"#).outcome,
            AuthFailed
        );
        let m = http(
            403,
            r#"{"error":{"message":"flagged","code":403,"metadata":{"reasons":["violence"],"flagged_input":"…"}}}"#,
        );
        assert_eq!(m.outcome, Moderated);
        assert!(!m.provider_wide);
        assert_eq!(
            http(
                402,
                r#"{"error":{"message":"Insufficient credits","code":402}}"#
            )
            .outcome,
            PaymentRequired
        );
    }

    #[test]
    fn not_found_capability_vs_policy() {
        let c = http(
            404,
            r#"{"error":{"message":"No endpoints found that support tool use","code":404}}"#,
        );
        assert_eq!(c.outcome, CapabilityMissing);
        let p = http(
            404,
            r#"{"error":{"message":"No endpoints found matching your data policy (Free model publication). Configure: https://openrouter.ai/settings/privacy","code":404}}"#,
        );
        assert_eq!(p.outcome, PolicyBlocked);
        assert!(p.provider_wide);
        assert_eq!(p.retry_at_ms, Some(NOW + POLICY_BLOCK_MS));
    }

    #[test]
    fn llama_cpp_image_refusal_is_a_capability_miss() {
        let body = r#"{"error":{"code":500,"message":"image input is not supported - hint: if this is unexpected, you may need to provide the mmproj","type":"server_error"}}"#;
        let f = http(500, body);
        assert_eq!(f.outcome, CapabilityMissing);
        assert_eq!(
            f.retry_at_ms, None,
            "no cool-down: text requests still work"
        );
        assert_eq!(f.missing, Some(Capability::Vision));
    }

    #[test]
    fn context_and_bad_requests() {
        let llama = r#"{"error":{"code":400,"message":"request (6030 tokens) exceeds the available context size (4096 tokens), try increasing it","type":"exceed_context_size_error"}}"#;
        assert_eq!(http(400, llama).outcome, ContextTooLong);
        let or = r#"{"error":{"code":400,"message":"This endpoint's maximum context length is 8192 tokens","metadata":{"error_type":"context_length_exceeded"}}}"#;
        assert_eq!(http(400, or).outcome, ContextTooLong);
        let llama_counts = r#"{"error":{"code":400,"message":"request (6030 tokens) exceeds the available context size (4096 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":6030,"n_ctx":4096}}"#;
        let counted = TokenCount {
            limit: Some(4096),
            requested: Some(6030),
        };
        assert_eq!(http(400, llama_counts).counted, counted);
        assert_eq!(http(400, llama).counted, counted, "from the words alone");
        let or_counts = r#"{"error":{"code":400,"message":"This endpoint's maximum context length is 8192 tokens. However, you requested about 10,001 tokens (9745 of text input, 256 in the output). Please reduce the length."}}"#;
        let c = http(400, or_counts).counted;
        assert_eq!((c.limit, c.requested), (Some(8192), Some(10_001)));
        let absurd = r#"{"error":{"message":"context size (99999999999999 tokens)","n_ctx":0}}"#;
        assert_eq!(http(400, absurd).counted.limit, None, "bounded");
        assert_eq!(
            http(400, r#"{"error":{"message":"x is not a valid model ID"}}"#).outcome,
            BadRequest
        );
        assert_eq!(http(422, "{}").outcome, BadRequest);
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 500, 502, 503, 524, 529] {
            let f = http(s, "<html>oops</html>");
            assert_eq!(f.outcome, ServerError, "{s}");
            assert!(f.retry_at_ms.unwrap() >= NOW + MIN_COOLDOWN_MS);
        }
    }

    #[test]
    fn gemini_array_error() {
        let f = http(
            429,
            r#"[{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(f.outcome, RateLimited);
        assert!(f.message.contains("Resource has been exhausted"));
    }

    #[test]
    fn embedded_error_with_string_or_number_code() {
        let e: WireError = serde_json::from_str(
            r#"{"code":"server_error","message":"Provider disconnected unexpectedly"}"#,
        )
        .unwrap();
        let f = classify_embedded(&e, NOW);
        assert_eq!(f.outcome, ServerError);
        assert!(f.message.contains("server_error"));
        let e: WireError = serde_json::from_str(r#"{"code":502,"message":"gone"}"#).unwrap();
        assert!(classify_embedded(&e, NOW).message.contains("502"));
    }

    #[test]
    fn durations_in_every_dialect() {
        assert_eq!(duration_ms("2m59.56s"), Some(179_560));
        assert_eq!(duration_ms("7.66s"), Some(7_660));
        assert_eq!(duration_ms("120ms"), Some(120));
        assert_eq!(duration_ms("1h2m"), Some(3_720_000));
        assert_eq!(duration_ms("30"), Some(30_000));
        assert_eq!(duration_ms("soon"), None);
    }

    #[test]
    fn header_dialects_say_when_the_quota_is_spent() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let groq = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2m59.56s"),
        ]);
        let (until, why) = quota_from_headers(Dialect::Groq, &groq, NOW).unwrap();
        assert_eq!(until, NOW + 179_560);
        assert!(why.contains("today"));
        let left = headers(&[("x-ratelimit-remaining-requests", "13")]);
        assert_eq!(quota_from_headers(Dialect::Groq, &left, NOW), None);
        let cerebras = headers(&[
            ("x-ratelimit-remaining-requests-day", "0"),
            ("x-ratelimit-reset-requests-day", "33011.38"),
        ]);
        assert_eq!(
            quota_from_headers(Dialect::Cerebras, &cerebras, NOW)
                .unwrap()
                .0,
            NOW + 33_011_380
        );
        let mistral = headers(&[("x-ratelimit-remaining-req-minute", "0")]);
        assert_eq!(
            quota_from_headers(Dialect::Mistral, &mistral, NOW)
                .unwrap()
                .0,
            NOW + 60_000
        );
        assert_eq!(quota_from_headers(Dialect::OpenRouter, &groq, NOW), None);
    }

    #[test]
    fn http_date_retry_after() {
        let h = RetryHeaders {
            retry_after: Some("Wed, 21 Oct 2099 07:28:00 GMT".into()),
            ..Default::default()
        };
        let f = classify_http(429, &h, b"{}", NOW);
        assert!(f.retry_at_ms.unwrap() > NOW + 1_000_000);
    }
}
