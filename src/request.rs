//! `Request`: one prompt, built from the resolved settings (`settings::Ask`) and what
//! `input.rs` read, with typed needs (capabilities and a context estimate). No clap, no
//! config, no environment, no network; the wire's shapes come from `wire::openai`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::catalog::{Capabilities, Capability};
use crate::error::{Error, Result};
use crate::input::Input;
use crate::settings::Ask;
pub use crate::wire::openai::ToolChoice;
use crate::wire::openai::{Message, estimate_text};

/// Output tokens reserved in the context estimate when `--max-tokens` is not given.
pub const DEFAULT_OUTPUT_RESERVE: u64 = 256;

/// Which models may be used and how they are ordered.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// `-m`: exactly these model ids, in this order (empty: any).
    pub models: Vec<String>,
    /// `-p` (or `[defaults] providers`): only these providers (empty: all enabled).
    pub providers: Vec<String>,
    /// Globs of model ids never used (flags and config together).
    pub exclude: Vec<String>,
    /// Globs of model ids ranked first (flags and config together).
    pub prefer: Vec<String>,
    /// Non-free models are permitted.
    pub allow_paid: bool,
    /// How catalogs are obtained.
    pub catalog: CatalogMode,
    /// Seconds a cached catalog stays fresh.
    pub catalog_ttl: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CatalogMode {
    /// Use the cache while fresh, else fetch (falling back to a stale copy).
    #[default]
    Normal,
    /// Fetch now (`--refresh`).
    Refresh,
    /// Never fetch (`--offline`).
    Offline,
}

/// What the request needs from a model; the filter keeps only models that have it all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// The capabilities needed (image input, tool calling, structured output).
    pub caps: Capabilities,
    /// Estimated prompt tokens plus the output reserve.
    pub context_tokens: u64,
}

impl Needs {
    pub fn needs(&self, c: Capability) -> bool {
        self.caps.has(c)
    }
}

/// A JSON Schema the answer must match, compiled once when it is read: every answer of
/// the run (every attempt, every batch item sharing it) is checked with the same validator.
#[derive(Clone)]
pub struct AnswerSchema {
    pub doc: Value,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for AnswerSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerSchema")
            .field("doc", &self.doc)
            .finish()
    }
}

/// A schema that does not compile, or an answer that does not meet it.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The `--schema` document is not a JSON Schema (a usage error, exit 2).
    #[error("{0}")]
    Invalid(String),
    /// The answer is not JSON at all (the attempt's `invalid_answer`).
    #[error("the answer is not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    /// The answer is JSON that the schema refuses (the attempt's `invalid_answer`).
    #[error("the answer does not match the schema: {why} at `{at}`")]
    Mismatch { why: String, at: String },
}

