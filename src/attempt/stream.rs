//! One attempt at one model: send the request, read the reply until the first token
//! (`open`), then to the end (`finish`). Splitting there lets a race or a hedge pick the
//! first model to produce a token and drop the others. Failures come back as data
//! (`AttemptError::Failed`), classified per DESIGN §3; this module prints nothing and hands
//! text to the sink only in `finish`.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::time::timeout_at;

use super::classify::{self, Failure, RetryHeaders, classify_embedded, classify_http};
use super::{IDLE_CAP, MAX_ERROR_BODY, Success, TokenSink, share};
use crate::catalog::Capability;
use crate::outcome::AttemptOutcome;
use crate::providers::{Provider, ProviderKind};
use crate::request::Request;
use crate::wire::client::{Client, describe_reqwest};
use crate::wire::openai::{
    ChatRequest, Chunk, ProviderPreferences, ResponseFormat, StreamOptions, ToolCallDelta,
    ToolChoice, Usage,
};
use crate::wire::sse::{DecodeError, Decoder, Event};

pub(super) enum AttemptError {
    OutputClosed,
    Failed {
        failure: Failure,
        status: Option<u16>,
        shown: bool,
        first_token_ms: Option<u64>,
    },
}

pub(super) fn failed(
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
            hint_ms: None,
            own_rate_limit: false,
            missing: None,
            counted: Default::default(),
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
    /// Text was printed: no fallback is possible any more.
    shown: bool,
    /// How much of `content` has been handed to the sink.
    emitted: usize,
    /// Tool calls being assembled from fragments, by `index`.
    calls: Vec<PartialCall>,
    /// When text or a tool call last arrived (what the idle timer counts from).
    progress_at: Option<Instant>,
    /// When the finish reason arrived.
    finished_at: Option<Instant>,
    /// Bytes of text and tool-call fragments received (bounded by `MAX_BODY`).
    received: usize,
}

#[derive(Default)]
struct PartialCall {
    index: usize,
    id: String,
    name: String,
    arguments: String,
}

