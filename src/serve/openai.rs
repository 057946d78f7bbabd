//! The OpenAI Chat Completions API of `serve` (DESIGN §8), with OpenRouter's conventions
//! (`models`, `provider.only`/`ignore`, `provider` in every chunk, the mid-stream error
//! chunk of `reference/openrouter.md` §1.4). Reads a body into `Asked`, renders answers,
//! chunks and errors; asks nothing itself.

use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self, Body};
use super::{Asked, Encoder, Refusal, response_id, unix_secs};
use crate::outcome::Answer;
use crate::request::AnswerSchema;
use crate::wire::openai::Message;

/// The fields read from a request; any other field is accepted and ignored. A field of the
/// wrong type is a 400 naming where it is.
#[derive(Deserialize)]
struct ChatBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    messages: Vec<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    min_p: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    repetition_penalty: Option<f64>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    provider: Option<ProviderPrefs>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct ProviderPrefs {
    #[serde(default)]
    only: Option<Vec<String>>,
    #[serde(default)]
    ignore: Option<Vec<String>>,
}

/// Roles a message may have (DESIGN §8: any other is a 400).
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

pub fn parse(body: &[u8]) -> Result<Asked, Refusal> {
    let b: ChatBody = serde_json::from_slice(body).map_err(|e| {
        Refusal::invalid(format!("The request body is not a valid chat request: {e}"))
    })?;
    if b.messages.is_empty() {
        return Err(Refusal::invalid(
            "`messages` is empty: send at least one message",
        ));
    }
    let messages = b
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let tools = b.tools.map(|t| tools(&t)).transpose()?;
    let tool_choice = b
        .tool_choice
        .map(|c| tool_choice(&c))
        .transpose()?
        .flatten();
    let schema = b
        .response_format
        .map(|f| response_format(&f))
        .transpose()?
        .flatten();
    let mut params = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            params.insert(k.into(), v);
        }
    };
    put("top_p", b.top_p.map(Value::from));
    put("top_k", b.top_k.map(Value::from));
    put("min_p", b.min_p.map(Value::from));
    put("seed", b.seed.map(Value::from));
    put(
        "stop",
        b.stop.map(|s| serde_json::to_value(s).expect("serializes")),
    );
    put("frequency_penalty", b.frequency_penalty.map(Value::from));
    put("presence_penalty", b.presence_penalty.map(Value::from));
    put("repetition_penalty", b.repetition_penalty.map(Value::from));
    let (only, ignore) = b.provider.map_or((None, None), |p| (p.only, p.ignore));
    Ok(Asked {
        messages,
        tools,
        tool_choice,
        schema,
        model: b.model.filter(|m| !m.trim().is_empty()),
        models: b.models.unwrap_or_default(),
        only: only.unwrap_or_default(),
        ignore: ignore.unwrap_or_default(),
        max_tokens: b.max_completion_tokens.or(b.max_tokens),
        temperature: b.temperature,
        params,
        stream: b.stream.unwrap_or(false),
    })
}

/// One message, checked: a known role, content a string, null or a list of text and image
/// parts (an image a URL or a data URL), tool calls and ids riding along.
fn message(i: usize, m: Value) -> Result<Message, Refusal> {
    let Value::Object(mut obj) = m else {
        return Err(Refusal::invalid(format!("messages[{i}] is not an object")));
    };
    let role = match obj.remove("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r,
        Some(Value::String(r)) => {
            return Err(Refusal::invalid(format!(
                "messages[{i}].role `{r}` is not one of {}",
                ROLES.join(", ")
            )));
        }
        _ => {
            return Err(Refusal::invalid(format!(
                "messages[{i}].role is missing or not a string"
            )));
        }
    };
    let content = match obj.remove("content") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s),
        Some(Value::Array(parts)) => Value::Array(
            parts
                .into_iter()
                .enumerate()
                .map(|(j, p)| part(i, j, p))
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => {
            return Err(Refusal::invalid(format!(
                "messages[{i}].content must be a string or a list of parts"
            )));
        }
    };
    let mut extra = serde_json::Map::new();
    for key in ["name", "tool_call_id"] {
        match obj.remove(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                extra.insert(key.into(), Value::String(s));
            }
            Some(_) => {
                return Err(Refusal::invalid(format!(
                    "messages[{i}].{key} must be a string"
                )));
            }
        }
    }
    match obj.remove("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, c) in calls.iter().enumerate() {
                if !c["function"]["name"].is_string() {
                    return Err(Refusal::invalid(format!(
                        "messages[{i}].tool_calls[{j}].function.name is missing"
                    )));
                }
            }
            extra.insert("tool_calls".into(), Value::Array(calls));
        }
        Some(_) => {
            return Err(Refusal::invalid(format!(
                "messages[{i}].tool_calls must be a list"
            )));
        }
    }
    Ok(Message {
        role,
        content,
        extra,
    })
}