thread_local! {
    /// Schemas compiled on this thread (a test checks that checking answers compiles none).
    static COMPILED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl AnswerSchema {
    pub fn compile(doc: Value) -> std::result::Result<AnswerSchema, SchemaError> {
        let validator =
            jsonschema::validator_for(&doc).map_err(|e| SchemaError::Invalid(e.to_string()))?;
        COMPILED.with(|n| n.set(n.get() + 1));
        Ok(AnswerSchema {
            doc,
            validator: Arc::new(validator),
        })
    }

    /// How many schemas this thread has compiled.
    pub fn compiled() -> usize {
        COMPILED.with(|n| n.get())
    }

    /// The answer as the JSON document the schema asks for: surrounding code fences are
    /// tolerated, anything else that is not valid JSON matching the schema is refused.
    pub fn check(&self, content: &str) -> std::result::Result<String, SchemaError> {
        let mut text = content.trim();
        if let Some(rest) = text.strip_prefix("```") {
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
            text = rest.strip_suffix("```").unwrap_or(rest).trim();
        }
        let doc: Value = serde_json::from_str(text).map_err(SchemaError::NotJson)?;
        if let Some(err) = self.validator.iter_errors(&doc).next() {
            return Err(SchemaError::Mismatch {
                why: err.to_string(),
                at: err.instance_path().to_string(),
            });
        }
        Ok(text.to_string())
    }
}

/// One prompt, fully resolved.
#[derive(Debug, Clone)]
pub struct Request {
    /// The conversation sent: system message, earlier turns, then the user's prompt.
    pub messages: Vec<Message>,
    pub needs: Needs,
    pub route: Route,
    /// Passed through as `max_tokens`.
    pub max_tokens: Option<u32>,
    /// Passed through as `temperature`.
    pub temperature: Option<f32>,
    /// Tool definitions sent as `tools`.
    pub tools: Option<Vec<Value>>,
    /// `tool_choice`.
    pub tool_choice: Option<ToolChoice>,
    /// The JSON Schema the answer must match (sent as `response_format`).
    pub schema: Option<AnswerSchema>,
    /// A translation, kept apart so a text too long for any model can be split.
    pub translation: Option<Translation>,
    /// Deadline for the whole run.
    pub timeout: Duration,
    /// Most candidates tried.
    pub attempts: usize,
    /// Print one JSON object instead of text.
    pub json: bool,
    /// Print tokens as they arrive (never with `json` or `schema`).
    pub stream: bool,
    /// Plan only; send nothing.
    pub dry_run: bool,
    /// Candidates asked at once (`--race`).
    pub race: usize,
    /// Start the next candidate beside a slow one (`--hedge-after`, `hedge`).
    pub hedge: Option<Hedge>,
    /// Keep the prompt text in the request log (`[defaults] log_prompts`).
    pub log_prompts: bool,
    /// The images read from files, by `url_key` of their data URL: a kept conversation
    /// names them by file instead of keeping their bytes.
    pub image_files: Vec<(u64, String)>,
    /// Other sampling parameters passed on as they came (`top_p`, `stop`, `seed`, the
    /// penalties: a server request's, DESIGN §8); empty for a run from the command line.
    pub params: serde_json::Map<String, Value>,
}

/// A short key of a (possibly huge) image URL.
pub fn url_key(url: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    h.finish()
}

/// When to start the next candidate beside one that has not produced a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hedge {
    After(Duration),
    /// From the model's measured time to first token.
    Auto,
}

/// A text translation: the system prompt and the source text it applies to.
#[derive(Debug, Clone)]
pub struct Translation {
    pub system: String,
    pub text: String,
}

/// The `--ocr` preset (DESIGN §1).
pub const OCR_SYSTEM: &str = "Transcribe all text visible in the image(s) exactly as written. \
Keep the original line breaks and reading order. Output only the transcribed text: no preamble, \
no commentary, no description of the image, no code fences. If there is no text, output nothing.";

fn translate_system(to: &str, from: Option<&str>, ocr: bool) -> String {
    let source = from.map_or(String::new(), |f| format!(" from {f}"));
    let what = if ocr {
        format!(
            "Transcribe all text visible in the image(s), keeping line breaks and reading order, \
and translate it{source} into {to}."
        )
    } else {
        format!("Translate the user's text{source} into {to}.")
    };
    format!(
        "{what} Output only the translation: no quotes, notes, explanations or preamble. \
Preserve the formatting exactly: Markdown, line breaks, lists, tables and code blocks \
(leave code itself unchanged). If the text is already in {to}, output it unchanged."
    )
}

