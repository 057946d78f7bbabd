//! Tries the plan's candidates in order (DESIGN §3 step 4): one streaming request at a
//! time, each bounded by its share of the deadline, every failure classified and recorded
//! as data. Tokens go into the `TokenSink` it is handed; it prints nothing itself.

pub mod classify;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tokio::time::timeout_at;

use crate::error::{Error, ErrorKind};
use crate::outcome::{AttemptOutcome, AttemptRecord};
use crate::plan::Plan;
use crate::providers::Provider;
use crate::providers::ProviderKind;
use crate::request::Request;
use crate::wire::client::{Client, describe_reqwest};
use crate::wire::openai::{ChatRequest, Chunk, StreamOptions, ToolCallDelta, Usage};
use crate::wire::sse::{Decoder, Event};
use classify::{Failure, RetryHeaders, classify_embedded, classify_http};
use serde_json::Value;

/// Longest wait between two chunks of a stream that has started, whatever time is left.
pub const IDLE_CAP: Duration = Duration::from_secs(30);
/// Less time than this left is not worth starting another attempt.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(200);
/// Most bytes of an error body that are read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where an attempt's visible progress goes: the spinner and, when streaming, the tokens.
pub trait TokenSink {
    /// An attempt at this model starts.
    fn attempt_started(&mut self, provider: &str, model: &str);
    /// Text to print now. Returns false when the reader went away (broken pipe).
    fn token(&mut self, text: &str) -> bool;
    /// A line of the routing trace (`-v`).
    fn trace(&mut self, msg: String);
}

/// A finished answer from one attempt.
#[derive(Debug, Clone)]
pub struct Success {
    pub content: String,
    pub model: String,
    pub provider: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub first_token_ms: Option<u64>,
    pub paid: bool,
    /// Assembled tool calls: `{"id", "name", "arguments"}`.
    pub tool_calls: Vec<Value>,
    /// The provider's rate-limit headers showed its window spent, until then.
    pub quota_until_ms: Option<u64>,
}

/// How the run ended without an answer being printed by us.
pub enum Stop {
    /// The reader of our output went away while streaming: not an error.
    OutputClosed,
    Error(Error),
}

