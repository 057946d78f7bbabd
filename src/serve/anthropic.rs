//! The Anthropic Messages API of `serve` (DESIGN §8), for clients that speak only it (Claude
//! Code): a body is turned into the OpenAI-shaped conversation every provider takes
//! (system, text and image blocks, `tool_use` as tool calls, `tool_result` as tool
//! messages), and answers go back as a message or its event sequence. Asks nothing itself.

use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self, Body};
use super::openai::image_url_ok;
use super::{Asked, Encoder, Refusal, response_id};
use crate::outcome::Answer;
use crate::wire::openai::{Message, estimate_text};

#[derive(Deserialize)]
struct MessagesBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    messages: Vec<Value>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    tool_choice: Option<ToolChoice>,
}

#[derive(Deserialize)]
struct Tool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct ToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Asked, Refusal> {
    let b: MessagesBody = serde_json::from_slice(body).map_err(|e| {
        Refusal::invalid(format!(
            "The request body is not a valid Messages request: {e}"
        ))
    })?;
    if b.messages.is_empty() {
        return Err(Refusal::invalid(
            "`messages` is empty: send at least one message",
        ));
    }
    let mut messages = Vec::new();
    match b.system {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(Message::text("system", s)),
        Some(Value::Array(blocks)) => {
            let text = texts(&blocks, "system")?;
            messages.push(Message::text("system", text));
        }
        Some(_) => return Err(Refusal::invalid("`system` must be a string or text blocks")),
    }
    for (i, m) in b.messages.into_iter().enumerate() {
        turn(i, m, &mut messages)?;
    }
    let tools = b.tools.map(|list| {
        list.into_iter()
            .map(|t| {
                let mut f = json!({"name": t.name,
                                   "parameters": t.input_schema.unwrap_or_else(|| json!({"type": "object"}))});
                if let Some(d) = t.description {
                    f["description"] = json!(d);
                }
                crate::wire::openai::function_tool(f)
            })
            .collect::<Vec<_>>()
    });
    let tool_choice = match b.tool_choice {
        None => None,
        Some(c) => match (c.kind.as_str(), c.name) {
            ("auto", _) => Some("auto".to_string()),
            ("any", _) => Some("required".to_string()),
            ("none", _) => Some("none".to_string()),
            ("tool", Some(name)) => Some(name),
            _ => {
                return Err(Refusal::invalid(
                    "tool_choice.type must be auto, any, none or tool (with a name)",
                ));
            }
        },
    };
    let mut params = serde_json::Map::new();
    if let Some(p) = b.top_p {
        params.insert("top_p".into(), json!(p));
    }
    if let Some(k) = b.top_k {
        params.insert("top_k".into(), json!(k));
    }
    if let Some(s) = b.stop_sequences.filter(|s| !s.is_empty()) {
        params.insert("stop".into(), json!(s));
    }
    Ok(Asked {
        messages,
        tools: tools.filter(|t| !t.is_empty()),
        tool_choice,
        schema: None,
        model: b.model.filter(|m| !m.trim().is_empty()),
        models: Vec::new(),
        only: Vec::new(),
        ignore: Vec::new(),
        max_tokens: b.max_tokens,
        temperature: b.temperature,
        params,
        stream: b.stream.unwrap_or(false),
    })
}

/// The text of text blocks (a system prompt, a tool result).
fn texts(blocks: &[Value], at: &str) -> Result<String, Refusal> {
    let mut out = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match (b["type"].as_str(), b["text"].as_str()) {
            (Some("text"), Some(t)) => out.push(t.to_string()),
            // Images inside a tool result are not passed on; their text is.
            (Some("image"), _) => {}
            _ => return Err(Refusal::invalid(format!("{at}[{j}] must be a text block"))),
        }
    }
    Ok(out.join("\n\n"))
}