fn part(i: usize, j: usize, p: Value) -> Result<Value, Refusal> {
    let at = format!("messages[{i}].content[{j}]");
    match p["type"].as_str() {
        Some("text") => match p["text"].as_str() {
            Some(t) => Ok(json!({"type": "text", "text": t})),
            None => Err(Refusal::invalid(format!("{at}.text must be a string"))),
        },
        Some("image_url") => {
            // `image_url` is an object with `url` (the SDKs), or the URL itself.
            let url = p["image_url"]["url"].as_str().or(p["image_url"].as_str());
            match url {
                Some(u) if image_url_ok(u) => {
                    let mut image = json!({"url": u});
                    if let Some(d) = p["image_url"]["detail"].as_str() {
                        image["detail"] = json!(d);
                    }
                    Ok(json!({"type": "image_url", "image_url": image}))
                }
                _ => Err(Refusal::invalid(format!(
                    "{at}.image_url must be an http(s) URL or a data:image/…;base64 URL"
                ))),
            }
        }
        Some(other) => Err(Refusal::invalid(format!(
            "{at}.type `{other}` is not supported (text and image_url are)"
        ))),
        None => Err(Refusal::invalid(format!("{at} has no type"))),
    }
}

/// An image part's URL: http(s), or a base64 data URL of an image.
pub fn image_url_ok(u: &str) -> bool {
    let lower = u.get(..16).unwrap_or(u).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return u.len() > 8 && url::Url::parse(u).is_ok();
    }
    lower.starts_with("data:image/")
        && u.split_once(',')
            .is_some_and(|(head, data)| head.ends_with(";base64") && !data.is_empty())
}

fn tools(list: &[Value]) -> Result<Vec<Value>, Refusal> {
    for (i, t) in list.iter().enumerate() {
        if t["type"] != "function" || !t["function"]["name"].is_string() {
            return Err(Refusal::invalid(format!(
                "tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\", …}}}}"
            )));
        }
        if !t["function"]["parameters"].is_null() && !t["function"]["parameters"].is_object() {
            return Err(Refusal::invalid(format!(
                "tools[{i}].function.parameters must be a JSON Schema object"
            )));
        }
    }
    Ok(list.to_vec())
}

/// `auto`, `none`, `required`, or a function's name.
fn tool_choice(c: &Value) -> Result<Option<String>, Refusal> {
    match c {
        Value::Null => Ok(None),
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
            Ok(Some(s.clone()))
        }
        Value::Object(_) if c["function"]["name"].is_string() => {
            Ok(c["function"]["name"].as_str().map(str::to_string))
        }
        _ => Err(Refusal::invalid(
            "tool_choice must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\"}}",
        )),
    }
}

/// `response_format`: `json_schema` is checked against its schema; `json_object` asks for
/// any JSON object; `text` for nothing.
fn response_format(f: &Value) -> Result<Option<AnswerSchema>, Refusal> {
    let doc = match f["type"].as_str() {
        Some("text") => return Ok(None),
        Some("json_object") => json!({"type": "object"}),
        Some("json_schema") => match &f["json_schema"]["schema"] {
            Value::Object(_) | Value::Bool(_) => f["json_schema"]["schema"].clone(),
            _ => {
                return Err(Refusal::invalid(
                    "response_format.json_schema.schema must be a JSON Schema object",
                ));
            }
        },
        _ => {
            return Err(Refusal::invalid(
                "response_format.type must be text, json_object or json_schema",
            ));
        }
    };
    AnswerSchema::compile(doc)
        .map(Some)
        .map_err(|e| Refusal::invalid(format!("response_format's schema is not valid: {e}")))
}

/// OpenAI's error categories for our status codes.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 405 | 408 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

pub fn error_response(r: &Refusal) -> Response<Body> {
    http::json(
        r.status,
        &json!({"error": {"message": r.message, "type": error_type(r.status), "code": r.code}}),
    )
}

/// Tool calls in the wire's shape, arguments as a JSON string.
fn tool_calls(answer: &Answer, streamed: bool) -> Vec<Value> {
    answer
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let arguments = match &c["arguments"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let id = c["id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map_or_else(|| format!("call_{i}"), str::to_string);
            let mut v = json!({"id": id, "type": "function",
                               "function": {"name": c["name"], "arguments": arguments}});
            if streamed {
                v["index"] = json!(i);
            }
            v
        })
        .collect()
}

fn finish_reason(answer: &Answer) -> String {
    if !answer.tool_calls.is_empty() {
        return "tool_calls".into();
    }
    match answer.finish_reason.as_deref() {
        Some(r) if !r.is_empty() => r.into(),
        _ => "stop".into(),
    }
}

fn usage(answer: &Answer) -> Value {
    match &answer.usage {
        Some(u) => json!(u),
        None => Value::Null,
    }
}

/// A non-streamed answer.
pub fn whole(answer: &Answer) -> Response<Body> {
    let calls = tool_calls(answer, false);
    let content = if answer.content.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(answer.content.clone())
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let mut body = json!({
        "id": response_id("chatcmpl-"),
        "object": "chat.completion",
        "created": unix_secs(),
        "model": answer.model,
        "provider": answer.provider,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(answer),
                     "logprobs": null}],
    });
    let u = usage(answer);
    if !u.is_null() {
        body["usage"] = u;
    }
    http::json(StatusCode::OK, &body)
}