/// `--tool-choice required` (or a tool's name) asks for a tool call: an answer without
/// one (or calling another tool) is `invalid_answer`, and the next model is tried.
fn missing_tool_call(choice: Option<&ToolChoice>, calls: &[PartialCall]) -> Option<String> {
    match choice? {
        ToolChoice::Required if calls.is_empty() => {
            Some("tool_choice is required but the model answered with no tool call".into())
        }
        ToolChoice::Function(name) if !calls.iter().any(|c| &c.name == name) => Some(format!(
            "tool_choice names `{name}` but the model did not call it"
        )),
        _ => None,
    }
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

/// An attempt whose reply is open: the stream, what it produced so far, and its timers.
pub(super) struct Live {
    resp: reqwest::Response,
    decoder: Decoder,
    is_sse: bool,
    /// The body of a non-streaming reply, gathered whole.
    whole: Vec<u8>,
    p: Progress,
    started: Instant,
    first_by: Instant,
    quota: Option<(u64, String)>,
    eof: bool,
}

impl Live {
    pub(super) fn first_token_ms(&self) -> Option<u64> {
        self.p
            .first_token
            .map(|t| t.duration_since(self.started).as_millis() as u64)
    }
}

/// Sends the request and reads until the first token (text or a tool call), or the end.
pub(super) async fn open(
    client: &Client,
    provider: &Provider,
    model: &str,
    req: &Request,
    first_by: Instant,
    deadline: Instant,
    has_next: bool,
) -> Result<Live, AttemptError> {
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
        response_format: req
            .schema
            .as_ref()
            .map(|s| ResponseFormat::json_schema(&s.doc)),
        // Ask OpenRouter to route only to endpoints that honour tools or the schema.
        provider: (provider.kind == ProviderKind::OpenRouter
            && (req.tools.is_some() || req.schema.is_some()))
        .then_some(ProviderPreferences {
            require_parameters: true,
        }),
        params: &req.params,
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
        // "No endpoints found that can handle the requested parameters" answers the
        // `require_parameters` sent for tools or a schema without naming which: when only
        // one was asked for, name it so that the miss is remembered (`Failure::missing`).
        // `require_parameters` covers every parameter sent: with a temperature or a token
        // limit asked for too, the miss could be theirs, and it is not attributed.
        if failure.outcome == AttemptOutcome::CapabilityMissing
            && failure.missing.is_none()
            && req.temperature.is_none()
            && req.max_tokens.is_none()
        {
            match (req.tools.is_some(), req.schema.is_some()) {
                (true, false) => {
                    failure.missing = Some(Capability::Tools);
                    failure.message.push_str(" (the request needs tool use)");
                }
                (false, true) => {
                    failure.missing = Some(Capability::Schema);
                    failure
                        .message
                        .push_str(" (the request needs structured output)");
                }
                _ => {}
            }
        }
        // A 429 whose headers show the provider's window spent is the provider's quota.
        if let (429, Some((until, why))) = (status, &quota) {
            failure.outcome = AttemptOutcome::QuotaExhausted;
            failure.provider_wide = true;
            failure.retry_at_ms = Some(*until);
            // Its Retry-After may be seconds; the window it spent ends then.
            failure.hint_ms = failure.hint_ms.max(Some(*until));
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
    let mut live = Live {
        resp,
        decoder: Decoder::new(),
        is_sse,
        whole: Vec::new(),
        p: Progress::default(),
        started,
        first_by,
        quota,
        eof: false,
    };
    pump(&mut live, deadline, has_next, true, None).await?;
    if live.p.first_token.is_none() {
        return Err(complete(live, model, req).err().unwrap_or_else(|| {
            failed(
                AttemptOutcome::EmptyAnswer,
                "the model answered with no text",
                Some(200),
            )
        }));
    }
    Ok(live)
}

/// Reads the rest of the reply, handing text to the sink as it comes when streaming.
pub(super) async fn finish(
    mut live: Live,
    provider: &Provider,
    model: &str,
    req: &Request,
    deadline: Instant,
    has_next: bool,
    sink: Option<&mut dyn TokenSink>,
) -> Result<(Success, Option<f64>), AttemptError> {
    let _ = provider;
    pump(&mut live, deadline, has_next, false, sink).await?;
    complete(live, model, req).map(|(mut s, tps)| {
        s.provider = provider.name.clone();
        (s, tps)
    })
}

/// Reads events until the first token (`until_first`), the end of the answer, or a failure.
async fn pump(
    live: &mut Live,
    deadline: Instant,
    has_next: bool,
    until_first: bool,
    mut sink: Option<&mut dyn TokenSink>,
) -> Result<(), AttemptError> {
    let started = live.started;
    let wait = live.first_by.duration_since(started).as_secs_f64();
    loop {
        if let Some(s) = sink.as_deref_mut() {
            flush(&mut live.p, s)?;
        }
        if live.p.done || live.eof || (until_first && live.p.first_token.is_some()) {
            return Ok(());
        }
        let p = &live.p;
        let now = Instant::now();
        // Reasoning is not a first token: the first-token share holds until text or a tool
        // call arrives, so a long-thinking model cannot eat the deadline (DESIGN §3). After
        // it, only content moves the idle timer: keep-alive comments prove the connection
        // is alive, not that the model is getting on (a token, then comments every few ms,
        // must not hold the attempt for the whole deadline).
        let wait_until = match (p.first_token, p.progress_at) {
            (None, _) | (_, None) => live.first_by,
            (Some(_), Some(at)) => share(at, deadline, has_next)
                .min(crate::later(at, IDLE_CAP))
                .min(deadline),
        };
        // The answer is complete once its finish reason has come: the usage chunk that
        // follows is waited for briefly, never for the idle cap.
        let wait_until = match p.finished_at {
            Some(at) => wait_until.min(crate::later(at, FINISH_GRACE)),
            None => wait_until,
        };
        let next = timeout_at(wait_until.into(), live.resp.chunk()).await;
        let events = match next {
            Err(_) => {
                if p.finish_reason.is_some() && (!p.content.is_empty() || !p.calls.is_empty()) {
                    live.p.done = true; // complete; only the trailing usage chunk was missing
                    continue;
                }
                let msg = if p.first_token.is_none() {
                    format!("no first token within {wait:.1}s")
                } else {
                    let since = p.progress_at.unwrap_or(now);
                    format!(
                        "stalled: no new text for {:.1}s",
                        wait_until.saturating_duration_since(since).as_secs_f64()
                    )
                };
                return Err(with_progress(
                    failed(AttemptOutcome::Timeout, msg, Some(200)),
                    p,
                    started,
                ));
            }
            Ok(Err(e)) => {
                if p.finish_reason.is_some() && (!p.content.is_empty() || !p.calls.is_empty()) {
                    live.p.done = true;
                    continue;
                }
                let msg = format!("the stream broke: {}", describe_reqwest(&e));
                return Err(with_progress(
                    failed(AttemptOutcome::ConnectionFailed, msg, Some(200)),
                    p,
                    started,
                ));
            }
            Ok(Ok(None)) => {
                live.eof = true;
                let events = if live.is_sse {
                    live.decoder.finish()
                } else {
                    std::str::from_utf8(&live.whole)
                        .map(|text| vec![Event::Data(text.to_owned())])
                        .map_err(|_| DecodeError::InvalidUtf8)
                };
                match events {
                    Ok(ev) => ev,
                    Err(e) => return Err(unreadable(e.to_string(), &live.p, started)),
                }
            }
            Ok(Ok(Some(bytes))) if live.is_sse => match live.decoder.feed(&bytes) {
                Ok(ev) => ev,
                Err(e) => return Err(unreadable(e.to_string(), &live.p, started)),
            },
            Ok(Ok(Some(bytes))) => {
                if live.whole.len() + bytes.len() > MAX_BODY {
                    let msg = format!("the answer's body is larger than {} MiB", MAX_BODY >> 20);
                    return Err(unreadable(msg, &live.p, started));
                }
                live.whole.extend_from_slice(&bytes);
                continue;
            }
        };
        for ev in events {
            if let Event::Data(data) = ev {
                if let Err(e) = handle_data(&data, &mut live.p) {
                    return Err(with_progress(e, &live.p, started));
                }
                if live.p.done {
                    break;
                }
            }
        }
    }
}

/// How long the usage chunk is waited for after the finish reason.
const FINISH_GRACE: Duration = Duration::from_secs(1);
/// The largest non-streamed body read, and the largest answer kept (bytes of text and
/// tool-call arguments): far beyond any model's output limit.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A reply that cannot be read on (too large, not UTF-8, not JSON): a server error of
/// this model; after output began the caller makes it `stream_interrupted`.
fn unreadable(why: String, p: &Progress, started: Instant) -> AttemptError {
    with_progress(
        failed(AttemptOutcome::ServerError, why, Some(200)),
        p,
        started,
    )
}

/// Hands text not yet shown to the sink.
fn flush(p: &mut Progress, sink: &mut dyn TokenSink) -> Result<(), AttemptError> {
    if p.emitted < p.content.len() {
        p.shown = true;
        let ok = sink.token(&p.content[p.emitted..]);
        p.emitted = p.content.len();
        if !ok {
            return Err(AttemptError::OutputClosed);
        }
    }
    Ok(())
}

/// Checks a finished reply: some text or a tool call, a proper end, a valid schema answer.
fn complete(
    live: Live,
    model: &str,
    req: &Request,
) -> Result<(Success, Option<f64>), AttemptError> {
    let Live {
        mut p,
        started,
        quota,
        ..
    } = live;
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
    if !p.done && p.finish_reason.is_none() {
        let f = failed(
            AttemptOutcome::ConnectionFailed,
            "the stream ended before the answer was complete",
            Some(200),
        );
        return Err(with_progress(f, &p, started));
    }
    if let Some(why) = missing_tool_call(req.tool_choice.as_ref(), &p.calls) {
        let f = failed(AttemptOutcome::InvalidAnswer, why, Some(200));
        return Err(with_progress(f, &p, started));
    }
    if let Some(schema) = &req.schema
        && p.calls.is_empty()
    {
        match schema.check(&p.content) {
            Ok(doc) => p.content = doc,
            Err(why) => {
                let f = failed(AttemptOutcome::InvalidAnswer, why.to_string(), Some(200));
                return Err(with_progress(f, &p, started));
            }
        }
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
            provider: String::new(),
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
fn handle_data(data: &str, p: &mut Progress) -> Result<(), AttemptError> {
    if data.trim() == "[DONE]" {
        p.done = true;
        return Ok(());
    }
    if data.trim().is_empty() {
        return Ok(());
    }
    // Fields freeroute does not need are read leniently (`wire::openai`): a wrong type
    // there loses nothing. A chunk that cannot be read at all fails the attempt rather
    // than leave a hole in the answer.
    let chunks: Vec<Chunk> = match serde_json::from_str::<Chunk>(data) {
        Ok(c) => vec![c],
        Err(whole) => {
            // Some servers put one JSON object per `data:` line without blank lines between.
            let lines: Result<Vec<Chunk>, _> = data
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect();
            match lines {
                Ok(c) if c.len() > 1 => c,
                _ => {
                    let why = format!("a chunk of the answer cannot be read ({whole})");
                    return Err(failed(AttemptOutcome::ServerError, why, Some(200)));
                }
            }
        }
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
        let now = Instant::now();
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
                    p.first_token.get_or_insert(now);
                    p.progress_at = Some(now);
                    p.received += fragment.text_len();
                    add_fragment(&mut p.calls, fragment);
                }
                if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
                    p.first_token.get_or_insert(now);
                    p.progress_at = Some(now);
                    p.received += text.len();
                    p.content.push_str(text);
                }
                if p.received > MAX_BODY {
                    let why = format!("the answer is larger than {} MiB", MAX_BODY >> 20);
                    return Err(failed(AttemptOutcome::ServerError, why, Some(200)));
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
                Some(r) => {
                    p.finish_reason = Some(r.to_string());
                    p.finished_at.get_or_insert(now);
                }
                None => {}
            }
        }
        // The usage that follows the finish chunk is the last thing a stream sends
        // (reference §1.4): the answer is complete, whether or not `[DONE]` follows.
        if p.finish_reason.is_some() && p.usage.is_some() {
            p.done = true;
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
        let schema = crate::request::AnswerSchema::compile(serde_json::json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}})).unwrap();
        assert_eq!(
            schema.check("```json\n{\"name\": \"Ada\"}\n```").unwrap(),
            "{\"name\": \"Ada\"}"
        );
        assert!(matches!(
            schema.check("{\"name\": 3}"),
            Err(crate::request::SchemaError::Mismatch { .. })
        ));
        assert!(matches!(
            schema.check("Sure! Here it is"),
            Err(crate::request::SchemaError::NotJson(_))
        ));
    }
}
