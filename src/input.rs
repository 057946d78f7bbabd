//! Turns what the user typed, piped and named into values (DESIGN §1): the prompt text,
//! images, tool definitions, a JSON Schema, a conversation. The only module that reads
//! standard input or the user's input files; every problem is an input error (exit 2)
//! naming the file and what is wrong, found before any request is sent.

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::request::AnswerSchema;
use crate::wire::openai::Message;

/// The largest image accepted, before base64: 20 MiB (20,971,520 bytes; most providers
/// refuse far less, and OpenAI documents 20 MB as its ceiling).
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// Everything read from the user's inputs for one prompt.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Words and piped text, joined as the contract says (may be empty).
    pub prompt: String,
    pub images: Vec<Image>,
    pub tools: Option<Vec<Value>>,
    pub schema: Option<AnswerSchema>,
    /// A whole conversation from `--messages`.
    pub messages: Option<Vec<Message>>,
    /// The images of the earlier conversation (`--continue`), read again.
    pub kept: Vec<Image>,
}

/// An image ready to send: a `data:` URL, or an http(s) URL passed through.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub url: String,
    /// Where it came from, for messages.
    pub source: String,
    /// The file it was read from (absolute): what a kept conversation stores instead of
    /// its bytes (`--continue` reads it again).
    pub file: Option<PathBuf>,
}

/// Whether standard input is a terminal (then it is never read).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The largest prompt read from standard input (far beyond any model's context).
pub const MAX_PROMPT_BYTES: usize = 32 * 1024 * 1024;
/// The largest tools file, `--messages` conversation and JSON Schema read.
pub const MAX_TOOLS_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_MESSAGES_BYTES: usize = 64 * 1024 * 1024;
pub const MAX_SCHEMA_BYTES: usize = 1024 * 1024;

/// Where an input comes from.
#[derive(Clone)]
enum From {
    Stdin,
    File(PathBuf),
}

/// Reads one input whole: at most `limit` bytes and one more (so that a caller can tell it
/// is too large: `read_limited`), and, from a pipe or FIFO, within `within` (a FIFO with no writer, or a pipe whose
/// writer never finishes, is an input error at the deadline, never a run that hangs).
/// That read runs on a thread of its own so that the wait is bounded; a thread left
/// blocked ends with the process.
fn read_input(from: From, what: &str, limit: usize, within: Duration) -> Result<Vec<u8>> {
    let starting = capitalized(what);
    let cannot = |e: std::io::Error| Error::input(format!("Cannot read {what}")).with_source(e);
    let open = move |from: &From| -> std::io::Result<std::fs::File> {
        match from {
            From::Stdin => Ok(std::fs::File::from(
                std::io::stdin().as_fd().try_clone_to_owned()?,
            )),
            From::File(path) => std::fs::File::open(path),
        }
    };
    let read = move |file: std::fs::File| -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        file.take(limit as u64 + 1).read_to_end(&mut buf)?;
        Ok(buf)
    };
    // Only a pipe or socket can keep a read waiting; anything else is read here and now.
    let waits = match &from {
        From::Stdin => open(&from).and_then(|f| f.metadata()),
        From::File(path) => std::fs::metadata(path),
    }
    .map_err(cannot)?
    .file_type();
    let bytes = if !(waits.is_fifo() || waits.is_socket()) {
        open(&from).and_then(read).map_err(cannot)?
    } else {
        let (tx, rx) = std::sync::mpsc::channel();
        let source = from.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open(&source).and_then(read));
        });
        // Never less than a second: a writer that is there is quick, whatever --timeout.
        let wait = within.max(Duration::from_secs(1));
        match rx.recv_timeout(wait) {
            Ok(read) => read.map_err(cannot)?,
            Err(_) => {
                return Err(Error::input(format!(
                    "{starting} gave nothing to read within {:.0} s",
                    wait.as_secs_f64()
                ))
                .with_hint(match from {
                    From::Stdin => "Close standard input, or pass the text as words",
                    From::File(_) => "Is it a FIFO with no writer? Pass a regular file",
                }));
            }
        }
    };
    Ok(bytes)
}

/// `what` is said mid-sentence ("Cannot read schema file x") and, capitalized, at the start
/// of one ("Schema file x is larger than 1 MiB").
fn capitalized(what: &str) -> String {
    let mut c = what.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect::<String>())
        .unwrap_or_default()
}

/// `read_input`, and more than `limit` bytes is an input error saying the limit.
fn read_limited(from: From, what: &str, limit: usize, within: Duration) -> Result<Vec<u8>> {
    let bytes = read_input(from, what, limit, within)?;
    if bytes.len() > limit {
        return Err(Error::input(format!(
            "{} is larger than {}",
            capitalized(what),
            human_size(limit)
        )));
    }
    Ok(bytes)
}