/// A streamed answer: chunks as OpenRouter sends them, `model` and `provider` in each.
pub struct Stream {
    id: String,
    created: u64,
    model: String,
    provider: String,
    /// A token chunk's text up to its content, for the current model and provider: a
    /// token is this, its JSON string, and `TOKEN_TAIL` (one allocation, not a `Value`).
    token_head: String,
}

const TOKEN_TAIL: &str = "},\"finish_reason\":null}]}\n\n";

impl Stream {
    pub fn new(requested: Option<String>) -> Self {
        let mut s = Stream {
            id: response_id("chatcmpl-"),
            created: unix_secs(),
            model: requested.unwrap_or_else(|| "auto".into()),
            provider: "freeroute".into(),
            token_head: String::new(),
        };
        s.token_head = s.head();
        s
    }

    fn head(&self) -> String {
        format!(
            "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"provider\":{},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":",
            json!(self.id),
            self.created,
            json!(self.model),
            json!(self.provider)
        )
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "provider": self.provider,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }
}

fn event(v: &Value) -> String {
    format!("data: {v}\n\n")
}

impl Encoder for Stream {
    fn keepalive(&mut self) -> String {
        ": FREEROUTE PROCESSING\n\n".into()
    }

    fn answering(&mut self, provider: &str, model: &str) {
        self.provider = provider.into();
        self.model = model.into();
        self.token_head = self.head();
    }

    fn token(&mut self, text: &str) -> String {
        let quoted = serde_json::to_string(text).expect("a string serializes");
        let mut out =
            String::with_capacity(self.token_head.len() + quoted.len() + TOKEN_TAIL.len());
        out.push_str(&self.token_head);
        out.push_str(&quoted);
        out.push_str(TOKEN_TAIL);
        out
    }

    fn finish(&mut self, answer: &Answer, forwarded: bool) -> String {
        // The answering model's own name (a router names the model it picked).
        self.model = answer.model.clone();
        self.provider = answer.provider.clone();
        self.token_head = self.head();
        let mut out = String::new();
        if !forwarded && !answer.content.is_empty() {
            out += &self.token(&answer.content);
        }
        let calls = tool_calls(answer, true);
        if !calls.is_empty() {
            out += &event(&self.chunk(
                json!({"role": "assistant", "content": null, "tool_calls": calls}),
                None,
            ));
        }
        out += &event(&self.chunk(json!({}), Some(&finish_reason(answer))));
        let u = usage(answer);
        if !u.is_null() {
            let mut c = self.chunk(json!({}), None);
            c["choices"] = json!([]);
            c["usage"] = u;
            out += &event(&c);
        }
        out + "data: [DONE]\n\n"
    }

    fn fail(&mut self, r: &Refusal) -> String {
        let mut c = self.chunk(json!({"content": ""}), Some("error"));
        c["error"] = json!({"code": r.status.as_u16(), "message": r.message,
                            "metadata": {"error_type": r.code}});
        event(&c) + "data: [DONE]\n\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_chunk_is_the_json_of_a_chunk() {
        let mut s = Stream::new(Some("m".into()));
        s.answering("openrouter", "x/y:free");
        let t = s.token("a \"quoted\"\nline");
        let v: Value = serde_json::from_str(t.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(v["choices"][0]["delta"]["content"], "a \"quoted\"\nline");
        assert_eq!(v["model"], "x/y:free");
        assert_eq!(v["provider"], "openrouter");
        assert!(v["choices"][0]["finish_reason"].is_null());
        assert!(t.ends_with("\n\n"));
    }

    #[test]
    fn image_urls_must_be_urls_or_data_urls() {
        assert!(image_url_ok("https://example.com/a.png"));
        assert!(image_url_ok("data:image/png;base64,iVBORw0KGgo="));
        assert!(!image_url_ok("data:image/png;base64,"));
        assert!(!image_url_ok("data:text/plain;base64,aGk="));
        assert!(!image_url_ok("file:///etc/passwd"));
        assert!(!image_url_ok("/tmp/a.png"));
        assert!(!image_url_ok("https://"));
    }

    #[test]
    fn wrong_types_and_roles_are_refused() {
        let bad = [
            r#"{"messages": "hi"}"#,
            r#"{"messages": []}"#,
            r#"{"model": 5, "messages": [{"role": "user", "content": "hi"}]}"#,
            r#"{"messages": [{"role": "wizard", "content": "hi"}]}"#,
            r#"{"messages": [{"role": "user", "content": 5}]}"#,
            r#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}]}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema"}}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}"#,
        ];
        for b in bad {
            let r = parse(b.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("accepted {b}"));
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}");
        }
        let ok = parse(
            br#"{"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "top_p": 0.5, "stop": ["x"], "provider": {"only": ["a"]}}"#,
        )
        .ok()
        .unwrap();
        assert_eq!(ok.params["top_p"], json!(0.5));
        assert_eq!(ok.only, vec!["a"]);
    }
}