/// Tries candidates until one answers. Attempts are appended to `log` as they finish, so
/// a caller that is interrupted still knows what was tried.
pub async fn run(
    client: &Client,
    providers: &[Provider],
    plan: &Plan,
    req: &Request,
    deadline: Instant,
    sink: &mut dyn TokenSink,
    log: &RefCell<Vec<AttemptRecord>>,
) -> Result<Success, Stop> {
    let mut blocked: HashMap<String, AttemptOutcome> = HashMap::new();
    let mut too_small: Option<u64> = None;
    let mut tried = 0usize;
    let cands = &plan.candidates;
    let usable = |i: usize, blocked: &HashMap<String, AttemptOutcome>, too_small: Option<u64>| {
        let c = &cands[i].model;
        !blocked.contains_key(&c.provider)
            && !matches!((too_small, c.context), (Some(s), Some(x)) if x <= s)
    };
    let mut out_of_time = false;
    for i in 0..cands.len() {
        if tried >= req.attempts {
            sink.trace(format!("stopping: --attempts {} reached", req.attempts));
            break;
        }
        let cand = &cands[i].model;
        if !usable(i, &blocked, too_small) {
            sink.trace(format!(
                "skip {}/{}: provider or context ruled out earlier in this run",
                cand.provider, cand.id
            ));
            continue;
        }
        let now = Instant::now();
        if deadline.saturating_duration_since(now) < MIN_ATTEMPT {
            out_of_time = true;
            break;
        }
        let has_next = tried + 1 < req.attempts
            && (i + 1..cands.len()).any(|j| usable(j, &blocked, too_small));
        let Some(provider) = providers.iter().find(|p| p.name == cand.provider) else {
            continue;
        };
        tried += 1;
        let first_by = share(now, deadline, has_next);
        sink.trace(format!(
            "attempt {tried}: {}/{} (first token within {:.1}s)",
            provider.name,
            cand.id,
            first_by.duration_since(now).as_secs_f64()
        ));
        sink.attempt_started(&provider.name, &cand.id);
        let started = Instant::now();
        let result = attempt(
            client, provider, &cand.id, req, first_by, deadline, has_next, sink,
        )
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok((mut success, tps)) => {
                success.paid = !cand.free;
                log.borrow_mut().push(AttemptRecord {
                    provider: provider.name.clone(),
                    model: cand.id.clone(),
                    outcome: AttemptOutcome::Ok,
                    status: Some(200),
                    error: None,
                    elapsed_ms,
                    first_token_ms: success.first_token_ms,
                    tokens_per_sec: tps,
                    retry_at_ms: success.quota_until_ms,
                    provider_wide: success.quota_until_ms.is_some(),
                    day_limit: None,
                    piece: None,
                });
                sink.trace(format!(
                    "answered by {}/{} in {elapsed_ms} ms",
                    provider.name, cand.id
                ));
                return Ok(success);
            }
            Err(AttemptError::OutputClosed) => return Err(Stop::OutputClosed),
            Err(AttemptError::Failed {
                failure,
                status,
                shown,
                first_token_ms,
            }) => {
                let message = redact(provider, &failure.message);
                let outcome = if shown {
                    AttemptOutcome::StreamInterrupted
                } else {
                    failure.outcome
                };
                sink.trace(format!(
                    "  {} {}{}: {message}",
                    outcome.as_str(),
                    status.map(|s| format!("HTTP {s} ")).unwrap_or_default(),
                    if failure.provider_wide {
                        "(whole provider)"
                    } else {
                        ""
                    }
                ));
                log.borrow_mut().push(AttemptRecord {
                    provider: provider.name.clone(),
                    model: cand.id.clone(),
                    outcome,
                    status,
                    error: Some(message.clone()),
                    elapsed_ms,
                    first_token_ms,
                    tokens_per_sec: None,
                    retry_at_ms: failure.retry_at_ms,
                    provider_wide: failure.provider_wide,
                    day_limit: failure.day_limit,
                    piece: None,
                });
                if shown {
                    let err = Error::new(
                        ErrorKind::AllFailed,
                        format!(
                            "The answer from {}/{} broke off after output began: {message}",
                            provider.name, cand.id
                        ),
                    );
                    return Err(Stop::Error(err.with_attempts(log.borrow().clone())));
                }
                if failure.provider_wide {
                    blocked.insert(provider.name.clone(), failure.outcome);
                }
                if failure.outcome == AttemptOutcome::ContextTooLong
                    && let Some(c) = cand.context
                {
                    too_small = Some(too_small.map_or(c, |s| s.max(c)));
                }
            }
        }
    }
    Err(Stop::Error(give_up(
        providers,
        log.borrow().clone(),
        out_of_time || Instant::now() + MIN_ATTEMPT >= deadline,
        tried,
    )))
}

