//! Serde types of the OpenAI-compatible chat-completions wire format, as OpenRouter and
//! local servers speak it (`reference/openrouter.md` §1.2–§1.4). Tolerant: every field a
//! server may omit has a default, and unknown fields are ignored. Builders for the shapes freeroute sends; no policy.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A chat message. `content` is a string or a list of content parts, kept as JSON; other
/// fields (`tool_calls`, `tool_call_id`, `name`) ride along in `extra`. This module is the
/// only one that knows the shapes of content parts, tool choices and response formats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Value,
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, Value>,
}

impl Message {
    pub fn text(role: &str, text: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: Value::String(text.into()),
            extra: Default::default(),
        }
    }

    /// A user turn: its text, then its images (OpenRouter's recommended order). Some
    /// providers refuse an empty text part, so a blank text is left out.
    pub fn user(text: &str, image_urls: &[&str]) -> Self {
        if image_urls.is_empty() {
            return Message::text("user", text);
        }
        let mut parts = Vec::new();
        if !text.trim().is_empty() {
            parts.push(json!({"type": "text", "text": text}));
        }
        parts.extend(
            image_urls
                .iter()
                .map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
        );
        Message {
            role: "user".into(),
            content: Value::Array(parts),
            extra: Default::default(),
        }
    }

    /// Rewrites every image part's URL: `f` gives the new URL, or `None` to replace the
    /// part by a text part saying what was there.
    pub fn map_image_urls(&mut self, f: &mut dyn FnMut(&str) -> Result<String, String>) {
        let Value::Array(parts) = &mut self.content else {
            return;
        };
        for part in parts.iter_mut().filter(|p| p["type"] == "image_url") {
            let url = part["image_url"]["url"].as_str().unwrap_or_default();
            *part = match f(url) {
                Ok(new) => json!({"type": "image_url", "image_url": {"url": new}}),
                Err(text) => json!({"type": "text", "text": text}),
            };
        }
    }

    /// The URLs of its image parts.
    pub fn image_urls(&self) -> impl Iterator<Item = &str> {
        self.content
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["type"] == "image_url")
            .filter_map(|p| p["image_url"]["url"].as_str())
    }

    /// An answer as the assistant's turn of a kept conversation, with its tool calls in
    /// the wire's shape (`{id, type, function: {name, arguments}}`, arguments as a string).
    pub fn assistant(content: &str, tool_calls: &[Value]) -> Self {
        let mut m = Message::text("assistant", content);
        if !tool_calls.is_empty() {
            let calls = tool_calls
                .iter()
                .map(|c| {
                    let arguments = match &c["arguments"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    json!({"id": c["id"], "type": "function",
                           "function": {"name": c["name"], "arguments": arguments}})
                })
                .collect();
            m.extra.insert("tool_calls".into(), Value::Array(calls));
        }
        m
    }

    /// The message carries an image part.
    pub fn has_image(&self) -> bool {
        self.content
            .as_array()
            .is_some_and(|parts| parts.iter().any(|p| p["type"] == "image_url"))
    }

    /// The text of the message: its string content, or its text parts joined.
    pub fn plain_text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// A cheap, deliberately generous token estimate: about four bytes a token, an image
    /// as `IMAGE_TOKENS` (its base64 is not text), plus a few tokens of framing.
    pub fn estimated_tokens(&self) -> u64 {
        let content = match &self.content {
            Value::String(s) => estimate_text(s),
            Value::Array(parts) => parts
                .iter()
                .map(|p| match p["type"].as_str() {
                    Some("text") => estimate_text(p["text"].as_str().unwrap_or_default()),
                    Some("image_url") => IMAGE_TOKENS,
                    _ => estimate_text(&p.to_string()),
                })
                .sum(),
            Value::Null => 0,
            other => estimate_text(&other.to_string()),
        };
        let extra = if self.extra.is_empty() {
            0
        } else {
            estimate_text(&Value::Object(self.extra.clone()).to_string())
        };
        content + extra + 8
    }
}

/// Tokens an image is counted as in the context estimate.
pub const IMAGE_TOKENS: u64 = 1_000;

/// About four bytes a token.
pub fn estimate_text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// A tool definition as the wire wants it, from its `function` object.
pub fn function_tool(function: Value) -> Value {
    json!({"type": "function", "function": function})
}

/// `tool_choice`: a word, or one named function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

impl Serialize for ToolChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Function(name) => {
                json!({"type": "function", "function": {"name": name}}).serialize(s)
            }
        }
    }
}

/// `response_format` asking for JSON that matches a schema.
#[derive(Debug, Serialize)]
pub struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub json_schema: JsonSchemaFormat<'a>,
}