/// Builds the request from the run's settings, what `input.rs` read and, with
/// `--continue`, the previous conversation.
pub fn build(ask: &Ask, input: Input, previous: Option<Vec<Message>>) -> Result<Request> {
    let Input {
        prompt,
        images,
        tools,
        schema,
        messages: conversation,
        kept,
    } = input;
    let image_files = images
        .iter()
        .chain(&kept)
        .filter_map(|i| Some((url_key(&i.url), crate::input::file_url(i.file.as_ref()?))))
        .collect();
    let has_images = !images.is_empty();
    let translate = ask.translate.as_ref();
    // Translating an image means reading its text first.
    let ocr = ask.ocr || (translate.is_some() && has_images);
    if ocr && !has_images && conversation.is_none() && previous.is_none() {
        return Err(Error::usage("--ocr needs an image")
            .with_hint("Example: freeroute --ocr -i screenshot.png"));
    }
    let prompt_given = !prompt.trim().is_empty();
    if !prompt_given && !has_images && conversation.is_none() && !ocr {
        return Err(
            Error::usage("No prompt: give words, or pipe text on standard input")
                .with_hint("Example: freeroute \"What is the capital of France?\""),
        );
    }
    if !prompt_given && has_images && !ocr && translate.is_none() && conversation.is_none() {
        return Err(Error::usage("An image needs a prompt saying what to do with it")
            .with_hint("Example: freeroute -i photo.jpg \"What is in this picture?\", or --ocr to transcribe it"));
    }

    // The system prompt: a preset first, then the user's own instruction.
    let preset = match (translate, ocr) {
        (Some(t), _) => Some(translate_system(&t.to, t.from.as_deref(), ocr)),
        (None, true) => Some(OCR_SYSTEM.to_string()),
        (None, false) => None,
    };
    let system = match (preset, ask.system.clone()) {
        (Some(p), Some(u)) => Some(format!("{p}\n\n{u}")),
        (p, u) => p.or(u),
    };
    if translate.is_some() && !ocr && !prompt_given && conversation.is_none() {
        return Err(Error::usage(
            "--translate needs text: give words, or pipe a file on standard input",
        ));
    }

    let user_text = match (ocr, prompt_given) {
        (true, true) => format!("Additional instruction: {prompt}"),
        (true, false) => "Transcribe the text in the image.".to_string(),
        (false, _) => prompt.clone(),
    };
    let urls: Vec<&str> = images.iter().map(|i| i.url.as_str()).collect();
    let user_turn =
        (has_images || !user_text.trim().is_empty()).then(|| Message::user(&user_text, &urls));

    let mut earlier = conversation.or(previous).unwrap_or_default();
    if system.is_some() {
        earlier.retain(|m| m.role != "system" && m.role != "developer");
    }
    let mut messages = Vec::new();
    if let Some(s) = &system {
        messages.push(Message::text("system", s.clone()));
    }
    messages.extend(earlier);
    messages.extend(user_turn);
    if !messages.iter().any(|m| m.role == "user") {
        return Err(Error::usage(
            "The conversation has no user message to answer",
        ));
    }

    let tool_choice = match (&tools, ask.tool_choice.as_deref()) {
        (_, None) => None,
        (_, Some("auto")) => Some(ToolChoice::Auto),
        (_, Some("none")) => Some(ToolChoice::None),
        (_, Some("required")) => Some(ToolChoice::Required),
        (Some(list), Some(name)) => {
            if !list.iter().any(|t| t["function"]["name"] == name) {
                return Err(Error::usage(format!(
                    "--tool-choice `{name}` names no tool in the tools file"
                )));
            }
            Some(ToolChoice::Function(name.to_string()))
        }
        (None, Some(_)) => None,
    };
    let translation =
        (translate.is_some() && !ocr && !has_images && prompt_given).then(|| Translation {
            system: system.clone().unwrap_or_default(),
            text: prompt.clone(),
        });
    let prompt_tokens = estimate_tokens(&messages);
    // A translation is about as long as its source.
    let reserve = match (ask.max_tokens, &translation) {
        (Some(n), _) => u64::from(n),
        (None, Some(t)) => estimate_text(&t.text).max(DEFAULT_OUTPUT_RESERVE),
        (None, None) => DEFAULT_OUTPUT_RESERVE,
    };
    let needs = Needs {
        caps: Capabilities {
            vision: has_images || ask.vision || ocr || messages.iter().any(Message::has_image),
            tools: tools.is_some(),
            schema: schema.is_some(),
        },
        context_tokens: prompt_tokens + reserve,
    };
    // An answer checked against a schema, or one that must be a tool call, is printed
    // whole: prose streamed first could not be taken back.
    let stream = ask.stream
        && schema.is_none()
        && !matches!(
            tool_choice,
            Some(ToolChoice::Required | ToolChoice::Function(_))
        );
    Ok(Request {
        messages,
        needs,
        route: ask.route.clone(),
        max_tokens: ask.max_tokens,
        temperature: ask.temperature,
        tools,
        tool_choice,
        stream,
        schema,
        translation,
        timeout: ask.timeout,
        attempts: ask.attempts,
        json: ask.json,
        dry_run: ask.dry_run,
        race: ask.race,
        log_prompts: ask.log_prompts,
        hedge: ask.hedge,
        image_files,
        params: serde_json::Map::new(),
    })
}