/// `20 MiB`, `512 KiB`.
fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn read_stdin_bytes(limit: usize, within: Duration) -> Result<Vec<u8>> {
    read_limited(From::Stdin, "standard input", limit, within)
}

/// What the user named on the command line that this module reads.
pub struct Sources<'a> {
    pub words: &'a [String],
    pub images: &'a [String],
    pub tools: Option<&'a Path>,
    pub schema: Option<&'a str>,
    pub messages: Option<&'a str>,
    /// How long any one of them may take to read (the run's timeout).
    pub within: Duration,
}

/// Reads every input. Standard input goes to exactly one use: image bytes (`-i -`), a
/// conversation (`--messages -`), or prompt text.
pub fn gather(src: &Sources) -> Result<Input> {
    let image_stdin = src.images.iter().filter(|i| i.as_str() == "-").count();
    let messages_stdin = src.messages == Some("-");
    if image_stdin > 1 || (image_stdin == 1 && messages_stdin) {
        return Err(Error::usage(
            "Standard input can feed only one of -i - and --messages -",
        ));
    }
    let mut input = Input::default();
    let stdin_free = image_stdin == 0 && !messages_stdin;
    let piped = if stdin_free && !stdin_is_terminal() {
        let bytes = read_stdin_bytes(MAX_PROMPT_BYTES, src.within)?;
        Some(String::from_utf8(bytes).map_err(|_| {
            Error::input("Standard input is not UTF-8 text")
                .with_hint("To send an image from standard input, pass -i -")
        })?)
    } else {
        None
    };
    input.prompt = join_prompt(src.words, piped.as_deref());
    for spec in src.images {
        input.images.push(load_image(spec, src.within)?);
    }
    if let Some(path) = src.tools {
        input.tools = Some(load_tools(path, src.within)?);
    }
    if let Some(arg) = src.schema {
        input.schema = Some(load_schema(arg, src.within)?);
    }
    if let Some(arg) = src.messages {
        input.messages = Some(load_messages(arg, src.within)?);
    }
    Ok(input)
}

/// The prompt: the words joined by spaces; with piped text too, the piped text, a blank
/// line, then the words.
pub fn join_prompt(words: &[String], piped: Option<&str>) -> String {
    let words = words.join(" ");
    let piped = piped
        .map(|p| p.trim_end_matches(['\n', '\r']))
        .filter(|p| !p.trim().is_empty());
    match (piped, words.trim().is_empty()) {
        (Some(p), true) => p.to_string(),
        (Some(p), false) => format!("{p}\n\n{words}"),
        (None, _) => words,
    }
}

/// The MIME type from the first bytes (PNG, JPEG, GIF, WebP), whatever the file is called.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Reads `-i SPEC`: a file, `-` (standard input), or an http(s) URL passed through.
pub fn load_image(spec: &str, within: Duration) -> Result<Image> {
    if spec.starts_with("https://") || spec.starts_with("http://") {
        reqwest::Url::parse(spec)
            .map_err(|e| Error::input(format!("Image URL {spec} is not valid")).with_source(e))?;
        return Ok(Image {
            url: spec.to_string(),
            source: spec.to_string(),
            file: None,
        });
    }
    // Read to the limit and a byte more: `image_from_bytes` judges the size.
    let (from, name) = match spec {
        "-" => (From::Stdin, "standard input"),
        path => (From::File(path.into()), path),
    };
    let bytes = read_input(from, &format!("image {name}"), MAX_IMAGE_BYTES, within)?;
    let mut image = image_from_bytes(name, &bytes)?;
    if spec != "-" {
        image.file = std::fs::canonicalize(spec).ok();
    }
    Ok(image)
}

pub fn image_from_bytes(name: &str, bytes: &[u8]) -> Result<Image> {
    if bytes.is_empty() {
        return Err(Error::input(format!("Image {name} is empty")));
    }
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(Error::input(format!(
            "Image {name} is larger than {}",
            human_size(MAX_IMAGE_BYTES)
        ))
        .with_hint("Scale it down or compress it (e.g. convert in.png -resize 50% out.jpg)"));
    }
    let mime = sniff_image(bytes).ok_or_else(|| {
        Error::input(format!("{name} is not a PNG, JPEG, GIF or WebP image"))
            .with_hint("Convert it to PNG or JPEG first")
    })?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(Image {
        url: format!("data:{mime};base64,{b64}"),
        source: name.to_string(),
        file: None,
    })
}

/// The scheme under which a kept conversation names an image file.
const FILE_URL: &str = "file://";

/// The `file://` URL a kept conversation stores for an image read from `path`.
pub fn file_url(path: &Path) -> String {
    format!("{FILE_URL}{}", path.display())
}