/// One Anthropic turn as OpenAI messages: tool results become `tool` messages (first, as
/// they answer the previous turn's calls), the rest a user or assistant message.
fn turn(i: usize, m: Value, out: &mut Vec<Message>) -> Result<(), Refusal> {
    let role = match m["role"].as_str() {
        Some(r @ ("user" | "assistant")) => r.to_string(),
        Some(r) => {
            return Err(Refusal::invalid(format!(
                "messages[{i}].role `{r}` is not user or assistant"
            )));
        }
        None => {
            return Err(Refusal::invalid(format!(
                "messages[{i}].role is missing or not a string"
            )));
        }
    };
    let blocks = match &m["content"] {
        Value::String(s) => {
            out.push(Message::text(&role, s.clone()));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => {
            return Err(Refusal::invalid(format!(
                "messages[{i}].content must be a string or a list of blocks"
            )));
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match b["type"].as_str() {
            Some("text") => match b["text"].as_str() {
                Some(t) => parts.push(json!({"type": "text", "text": t})),
                None => return Err(Refusal::invalid(format!("{at}.text must be a string"))),
            },
            Some("image") => {
                let s = &b["source"];
                let url = match s["type"].as_str() {
                    Some("base64") => match (s["media_type"].as_str(), s["data"].as_str()) {
                        (Some(t), Some(d)) => format!("data:{t};base64,{d}"),
                        _ => String::new(),
                    },
                    Some("url") => s["url"].as_str().unwrap_or_default().to_string(),
                    _ => String::new(),
                };
                if !image_url_ok(&url) {
                    return Err(Refusal::invalid(format!(
                        "{at}.source must be a base64 image or an http(s) URL"
                    )));
                }
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("tool_use") if role == "assistant" => {
                let (Some(id), Some(name)) = (b["id"].as_str(), b["name"].as_str()) else {
                    return Err(Refusal::invalid(format!("{at} needs an id and a name")));
                };
                calls.push(json!({"id": id, "type": "function",
                                  "function": {"name": name, "arguments": b["input"].to_string()}}));
            }
            Some("tool_result") if role == "user" => {
                let Some(id) = b["tool_use_id"].as_str() else {
                    return Err(Refusal::invalid(format!("{at}.tool_use_id is missing")));
                };
                let mut text = match &b["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(inner) => texts(inner, &format!("{at}.content"))?,
                    Value::Null => String::new(),
                    _ => return Err(Refusal::invalid(format!("{at}.content must be text"))),
                };
                if b["is_error"] == true {
                    text = format!("Error: {text}");
                }
                let mut msg = Message::text("tool", text);
                msg.extra.insert("tool_call_id".into(), json!(id));
                out.push(msg);
            }
            // Earlier turns' reasoning is the client's own; models are not sent it back.
            Some("thinking" | "redacted_thinking") if role == "assistant" => {}
            Some(other) => {
                return Err(Refusal::invalid(format!(
                    "{at}.type `{other}` is not supported in a {role} turn"
                )));
            }
            None => return Err(Refusal::invalid(format!("{at} has no type"))),
        }
    }
    if role == "assistant" {
        let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        if text.is_empty() && calls.is_empty() {
            return Ok(());
        }
        let mut msg = Message::text("assistant", text.join(""));
        if !calls.is_empty() {
            msg.extra.insert("tool_calls".into(), Value::Array(calls));
        }
        out.push(msg);
    } else if !parts.is_empty() {
        let only_text = parts.iter().all(|p| p["type"] == "text");
        let content = if only_text {
            let t: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            Value::String(t.join("\n\n"))
        } else {
            Value::Array(parts)
        };
        out.push(Message {
            role: "user".into(),
            content,
            extra: Default::default(),
        });
    }
    Ok(())
}

/// Anthropic's error types for our status codes.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 408 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

fn error_body(r: &Refusal) -> Value {
    json!({"type": "error", "error": {"type": error_type(r.status), "message": r.message}})
}

pub fn error_response(r: &Refusal) -> Response<Body> {
    http::json(r.status, &error_body(r))
}

fn stop_reason(a: &Answer) -> &'static str {
    if !a.tool_calls.is_empty() {
        return "tool_use";
    }
    match a.finish_reason.as_deref() {
        Some("length") => "max_tokens",
        _ => "end_turn",
    }
}

/// Tool calls as `tool_use` blocks, their input an object.
fn tool_uses(a: &Answer) -> Vec<Value> {
    a.tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let input = match &c["arguments"] {
                Value::Object(_) => c["arguments"].clone(),
                Value::String(s) => serde_json::from_str::<Value>(s)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({})),
                _ => json!({}),
            };
            let id = c["id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map_or_else(|| format!("toolu_{i}"), str::to_string);
            json!({"type": "tool_use", "id": id, "name": c["name"], "input": input})
        })
        .collect()
}