impl Request {
    /// The same request for one piece of a translation split at paragraph boundaries.
    pub fn for_piece(&self, piece: &str) -> Request {
        let t = self
            .translation
            .as_ref()
            .expect("only translations are split");
        let mut r = self.clone();
        r.messages = vec![
            Message::text("system", t.system.clone()),
            Message::text("user", piece),
        ];
        r.needs.context_tokens = estimate_tokens(&r.messages)
            + self
                .max_tokens
                .map_or(estimate_text(piece).max(DEFAULT_OUTPUT_RESERVE), u64::from);
        r.translation = Some(Translation {
            system: t.system.clone(),
            text: piece.to_string(),
        });
        r
    }
}

/// Splits text at paragraph boundaries (blank lines) into pieces whose estimated
/// size stays within `max_tokens` each; a single paragraph that is too long is split at
/// line ends, then at spaces. Joining the pieces with blank lines gives the text back.
pub fn split_paragraphs(text: &str, max_tokens: u64) -> Vec<String> {
    let max_bytes = (max_tokens.max(16) * 4) as usize;
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    for para in text.split("\n\n") {
        let candidate_len = current.len() + 2 + para.len();
        if !current.is_empty() && candidate_len > max_bytes {
            pieces.push(std::mem::take(&mut current));
        }
        if para.len() > max_bytes {
            for chunk in hard_split(para, max_bytes) {
                pieces.push(chunk);
            }
            continue;
        }
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(para);
    }
    if !current.is_empty() || pieces.is_empty() {
        pieces.push(current);
    }
    pieces
}