/// `--continue`: reads again every image the kept conversation names by its file, and
/// returns them (so that the conversation is kept the same way after this run). An image
/// whose file is gone is an input error naming it.
pub fn restore_images(messages: &mut [Message], within: Duration) -> Result<Vec<Image>> {
    let mut restored = Vec::new();
    let mut failed = None;
    for m in messages.iter_mut() {
        m.map_image_urls(&mut |url| {
            let Some(path) = url.strip_prefix(FILE_URL) else {
                return Ok(url.to_string());
            };
            match load_image(path, within) {
                Ok(image) => {
                    let url = image.url.clone();
                    restored.push(image);
                    Ok(url)
                }
                Err(e) => {
                    failed.get_or_insert(
                        Error::input(format!(
                            "The conversation's image {path} cannot be read again"
                        ))
                        .with_source(e)
                        .with_hint("Put the file back, or start a new conversation without -c"),
                    );
                    Ok(url.to_string())
                }
            }
        });
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(restored),
    }
}

fn read_json_file(path: &Path, what: &str, limit: usize, within: Duration) -> Result<Value> {
    // Mid-sentence ("Cannot read schema file x"): the noun in lower case.
    let name = format!("{} file {}", what.to_lowercase(), path.display());
    let bytes = read_limited(From::File(path.into()), &name, limit, within)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::input(format!("{what} file {} is not UTF-8", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::input(format!(
            "{what} file {} is not valid JSON: {e}",
            path.display()
        ))
    })
}

/// `--tools FILE`: an array of OpenAI-style tools, or an object with `tools`. A bare
/// function (`{"name", "parameters"}`) is wrapped as `{"type": "function", "function": …}`.
pub fn load_tools(path: &Path, within: Duration) -> Result<Vec<Value>> {
    let v = read_json_file(path, "Tools", MAX_TOOLS_BYTES, within)?;
    let list = match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("tools") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(Error::input(format!(
                    "Tools file {} must hold an array of tools or an object with a `tools` array",
                    path.display()
                )));
            }
        },
        _ => {
            return Err(Error::input(format!(
                "Tools file {} must hold an array of tools",
                path.display()
            )));
        }
    };
    if list.is_empty() {
        return Err(Error::input(format!(
            "Tools file {} holds no tools",
            path.display()
        )));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, t)| {
            normalize_tool(t).map_err(|why| {
                Error::input(format!("Tools file {}, tool {i}: {why}", path.display()))
            })
        })
        .collect()
}

/// The keys of an OpenAI function definition.
const FUNCTION_KEYS: &[&str] = &["name", "description", "parameters", "strict"];

fn normalize_tool(t: Value) -> std::result::Result<Value, String> {
    let Value::Object(o) = &t else {
        return Err("not an object".into());
    };
    let function = match o.get("type").and_then(Value::as_str) {
        Some("function") => o
            .get("function")
            .cloned()
            .ok_or("`type` is \"function\" but `function` is missing")?,
        Some(other) => {
            return Err(format!(
                "unsupported tool type `{other}` (only \"function\")"
            ));
        }
        None if o.contains_key("name") => t.clone(),
        None => return Err("needs `type: \"function\"` and a `function` object".into()),
    };
    let Value::Object(fields) = &function else {
        return Err("`function` must be an object with a `name`".into());
    };
    // A tool *call* (`id`, `arguments`) or a misspelt key is not a definition.
    let unknown = if o.contains_key("function") {
        let outer = o
            .keys()
            .find(|k| !["type", "function"].contains(&k.as_str()));
        outer.or_else(|| fields.keys().find(|k| !FUNCTION_KEYS.contains(&k.as_str())))
    } else {
        o.keys().find(|k| !FUNCTION_KEYS.contains(&k.as_str()))
    };
    if let Some(key) = unknown {
        return Err(format!(
            "unknown key `{key}`; a tool is {{\"type\": \"function\", \"function\": {{\"name\", \"description\", \"parameters\"}}}}"
        ));
    }
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or("the function has no `name`")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "function name `{name}` must be letters, digits, _ or -"
        ));
    }
    if let Some(p) = function.get("parameters")
        && !p.is_object()
    {
        return Err(format!(
            "`parameters` of `{name}` must be a JSON Schema object"
        ));
    }
    Ok(crate::wire::openai::function_tool(function))
}

