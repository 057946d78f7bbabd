//! `Request`: what is asked and what it needs, resolved once from flags, environment,
//! config and built-in defaults, in that order of precedence (STYLE §2). Past this module
//! nothing looks at clap or the config's `[defaults]`. No network.

use std::time::Duration;

use crate::cli::{AskOptions, RouteArgs};
use crate::config::{Config, HedgeSetting};
use crate::error::{Error, Result};
use std::ops::Not;

use serde_json::{Value, json};

use crate::input::Input;
use crate::wire::openai::Message;

pub const DEFAULT_TIMEOUT_SECS: f64 = 120.0;
pub const DEFAULT_ATTEMPTS: u32 = 8;
/// A week: longer deadlines are almost certainly a typo.
pub const MAX_TIMEOUT_SECS: f64 = 7.0 * 86_400.0;
pub const DEFAULT_CATALOG_TTL: u64 = 3600;
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
    pub vision: bool,
    pub tools: bool,
    pub schema: bool,
    /// Estimated prompt tokens plus the output reserve.
    pub context_tokens: u64,
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
    /// `tool_choice`, as the wire wants it.
    pub tool_choice: Option<Value>,
    /// The JSON Schema the answer must match.
    pub schema: Option<Value>,
    /// `response_format` built from the schema.
    pub response_format: Option<Value>,
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

pub fn resolve_route(args: &RouteArgs, config: &Config) -> Route {
    let d = &config.defaults;
    let catalog = if args.refresh {
        CatalogMode::Refresh
    } else if args.offline {
        CatalogMode::Offline
    } else {
        CatalogMode::Normal
    };
    Route {
        models: args.models.clone(),
        providers: if args.providers.is_empty() {
            d.providers.clone()
        } else {
            args.providers.clone()
        },
        exclude: args.exclude.iter().chain(&d.exclude).cloned().collect(),
        prefer: args.prefer.iter().chain(&d.prefer).cloned().collect(),
        allow_paid: args.allow_paid || d.allow_paid.unwrap_or(false),
        catalog,
        catalog_ttl: d.catalog_ttl.unwrap_or(DEFAULT_CATALOG_TTL),
    }
}