/// The run-level error once no candidate answered.
fn give_up(
    providers: &[Provider],
    attempts: Vec<AttemptRecord>,
    out_of_time: bool,
    tried: usize,
) -> Error {
    if tried == 0 && !out_of_time {
        return Error::new(ErrorKind::AllFailed, "No candidate could be tried")
            .with_attempts(attempts);
    }
    if !attempts.is_empty()
        && attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::AuthFailed)
    {
        let vars: Vec<String> = attempts
            .iter()
            .filter_map(|a| providers.iter().find(|p| p.name == a.provider))
            .map(|p| {
                p.key_env
                    .clone()
                    .unwrap_or_else(|| format!("the key of {}", p.name))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        return Error::config("Every provider tried refused its key")
            .with_hint(format!("Check {}", vars.join(", ")))
            .with_attempts(attempts);
    }
    let summary = summarize(&attempts);
    if out_of_time {
        return Error::new(
            ErrorKind::Deadline,
            format!("The deadline passed before any model answered ({summary})"),
        )
        .with_hint("Raise --timeout, or see `freeroute -v` for where the time went")
        .with_attempts(attempts);
    }
    let mut err = Error::new(
        ErrorKind::AllFailed,
        format!("Every attempt failed ({summary})"),
    )
    .with_attempts(attempts);
    if let Some(p) = err
        .attempts
        .iter()
        .find(|a| a.outcome == AttemptOutcome::PolicyBlocked)
    {
        err.hint = Some(format!(
            "{} blocks free models by data policy: allow them at https://openrouter.ai/settings/privacy",
            p.provider
        ));
    } else if let Some(p) = err
        .attempts
        .iter()
        .find(|a| a.outcome == AttemptOutcome::PaymentRequired)
    {
        err.hint = Some(format!(
            "{} reports a negative balance: free models are refused until it is settled",
            p.provider
        ));
    }
    err
}

/// "2 rate_limited, 1 timeout"
fn summarize(attempts: &[AttemptRecord]) -> String {
    if attempts.is_empty() {
        return "no attempt made".into();
    }
    let mut counts: Vec<(AttemptOutcome, usize)> = Vec::new();
    for a in attempts {
        match counts.iter_mut().find(|(o, _)| *o == a.outcome) {
            Some((_, n)) => *n += 1,
            None => counts.push((a.outcome, 1)),
        }
    }
    counts
        .iter()
        .map(|(o, n)| format!("{n} {}", o.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn redact(provider: &Provider, text: &str) -> String {
    match &provider.key {
        Some(k) => k.redact(text),
        None => text.to_string(),
    }
}

/// While another candidate remains, an attempt may wait at most half of the time left
/// (DESIGN §3); the last candidate may use all of it.
fn share(now: Instant, deadline: Instant, has_next: bool) -> Instant {
    let left = deadline.saturating_duration_since(now);
    if has_next { now + left / 2 } else { deadline }
}

enum AttemptError {
    OutputClosed,
    Failed {
        failure: Failure,
        status: Option<u16>,
        shown: bool,
        first_token_ms: Option<u64>,
    },
}

fn failed(
    outcome: AttemptOutcome,
    message: impl Into<String>,
    status: Option<u16>,
) -> AttemptError {
    AttemptError::Failed {
        failure: Failure {
            outcome,
            provider_wide: false,
            retry_at_ms: match outcome {
                AttemptOutcome::Timeout
                | AttemptOutcome::ConnectionFailed
                | AttemptOutcome::EmptyAnswer => Some(crate::now_ms() + classify::MIN_COOLDOWN_MS),
                _ => None,
            },
            message: message.into(),
            day_limit: None,
        },
        status,
        shown: false,
        first_token_ms: None,
    }
}

fn retry_headers(h: &HeaderMap) -> RetryHeaders {
    let get = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    RetryHeaders {
        retry_after: get("retry-after"),
        retry_after_ms: get("retry-after-ms"),
        ratelimit_reset: get("x-ratelimit-reset"),
        ratelimit_limit: get("x-ratelimit-limit"),
    }
}

/// What one stream has produced so far.
#[derive(Default)]
struct Progress {
    content: String,
    first_token: Option<Instant>,
    /// Reasoning or other deltas: the model is alive even before its first text token.
    active: bool,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
    done: bool,
    shown: bool,
    /// Tool calls being assembled from fragments, by `index`.
    calls: Vec<PartialCall>,
}

#[derive(Default)]
struct PartialCall {
    index: usize,
    id: String,
    name: String,
    arguments: String,
}

impl PartialCall {
    /// `{"id", "name", "arguments"}` with the arguments parsed as JSON when they are JSON.
    fn finish(&self) -> Value {
        let raw = self.arguments.trim();
        let arguments = if raw.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(self.arguments.clone()))
        };
        serde_json::json!({"id": self.id, "name": self.name, "arguments": arguments})
    }
}

/// One request to one model.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    client: &Client,
    provider: &Provider,
    model: &str,
    req: &Request,
    first_by: Instant,
    deadline: Instant,
    has_next: bool,
    sink: &mut dyn TokenSink,
) -> Result<(Success, Option<f64>), AttemptError> {
    let started = Instant::now();
    let body = ChatRequest {
        model,
        messages: &req.messages,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        max_tokens: req.max_tokens.or(provider.default_max_tokens),
        temperature: req.temperature,
        tools: req.tools.as_deref(),
        tool_choice: req.tool_choice.as_ref(),
        response_format: req.response_format.as_ref(),
        // Ask OpenRouter to route only to endpoints that honour tools or the schema.
        provider: (provider.kind == ProviderKind::OpenRouter
            && (req.tools.is_some() || req.schema.is_some()))
        .then(|| serde_json::json!({"require_parameters": true})),
    };
    let wait = first_by.duration_since(started).as_secs_f64();
    let mut resp = match timeout_at(first_by.into(), client.chat(provider, &body)).await {
        Err(_) => {
            return Err(failed(
                AttemptOutcome::Timeout,
                format!("no response within {wait:.1}s"),
                None,
            ));
        }
        Ok(Err(e)) if e.is_timeout() => {
            return Err(failed(AttemptOutcome::Timeout, describe_reqwest(&e), None));
        }
        Ok(Err(e)) => {
            return Err(failed(
                AttemptOutcome::ConnectionFailed,
                describe_reqwest(&e),
                None,
            ));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    let quota = {
        let h = resp.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        classify::quota_from_headers(provider.dialect, &get, crate::now_ms())
    };
    if status != 200 {
        let headers = retry_headers(resp.headers());
        let mut body = Vec::new();
        // The error body is small; read it within what is left of the first-token share.
        while body.len() < MAX_ERROR_BODY {
            match timeout_at(first_by.into(), resp.chunk()).await {
                Ok(Ok(Some(b))) => body.extend_from_slice(&b),
                _ => break,
            }
        }
        let mut failure = classify_http(status, &headers, &body, crate::now_ms());
        // A 429 whose headers show the provider's window spent is the provider's quota.
        if let (429, Some((until, why))) = (status, &quota) {
            failure.outcome = AttemptOutcome::QuotaExhausted;
            failure.provider_wide = true;
            failure.retry_at_ms = Some(*until);
            failure.message = format!("{}; {why}", failure.message);
        }
        return Err(AttemptError::Failed {
            failure,
            status: Some(status),
            shown: false,
            first_token_ms: None,
        });
    }
    let is_sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.contains("event-stream"));
    let mut p = Progress::default();
    let mut decoder = Decoder::new();
    let mut whole = Vec::new();
    loop {
        let now = Instant::now();
        let wait_until = if p.first_token.is_none() && !p.active {
            first_by
        } else {
            let idle = share(now, deadline, has_next).min(now + IDLE_CAP);
            idle.min(deadline)
        };
        let next = timeout_at(wait_until.into(), resp.chunk()).await;
        let eof = matches!(next, Ok(Ok(None)));
        let events = match next {
            Err(_) => {
                if p.finish_reason.is_some() && !p.content.is_empty() {
                    break; // complete; only the trailing usage chunk was missing
                }
                let msg = if p.first_token.is_none() {
                    format!("no first token within {wait:.1}s")
                } else {
                    format!(
                        "stalled: no data for {:.1}s",
                        wait_until.duration_since(now).as_secs_f64()
                    )
                };
                return Err(with_progress(
                    failed(AttemptOutcome::Timeout, msg, Some(200)),
                    &p,
                    started,
                ));
            }
            Ok(Err(e)) => {
                if p.finish_reason.is_some() && !p.content.is_empty() {
                    break;
                }
                let msg = format!("the stream broke: {}", describe_reqwest(&e));
                return Err(with_progress(
                    failed(AttemptOutcome::ConnectionFailed, msg, Some(200)),
                    &p,
                    started,
                ));
            }
            Ok(Ok(None)) => {
                if is_sse {
                    decoder.finish()
                } else {
                    vec![Event::Data(String::from_utf8_lossy(&whole).into_owned())]
                }
            }
            Ok(Ok(Some(bytes))) if is_sse => match decoder.feed(&bytes) {
                Ok(ev) => ev,
                Err(_) => {
                    let f = failed(
                        AttemptOutcome::ServerError,
                        "the stream sent an endless line",
                        Some(200),
                    );
                    return Err(with_progress(f, &p, started));
                }
            },
            Ok(Ok(Some(bytes))) => {
                whole.extend_from_slice(&bytes);
                continue;
            }
        };
        for ev in events {
            if let Event::Data(data) = ev {
                if let Err(e) = handle_data(&data, &mut p, req.stream, sink) {
                    return Err(with_progress(e, &p, started));
                }
                if p.done {
                    break;
                }
            }
        }
        if p.done || eof {
            break;
        }
    }
    let first_token_ms = p
        .first_token
        .map(|t| t.duration_since(started).as_millis() as u64);
    if p.content.is_empty() && p.calls.is_empty() {
        let f = failed(
            AttemptOutcome::EmptyAnswer,
            "the model answered with no text",
            Some(200),
        );
        return Err(with_progress(f, &p, started));
    }
    if let Some(schema) = &req.schema
        && p.calls.is_empty()
    {
        match check_schema(&p.content, schema) {
            Ok(doc) => p.content = doc,
            Err(why) => {
                let f = failed(AttemptOutcome::InvalidAnswer, why, Some(200));
                return Err(with_progress(f, &p, started));
            }
        }
    }
    if !p.done && p.finish_reason.is_none() {
        let f = failed(
            AttemptOutcome::ConnectionFailed,
            "the stream ended before the answer was complete",
            Some(200),
        );
        return Err(with_progress(f, &p, started));
    }
    let tps = p.first_token.and_then(|t| {
        let secs = t.elapsed().as_secs_f64();
        let tokens = p
            .usage
            .as_ref()
            .map_or(p.content.len() as f64 / 4.0, |u| u.completion_tokens as f64);
        (secs > 0.05 && tokens > 1.0).then(|| tokens / secs)
    });
    let tool_calls = p.calls.iter().map(PartialCall::finish).collect();
    Ok((
        Success {
            quota_until_ms: quota.map(|q| q.0),
            tool_calls,
            content: p.content,
            model: p.model.unwrap_or_else(|| model.to_string()),
            provider: provider.name.clone(),
            finish_reason: p.finish_reason,
            usage: p.usage,
            first_token_ms,
            paid: false,
        },
        tps,
    ))
}

/// Folds one streamed tool-call fragment into the calls being assembled: the first
/// fragment of an index brings `id` and the name, later ones append to the arguments.
fn add_fragment(calls: &mut Vec<PartialCall>, f: &ToolCallDelta) {
    let index = f.index.unwrap_or(calls.len());
    let pos = match calls.iter().position(|c| c.index == index) {
        Some(pos) => pos,
        None => {
            calls.push(PartialCall {
                index,
                ..Default::default()
            });
            calls.len() - 1
        }
    };
    let call = &mut calls[pos];
    if let Some(id) = f.id.as_deref().filter(|s| !s.is_empty()) {
        call.id = id.to_string();
    }
    if let Some(func) = &f.function {
        if let Some(name) = func.name.as_deref().filter(|s| !s.is_empty()) {
            call.name.push_str(name);
        }
        match &func.arguments {
            Some(Value::String(s)) => call.arguments.push_str(s),
            Some(other @ Value::Object(_)) => call.arguments.push_str(&other.to_string()),
            _ => {}
        }
    }
}

/// The answer as the JSON document the schema asks for: surrounding code fences are
/// tolerated, anything else that is not valid JSON matching the schema is refused.
pub fn check_schema(content: &str, schema: &Value) -> Result<String, String> {
    let mut text = content.trim();
    if let Some(rest) = text.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
        text = rest.strip_suffix("```").unwrap_or(rest).trim();
    }
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let validator =
        jsonschema::validator_for(schema).map_err(|e| format!("the schema is invalid: {e}"))?;
    if let Some(err) = validator.iter_errors(&doc).next() {
        return Err(format!(
            "the answer does not match the schema: {err} at `{}`",
            err.instance_path()
        ));
    }
    Ok(text.to_string())
}

fn with_progress(e: AttemptError, p: &Progress, started: Instant) -> AttemptError {
    match e {
        AttemptError::Failed {
            failure, status, ..
        } => AttemptError::Failed {
            failure,
            status,
            shown: p.shown,
            first_token_ms: p
                .first_token
                .map(|t| t.duration_since(started).as_millis() as u64),
        },
        other => other,
    }
}

/// Applies one SSE `data` payload (or a whole JSON answer) to the progress.
fn handle_data(
    data: &str,
    p: &mut Progress,
    stream: bool,
    sink: &mut dyn TokenSink,
) -> Result<(), AttemptError> {
    if data.trim() == "[DONE]" {
        p.done = true;
        return Ok(());
    }
    let chunks: Vec<Chunk> = match serde_json::from_str::<Chunk>(data) {
        Ok(c) => vec![c],
        // Some servers put one JSON object per `data:` line without blank lines between.
        Err(_) => data
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    };
    for chunk in chunks {
        if let Some(err) = &chunk.error {
            return Err(AttemptError::Failed {
                failure: classify_embedded(err, crate::now_ms()),
                status: Some(200),
                shown: false,
                first_token_ms: None,
            });
        }
        if let Some(m) = chunk.model.filter(|m| !m.is_empty()) {
            p.model = Some(m);
        }
        if chunk.usage.is_some() {
            p.usage = chunk.usage;
        }
        for choice in chunk.choices {
            let delta = choice.delta.or(choice.message);
            if let Some(d) = &delta {
                if d.reasoning.as_deref().is_some_and(|r| !r.is_empty())
                    || d.reasoning_content
                        .as_deref()
                        .is_some_and(|r| !r.is_empty())
                {
                    p.active = true;
                }
                for fragment in d.tool_calls.iter().flatten() {
                    p.first_token.get_or_insert_with(Instant::now);
                    add_fragment(&mut p.calls, fragment);
                }
                if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
                    p.first_token.get_or_insert_with(Instant::now);
                    p.content.push_str(text);
                    if stream {
                        p.shown = true;
                        if !sink.token(text) {
                            return Err(AttemptError::OutputClosed);
                        }
                    }
                }
            }
            match choice.finish_reason.as_deref() {
                Some("error") => {
                    let err = choice.error.unwrap_or_default();
                    let mut failure = classify_embedded(&err, crate::now_ms());
                    if err.message.is_none() {
                        failure.message =
                            "the model ended its answer with finish_reason \"error\"".into();
                    }
                    return Err(AttemptError::Failed {
                        failure,
                        status: Some(200),
                        shown: false,
                        first_token_ms: None,
                    });
                }
                Some(r) => p.finish_reason = Some(r.to_string()),
                None => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(json: &str) -> ToolCallDelta {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tool_call_fragments_assemble_by_index() {
        let mut calls = Vec::new();
        for f in [
            r#"{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}"#,
            r#"{"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{\"tz\":"}}"#,
            r#"{"index":0,"function":{"arguments":"{\"city\":"}}"#,
            r#"{"index":0,"function":{"arguments":"\"Paris\"}"}}"#,
            r#"{"index":1,"function":{"arguments":"\"UTC\"}"}}"#,
        ] {
            add_fragment(&mut calls, &frag(f));
        }
        let done: Vec<Value> = calls.iter().map(PartialCall::finish).collect();
        assert_eq!(
            done[0],
            serde_json::json!({"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}})
        );
        assert_eq!(
            done[1],
            serde_json::json!({"id": "call_2", "name": "get_time", "arguments": {"tz": "UTC"}})
        );
    }

    #[test]
    fn schema_check_accepts_fenced_json_and_refuses_mismatch() {
        let schema = serde_json::json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}});
        assert_eq!(
            check_schema("```json\n{\"name\": \"Ada\"}\n```", &schema).unwrap(),
            "{\"name\": \"Ada\"}"
        );
        assert!(
            check_schema("{\"name\": 3}", &schema)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(
            check_schema("Sure! Here it is", &schema)
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