fn hard_split(text: &str, max_bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max_bytes {
        let mut cut = max_bytes;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let window = &rest[..cut];
        let at = window
            .rfind('\n')
            .or_else(|| window.rfind(' '))
            .filter(|&i| i > 0)
            .unwrap_or(cut);
        out.push(rest[..at].to_string());
        rest = rest[at..].trim_start_matches(['\n', ' ']);
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

/// The context estimate of a conversation (`Message::estimated_tokens`).
pub fn estimate_tokens(messages: &[Message]) -> u64 {
    messages.iter().map(Message::estimated_tokens).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::AskArgs;
    use crate::config::Config;
    use serde_json::json;

    /// Settings, then the request, as a run resolves them.
    fn resolve(
        a: &AskArgs,
        c: &Config,
        input: Input,
        previous: Option<Vec<Message>>,
        tty: bool,
    ) -> Result<Request> {
        build(&Ask::resolve(a, c, tty)?, input, previous)
    }

    fn schema(doc: Value) -> Option<AnswerSchema> {
        Some(AnswerSchema::compile(doc).unwrap())
    }

    fn args() -> AskArgs {
        AskArgs::default()
    }

    fn inp(prompt: impl Into<String>) -> Input {
        Input {
            prompt: prompt.into(),
            ..Default::default()
        }
    }

    fn image() -> crate::input::Image {
        crate::input::image_from_bytes("a.png", b"\x89PNG\r\n\x1a\nxx").unwrap()
    }

    #[test]
    fn ocr_preset_puts_text_then_images_and_needs_vision() {
        let mut a = args();
        a.ocr = true;
        let input = Input {
            images: vec![image()],
            ..Default::default()
        };
        let r = resolve(&a, &Config::default(), input, None, false).unwrap();
        assert!(r.needs.needs(Capability::Vision));
        assert_eq!(r.messages[0].content, Value::String(OCR_SYSTEM.into()));
        let parts = r.messages[1].content.as_array().unwrap();
        assert_eq!(parts[0]["type"], "text");
        assert!(
            parts[1]["image_url"]["url"]
                .as_str()
                .unwrap()
                .starts_with("data:image/png;base64,")
        );
        assert!(
            resolve(&a, &Config::default(), inp(""), None, false).is_err(),
            "--ocr without an image"
        );
    }

    #[test]
    fn translation_uses_config_language_and_reserves_output() {
        let mut a = args();
        a.translate = true;
        let mut c = Config::default();
        c.defaults.translate_to = Some("German".into());
        let text = "Hello world. ".repeat(200);
        let r = resolve(&a, &c, inp(text.clone()), None, false).unwrap();
        let sys = r.messages[0].content.as_str().unwrap();
        assert!(
            sys.contains("into German") && sys.contains("Output only the translation"),
            "{sys}"
        );
        assert_eq!(r.messages[1].content, Value::String(text.clone()));
        assert!(
            r.needs.context_tokens > 2 * estimate_text(&text),
            "output reserved"
        );
        a.to = Some("French".into());
        a.from = Some("English".into());
        let r = resolve(&a, &c, inp("x"), None, false).unwrap();
        assert!(
            r.messages[0]
                .content
                .as_str()
                .unwrap()
                .contains("from English into French")
        );
        assert!(
            resolve(&a, &c, inp(""), None, false).is_err(),
            "nothing to translate"
        );
    }

    #[test]
    fn schema_forbids_streaming_and_builds_response_format() {
        let mut a = args();
        a.stream = true;
        let input = Input {
            prompt: "x".into(),
            schema: schema(json!({"type": "object"})),
            ..Default::default()
        };
        let r = resolve(&a, &Config::default(), input, None, true).unwrap();
        assert!(!r.stream && r.needs.needs(Capability::Schema));
        let format = serde_json::to_value(crate::wire::openai::ResponseFormat::json_schema(
            &r.schema.unwrap().doc,
        ))
        .unwrap();
        assert_eq!(format["type"], "json_schema");
    }

    #[test]
    fn tool_choice_by_name_must_exist() {
        let tools = vec![json!({"type": "function", "function": {"name": "get_weather"}})];
        let mut a = args();
        a.tool_choice = Some("get_weather".into());
        let input = Input {
            prompt: "x".into(),
            tools: Some(tools.clone()),
            ..Default::default()
        };
        let r = resolve(&a, &Config::default(), input, None, false).unwrap();
        assert_eq!(
            serde_json::to_value(r.tool_choice.unwrap()).unwrap()["function"]["name"],
            "get_weather"
        );
        assert!(r.needs.needs(Capability::Tools));
        a.tool_choice = Some("other".into());
        let input = Input {
            prompt: "x".into(),
            tools: Some(tools),
            ..Default::default()
        };
        assert!(resolve(&a, &Config::default(), input, None, false).is_err());
    }

    #[test]
    fn continued_conversation_goes_before_the_new_prompt() {
        let previous = vec![
            Message::text("user", "first"),
            Message::text("assistant", "answer"),
        ];
        let r = resolve(
            &args(),
            &Config::default(),
            inp("follow-up"),
            Some(previous),
            false,
        )
        .unwrap();
        let roles: Vec<_> = r.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, vec!["user", "assistant", "user"]);
        assert_eq!(r.messages[2].content, Value::String("follow-up".into()));
    }

    #[test]
    fn paragraphs_split_within_budget_and_rejoin() {
        let text = (0..50)
            .map(|i| format!("Paragraph {i} ").repeat(10))
            .collect::<Vec<_>>()
            .join("\n\n");
        let pieces = split_paragraphs(&text, 100);
        assert!(pieces.len() > 5);
        assert!(
            pieces.iter().all(|p| p.len() <= 400),
            "{:?}",
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        assert_eq!(pieces.join("\n\n"), text);
        let long_para = "word ".repeat(500);
        let pieces = split_paragraphs(&long_para, 50);
        assert!(pieces.iter().all(|p| p.len() <= 200));
        assert_eq!(split_paragraphs("short", 100), vec!["short".to_string()]);
    }

    #[test]
    fn empty_prompt_is_a_usage_error() {
        let e = resolve(&args(), &Config::default(), inp("  "), None, false).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Usage);
    }

    #[test]
    fn system_prompt_comes_first_and_counts() {
        let mut a = args();
        a.system = Some("be brief".into());
        a.max_tokens = Some(100);
        let r = resolve(&a, &Config::default(), inp("x".repeat(400)), None, false).unwrap();
        assert_eq!(r.messages[0].role, "system");
        assert_eq!(r.needs.context_tokens, 100 + 8 + 2 + 8 + 100);
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_is_compiled_once_for_every_answer_checked() {
        let s = AnswerSchema::compile(json!({"type": "object", "required": ["a"]})).unwrap();
        let before = AnswerSchema::compiled();
        assert!(s.check("{\"a\": 1}").is_ok());
        assert!(s.check("```json\n{\"a\": 2}\n```").is_ok());
        assert!(matches!(
            s.check("{\"b\": 1}"),
            Err(SchemaError::Mismatch { .. })
        ));
        assert!(matches!(
            s.clone().check("not json"),
            Err(crate::request::SchemaError::NotJson(_))
        ));
        assert_eq!(
            AnswerSchema::compiled(),
            before,
            "checking compiles nothing"
        );
    }
}