/// Builds the request from the flags, the config, what `input.rs` read and, with
/// `--continue`, the previous conversation.
pub fn resolve(
    args: &AskOptions,
    config: &Config,
    input: Input,
    previous: Option<Vec<Message>>,
    stdout_is_terminal: bool,
) -> Result<Request> {
    let d = &config.defaults;
    let timeout = args.timeout.or(d.timeout).unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= MAX_TIMEOUT_SECS) {
        return Err(Error::usage(format!(
            "--timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}, not {timeout}"
        )));
    }
    let attempts = args.attempts.or(d.attempts).unwrap_or(DEFAULT_ATTEMPTS);
    if attempts == 0 {
        return Err(Error::usage("--attempts must be at least 1"));
    }
    let Input {
        prompt,
        images,
        tools,
        schema,
        messages: conversation,
    } = input;
    let has_images = !images.is_empty();
    // Translating an image means reading its text first.
    let ocr = args.ocr || (args.translate && has_images);
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
    if !prompt_given && has_images && !ocr && !args.translate && conversation.is_none() {
        return Err(Error::usage("An image needs a prompt saying what to do with it")
            .with_hint("Example: freeroute -i photo.jpg \"What is in this picture?\", or --ocr to transcribe it"));
    }

    // The system prompt: a preset first, then the user's own instruction.
    let to = args
        .to
        .clone()
        .or_else(|| d.translate_to.clone())
        .unwrap_or_else(|| "English".into());
    let preset = match (args.translate, ocr) {
        (true, _) => Some(translate_system(&to, args.from.as_deref(), ocr)),
        (false, true) => Some(OCR_SYSTEM.to_string()),
        (false, false) => None,
    };
    let user_system = args
        .system
        .clone()
        .or_else(|| d.system.clone())
        .filter(|s| !s.trim().is_empty());
    let system = match (preset.clone(), user_system) {
        (Some(p), Some(u)) => Some(format!("{p}\n\n{u}")),
        (p, u) => p.or(u),
    };
    if args.translate && !ocr && !prompt_given && conversation.is_none() {
        return Err(Error::usage(
            "--translate needs text: give words, or pipe a file on standard input",
        ));
    }

    // The user's turn: text first, then images (OpenRouter's recommended order).
    let user_text = match (ocr, prompt_given) {
        (true, true) => format!("Additional instruction: {prompt}"),
        (true, false) => "Transcribe the text in the image.".to_string(),
        (false, _) => prompt.clone(),
    };
    let user_turn = if has_images {
        // Some providers refuse an empty text part.
        let mut parts: Vec<Value> = Vec::new();
        if !user_text.trim().is_empty() {
            parts.push(json!({"type": "text", "text": user_text}));
        }
        parts.extend(
            images
                .iter()
                .map(|i| json!({"type": "image_url", "image_url": {"url": i.url}})),
        );
        Some(Message {
            role: "user".into(),
            content: Value::Array(parts),
            extra: Default::default(),
        })
    } else if !user_text.trim().is_empty() {
        Some(Message::text("user", user_text))
    } else {
        None
    };

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

    let tool_choice = match (&tools, args.tool_choice.as_deref()) {
        (_, None) => None,
        (_, Some(c @ ("auto" | "none" | "required"))) => Some(Value::String(c.into())),
        (Some(list), Some(name)) => {
            if !list.iter().any(|t| t["function"]["name"] == name) {
                return Err(Error::usage(format!(
                    "--tool-choice `{name}` names no tool in the tools file"
                )));
            }
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        (None, Some(_)) => None,
    };
    let response_format = schema
        .as_ref()
        .map(|s| json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": s}}));
    let max_tokens = args.max_tokens.or(d.max_tokens);
    let stream = if args.json || args.no_stream || schema.is_some() {
        false
    } else if args.stream {
        true
    } else {
        d.stream.unwrap_or(stdout_is_terminal)
    };
    let translation =
        (args.translate && !ocr && has_images.not() && prompt_given).then(|| Translation {
            system: system.clone().unwrap_or_default(),
            text: prompt.clone(),
        });
    let prompt_tokens = estimate_tokens(&messages);
    // A translation is about as long as its source.
    let reserve = match (max_tokens, &translation) {
        (Some(n), _) => u64::from(n),
        (None, Some(t)) => estimate_text(&t.text).max(DEFAULT_OUTPUT_RESERVE),
        (None, None) => DEFAULT_OUTPUT_RESERVE,
    };
    let vision = has_images || args.vision || ocr || messages.iter().any(has_image_part);
    let needs = Needs {
        vision,
        tools: tools.is_some(),
        schema: schema.is_some(),
        context_tokens: prompt_tokens + reserve,
    };
    Ok(Request {
        messages,
        needs,
        route: resolve_route(&args.route, config),
        max_tokens,
        temperature: args.temperature.or(d.temperature),
        tools,
        tool_choice,
        schema,
        response_format,
        translation,
        timeout: Duration::from_secs_f64(timeout),
        attempts: attempts as usize,
        json: args.json,
        stream,
        dry_run: args.dry_run,
        race: args.race.or(d.race).unwrap_or(1).clamp(1, 8) as usize,
        log_prompts: d.log_prompts.unwrap_or(false),
        hedge: match (args.hedge_after, d.hedge) {
            (Some(ms), _) | (None, Some(HedgeSetting::Millis(ms))) => {
                Some(Hedge::After(Duration::from_millis(ms)))
            }
            (None, Some(HedgeSetting::Auto)) => Some(Hedge::Auto),
            (None, None) => None,
        },
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

fn has_image_part(m: &Message) -> bool {
    m.content
        .as_array()
        .is_some_and(|parts| parts.iter().any(|p| p["type"] == "image_url"))
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

fn estimate_text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Tokens an image is counted as in the context estimate (its base64 is not text).
pub const IMAGE_TOKENS: u64 = 1_000;

/// A cheap, deliberately generous token estimate: about four bytes a token, plus a few
/// tokens of framing per message.
pub fn estimate_tokens(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| {
            let content = match &m.content {
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
            let extra = if m.extra.is_empty() {
                0
            } else {
                estimate_text(&Value::Object(m.extra.clone()).to_string())
            };
            content + extra + 8
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::AskArgs;
    use crate::config::Defaults;

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
        assert!(r.needs.vision);
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
            schema: Some(json!({"type": "object"})),
            ..Default::default()
        };
        let r = resolve(&a, &Config::default(), input, None, true).unwrap();
        assert!(!r.stream && r.needs.schema);
        assert_eq!(r.response_format.unwrap()["type"], "json_schema");
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
        assert_eq!(r.tool_choice.unwrap()["function"]["name"], "get_weather");
        assert!(r.needs.tools);
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
    fn flag_beats_config_beats_default() {
        let mut c = Config::default();
        let r = resolve(&args(), &c, inp("hi"), None, false).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(120));
        assert_eq!(r.attempts, 8);
        c.defaults = Defaults {
            timeout: Some(30.0),
            attempts: Some(3),
            ..Default::default()
        };
        let r = resolve(&args(), &c, inp("hi"), None, false).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(30));
        let mut a = args();
        a.timeout = Some(5.0);
        let r = resolve(&a, &c, inp("hi"), None, false).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(r.attempts, 3);
    }

    #[test]
    fn streaming_default_follows_the_terminal() {
        let c = Config::default();
        assert!(resolve(&args(), &c, inp("x"), None, true).unwrap().stream);
        assert!(!resolve(&args(), &c, inp("x"), None, false).unwrap().stream);
        let mut a = args();
        a.json = true;
        assert!(
            !resolve(&a, &c, inp("x"), None, true).unwrap().stream,
            "json never streams"
        );
        let mut a = args();
        a.stream = true;
        assert!(resolve(&a, &c, inp("x"), None, false).unwrap().stream);
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