fn usage(a: &Answer) -> (u64, u64) {
    match &a.usage {
        Some(u) => (u.prompt_tokens, u.completion_tokens),
        None => (0, estimate_text(&a.content)),
    }
}

pub fn whole(a: &Answer) -> Response<Body> {
    let mut content = Vec::new();
    if !a.content.is_empty() {
        content.push(json!({"type": "text", "text": a.content}));
    }
    content.extend(tool_uses(a));
    let (input, output) = usage(a);
    http::json(
        StatusCode::OK,
        &json!({
            "id": response_id("msg_"), "type": "message", "role": "assistant",
            "model": a.model, "content": content, "stop_reason": stop_reason(a),
            "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output},
        }),
    )
}

/// The event sequence: `message_start`, `content_block_*`, `message_delta`,
/// `message_stop`; `ping` while waiting; an `error` event on failure.
pub struct Stream {
    id: String,
    model: String,
    started: bool,
    /// Index of the text block being written, if one is open.
    text_block: Option<usize>,
    next_block: usize,
}

impl Stream {
    pub fn new(requested: Option<String>) -> Self {
        Stream {
            id: response_id("msg_"),
            model: requested.unwrap_or_else(|| "auto".into()),
            started: false,
            text_block: None,
            next_block: 0,
        }
    }

    fn start(&mut self) -> String {
        if self.started {
            return String::new();
        }
        self.started = true;
        event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        )
    }

    fn close_text(&mut self) -> String {
        match self.text_block.take() {
            Some(i) => event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            ),
            None => String::new(),
        }
    }
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl Encoder for Stream {
    fn keepalive(&mut self) -> String {
        self.start() + &event("ping", &json!({"type": "ping"}))
    }

    fn answering(&mut self, _provider: &str, model: &str) {
        if !self.started {
            self.model = model.into();
        }
    }

    fn token(&mut self, text: &str) -> String {
        let mut out = self.start();
        let index = match self.text_block {
            Some(i) => i,
            None => {
                let i = self.next_block;
                self.next_block += 1;
                self.text_block = Some(i);
                out += &event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": i,
                            "content_block": {"type": "text", "text": ""}}),
                );
                i
            }
        };
        out + &event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
        )
    }

    fn finish(&mut self, a: &Answer, forwarded: bool) -> String {
        if !self.started {
            self.model = a.model.clone();
        }
        let mut out = self.start();
        if !forwarded && !a.content.is_empty() {
            out += &self.token(&a.content);
        }
        out += &self.close_text();
        for tool in tool_uses(a) {
            let i = self.next_block;
            self.next_block += 1;
            let mut start = tool.clone();
            start["input"] = json!({});
            out += &event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": i, "content_block": start}),
            );
            out += &event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": tool["input"].to_string()}}),
            );
            out += &event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            );
        }
        let (_, output) = usage(a);
        out += &event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(a), "stop_sequence": null},
                    "usage": {"output_tokens": output}}),
        );
        out + &event("message_stop", &json!({"type": "message_stop"}))
    }

    fn fail(&mut self, r: &Refusal) -> String {
        event("error", &error_body(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_turns_become_tool_calls_and_tool_messages() {
        let body = br#"{"model": "claude-sonnet-4-5", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}],
          "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me see."},
               {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
               {"type": "text", "text": "thanks"}]}]}"#;
        let a = parse(body).ok().unwrap();
        let roles: Vec<&str> = a.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(
            a.messages[2].extra["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(a.messages[3].extra["tool_call_id"], "toolu_1");
        assert_eq!(a.max_tokens, Some(100));
    }

    #[test]
    fn bad_turns_are_refused() {
        for b in [
            r#"{"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}"#,
            r#"{"max_tokens": 5, "messages": []}"#,
            r#"{"max_tokens": "five", "messages": [{"role": "user", "content": "x"}]}"#,
            r#"{"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "path": "/etc"}}]}]}"#,
        ] {
            assert_eq!(
                parse(b.as_bytes()).err().unwrap().status,
                StatusCode::BAD_REQUEST,
                "{b}"
            );
        }
    }
}