#[derive(Debug, Serialize)]
pub struct JsonSchemaFormat<'a> {
    pub name: &'static str,
    pub schema: &'a Value,
}

impl<'a> ResponseFormat<'a> {
    pub fn json_schema(schema: &'a Value) -> Self {
        ResponseFormat {
            kind: "json_schema",
            json_schema: JsonSchemaFormat {
                name: "answer",
                schema,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

/// The request body of `POST {base}/chat/completions`.
#[derive(Debug, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [Message],
    pub stream: bool,
    /// Deprecated and ignored by OpenRouter; llama.cpp sends usage only when asked.
    pub stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<&'a [Value]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat<'a>>,
    /// OpenRouter's provider preferences (`require_parameters` for tools and schemas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderPreferences>,
    /// Sampling parameters passed on as given (`Request::params`).
    #[serde(flatten)]
    pub params: &'a serde_json::Map<String, Value>,
}

/// OpenRouter's `provider` object: only what freeroute sets.
#[derive(Debug, Serialize)]
pub struct ProviderPreferences {
    /// Route only to endpoints that honour every parameter sent (tools, a schema).
    pub require_parameters: bool,
}

/// Reads a field freeroute can do without: a value of the wrong type (`"model": 12345`,
/// `"prompt_tokens": -1`) reads as absent instead of failing the whole chunk and losing
/// its text.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let v = Value::deserialize(d)?;
    Ok(T::deserialize(v).unwrap_or_default())
}

/// One fragment of a streamed tool call, keyed by `index` (reference §1.4); a
/// non-streaming answer carries whole calls in the same shape.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default, deserialize_with = "lenient")]
    pub index: Option<usize>,
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

impl ToolCallDelta {
    /// Bytes of name and arguments it carries (what bounds an answer's size).
    pub fn text_len(&self) -> usize {
        self.function.as_ref().map_or(0, |f| {
            f.name.as_ref().map_or(0, String::len)
                + f.arguments.as_ref().map_or(0, |a| match a {
                    Value::String(s) => s.len(),
                    other => other.to_string().len(),
                })
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    /// A piece of the JSON arguments (a whole string in non-streaming answers; some
    /// servers send an object).
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// `error` inside a body or a chunk. `code` is a number or a string (§1.4).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireError {
    #[serde(default)]
    pub code: Option<Value>,
    #[serde(default, deserialize_with = "lenient")]
    pub message: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "lenient")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "lenient")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "lenient")]
    pub total_tokens: u64,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub reasoning: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub delta: Option<Delta>,
    /// Non-streaming answers carry `message` instead of `delta`.
    #[serde(default)]
    pub message: Option<Delta>,
    #[serde(default, deserialize_with = "lenient")]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub error: Option<WireError>,
}

/// One SSE chunk, or a whole non-streaming answer (same fields, `message` for `delta`).
#[derive(Debug, Default, Deserialize)]
pub struct Chunk {
    #[serde(default, deserialize_with = "lenient")]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default, deserialize_with = "lenient")]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<WireError>,
}

/// An error body: `{"error": {…}}`, or Gemini's `[{"error": {…}}]` (§0 item 19).
pub fn parse_error_body(body: &[u8]) -> Option<WireError> {
    #[derive(Deserialize)]
    struct Body {
        error: Value,
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let obj = match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        other => other,
    };
    let body: Body = serde_json::from_value(obj).ok()?;
    match body.error {
        Value::String(s) => Some(WireError {
            message: Some(s),
            ..Default::default()
        }),
        other => serde_json::from_value(other).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_every_shape() {
        let e =
            parse_error_body(br#"{"error":{"code":429,"message":"Rate limit exceeded"}}"#).unwrap();
        assert_eq!(e.message.as_deref(), Some("Rate limit exceeded"));
        let e = parse_error_body(
            br#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#,
        )
        .unwrap();
        assert_eq!(e.message.as_deref(), Some("quota"));
        let e = parse_error_body(br#"{"error":{"code":"server_error","message":"x"}}"#).unwrap();
        assert_eq!(e.code, Some(Value::String("server_error".into())));
        let e = parse_error_body(br#"{"error":"plain"}"#).unwrap();
        assert_eq!(e.message.as_deref(), Some("plain"));
        assert!(parse_error_body(b"<html>502</html>").is_none());
    }

    #[test]
    fn chunk_with_unknown_fields_and_empty_choices() {
        let c: Chunk = serde_json::from_str(
            r#"{"id":"gen-1","provider":"Venice","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"cost":0}}"#,
        )
        .unwrap();
        assert!(c.choices.is_empty());
        assert_eq!(c.usage.unwrap().total_tokens, 7);
    }
}