/// `--schema FILE|JSON`: inline JSON when it starts with `{`, else a file; must be a valid
/// JSON Schema.
pub fn load_schema(arg: &str, within: Duration) -> Result<AnswerSchema> {
    let (v, name) = if arg.trim_start().starts_with('{') {
        if arg.len() > MAX_SCHEMA_BYTES {
            return Err(Error::input(format!(
                "--schema is larger than {}",
                human_size(MAX_SCHEMA_BYTES)
            )));
        }
        let v = serde_json::from_str(arg)
            .map_err(|e| Error::input("--schema is not valid JSON").with_source(e))?;
        (v, "--schema".to_string())
    } else {
        (
            read_json_file(Path::new(arg), "Schema", MAX_SCHEMA_BYTES, within)?,
            format!("Schema file {arg}"),
        )
    };
    if !v.is_object() {
        return Err(Error::input(format!(
            "{name} must be a JSON object (a JSON Schema)"
        )));
    }
    AnswerSchema::compile(v)
        .map_err(|e| Error::input(format!("{name} is not a valid JSON Schema")).with_source(e))
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// `--messages FILE|-`: a JSON array of `{role, content}` messages.
pub fn load_messages(arg: &str, within: Duration) -> Result<Vec<Message>> {
    let (text, name) = if arg == "-" {
        let bytes = read_stdin_bytes(MAX_MESSAGES_BYTES, within)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::input("--messages - : standard input is not UTF-8"))?;
        (text, "standard input".to_string())
    } else {
        let what = format!("messages file {arg}");
        let bytes = read_limited(From::File(arg.into()), &what, MAX_MESSAGES_BYTES, within)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::input(format!("The messages file {arg} is not UTF-8")))?;
        (text, what)
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::input(format!("The {name} is not valid JSON")).with_source(e))?;
    let Value::Array(items) = v else {
        return Err(Error::input(format!(
            "The {name} must hold a JSON array of messages"
        )));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let bad = |why: String| Error::input(format!("The {name}, message {i}: {why}"));
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no `role`".into()))?;
            if !ROLES.contains(&role) {
                return Err(bad(format!(
                    "unknown role `{role}` (use {})",
                    ROLES.join(", ")
                )));
            }
            let content = m.get("content").cloned().unwrap_or(Value::Null);
            let ok = match &content {
                Value::String(_) => true,
                Value::Array(parts) => parts
                    .iter()
                    .all(|p| p.get("type").and_then(Value::as_str).is_some()),
                Value::Null => role == "assistant" && m.get("tool_calls").is_some(),
                _ => false,
            };
            if !ok {
                return Err(bad(
                    "`content` must be a string or an array of typed parts".into()
                ));
            }
            let mut msg = Message {
                role: role.to_string(),
                content,
                extra: Default::default(),
            };
            for key in ["tool_calls", "tool_call_id", "name"] {
                if let Some(v) = m.get(key) {
                    msg.extra.insert(key.to_string(), v.clone());
                }
            }
            Ok(msg)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_piped_text_and_words() {
        let w = vec!["write".to_string(), "a".into(), "message".into()];
        assert_eq!(join_prompt(&w, None), "write a message");
        assert_eq!(join_prompt(&w, Some("diff\n")), "diff\n\nwrite a message");
        assert_eq!(join_prompt(&[], Some("only piped\n")), "only piped");
        assert_eq!(join_prompt(&w, Some("  \n")), "write a message");
        assert_eq!(join_prompt(&[], None), "");
    }

    #[test]
    fn sniffs_image_types_from_bytes() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"GIF89a..."), Some("image/gif"));
        assert_eq!(sniff_image(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"hello"), None);
        let img = image_from_bytes("x.jpg", b"\x89PNG\r\n\x1a\nabc").unwrap();
        assert!(
            img.url.starts_with("data:image/png;base64,"),
            "the name does not decide the type"
        );
        assert!(image_from_bytes("t.txt", b"plain text").is_err());
        assert!(image_from_bytes("e.png", b"").is_err());
    }

    #[test]
    fn tools_are_normalized_and_checked() {
        let bare = normalize_tool(
            serde_json::json!({"name": "get_weather", "parameters": {"type": "object"}}),
        )
        .unwrap();
        assert_eq!(bare["type"], "function");
        assert_eq!(bare["function"]["name"], "get_weather");
        assert!(normalize_tool(serde_json::json!({"type": "function"})).is_err());
        assert!(normalize_tool(serde_json::json!({"type": "web_search"})).is_err());
        assert!(normalize_tool(serde_json::json!({"name": "bad name"})).is_err());
        assert!(normalize_tool(serde_json::json!({"name": "f", "parameters": "x"})).is_err());
        let call = serde_json::json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        assert!(
            normalize_tool(call).is_err(),
            "a tool call is no definition"
        );
        let typo =
            serde_json::json!({"type": "function", "function": {"name": "f", "parmeters": {}}});
        assert!(normalize_tool(typo).unwrap_err().contains("parmeters"));
    }

    #[test]
    fn schemas_must_be_valid() {
        assert!(
            load_schema(
                r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
                Duration::from_secs(5)
            )
            .is_ok()
        );
        assert!(load_schema(r#"{"type":"nonsense"}"#, Duration::from_secs(5)).is_err());
        assert!(load_schema("{not json", Duration::from_secs(5)).is_err());
    }
}
