//! `Request`: what is asked and what it needs, resolved once from flags, environment,
//! config and built-in defaults, in that order of precedence (STYLE §2). Past this module
//! nothing looks at clap or the config's `[defaults]`. No network.

use std::time::Duration;

use crate::cli::{AskArgs, RouteArgs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::wire::openai::Message;

pub const DEFAULT_TIMEOUT_SECS: f64 = 120.0;
pub const DEFAULT_ATTEMPTS: u32 = 8;
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
    /// The conversation sent: an optional system message, then the user's prompt.
    pub messages: Vec<Message>,
    pub needs: Needs,
    pub route: Route,
    /// Passed through as `max_tokens`.
    pub max_tokens: Option<u32>,
    /// Passed through as `temperature`.
    pub temperature: Option<f32>,
    /// Deadline for the whole run.
    pub timeout: Duration,
    /// Most candidates tried.
    pub attempts: usize,
    /// Print one JSON object instead of text.
    pub json: bool,
    /// Print tokens as they arrive (never with `json`).
    pub stream: bool,
    /// Plan only; send nothing.
    pub dry_run: bool,
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

/// Builds the request from the flags, the config and the prompt text.
pub fn resolve(
    args: &AskArgs,
    config: &Config,
    prompt: String,
    stdout_is_terminal: bool,
) -> Result<Request> {
    let d = &config.defaults;
    if prompt.trim().is_empty() {
        return Err(
            Error::usage("No prompt: give words, or pipe text on standard input")
                .with_hint("Example: freeroute \"What is the capital of France?\""),
        );
    }
    let timeout = args.timeout.or(d.timeout).unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(Error::usage(format!(
            "--timeout must be a positive number of seconds, not {timeout}"
        )));
    }
    let attempts = args.attempts.or(d.attempts).unwrap_or(DEFAULT_ATTEMPTS);
    if attempts == 0 {
        return Err(Error::usage("--attempts must be at least 1"));
    }
    let system = args.system.clone().or_else(|| d.system.clone());
    let mut messages = Vec::new();
    if let Some(s) = system.filter(|s| !s.trim().is_empty()) {
        messages.push(Message::text("system", s));
    }
    messages.push(Message::text("user", prompt));
    let max_tokens = args.max_tokens.or(d.max_tokens);
    let stream = if args.json || args.no_stream {
        false
    } else if args.stream {
        true
    } else {
        d.stream.unwrap_or(stdout_is_terminal)
    };
    let needs = Needs {
        context_tokens: estimate_tokens(&messages)
            + max_tokens.map_or(DEFAULT_OUTPUT_RESERVE, u64::from),
        ..Needs::default()
    };
    Ok(Request {
        messages,
        needs,
        route: resolve_route(&args.route, config),
        max_tokens,
        temperature: args.temperature.or(d.temperature),
        timeout: Duration::from_secs_f64(timeout),
        attempts: attempts as usize,
        json: args.json,
        stream,
        dry_run: args.dry_run,
    })
}

/// A cheap, deliberately generous token estimate: about four bytes a token, plus a few
/// tokens of framing per message.
pub fn estimate_tokens(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| {
            let len = match &m.content {
                serde_json::Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
            (len as u64).div_ceil(4) + 8
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Defaults;

    fn args() -> AskArgs {
        AskArgs::default()
    }

    #[test]
    fn flag_beats_config_beats_default() {
        let mut c = Config::default();
        let r = resolve(&args(), &c, "hi".into(), false).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(120));
        assert_eq!(r.attempts, 8);
        c.defaults = Defaults {
            timeout: Some(30.0),
            attempts: Some(3),
            ..Default::default()
        };
        let r = resolve(&args(), &c, "hi".into(), false).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(30));
        let mut a = args();
        a.timeout = Some(5.0);
        let r = resolve(&a, &c, "hi".into(), false).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(r.attempts, 3);
    }

    #[test]
    fn streaming_default_follows_the_terminal() {
        let c = Config::default();
        assert!(resolve(&args(), &c, "x".into(), true).unwrap().stream);
        assert!(!resolve(&args(), &c, "x".into(), false).unwrap().stream);
        let mut a = args();
        a.json = true;
        assert!(
            !resolve(&a, &c, "x".into(), true).unwrap().stream,
            "json never streams"
        );
        let mut a = args();
        a.stream = true;
        assert!(resolve(&a, &c, "x".into(), false).unwrap().stream);
    }

    #[test]
    fn empty_prompt_is_a_usage_error() {
        let e = resolve(&args(), &Config::default(), "  ".into(), false).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Usage);
    }

    #[test]
    fn system_prompt_comes_first_and_counts() {
        let mut a = args();
        a.system = Some("be brief".into());
        a.max_tokens = Some(100);
        let r = resolve(&a, &Config::default(), "x".repeat(400), false).unwrap();
        assert_eq!(r.messages[0].role, "system");
        assert_eq!(r.needs.context_tokens, 100 + 8 + 2 + 8 + 100);
    }
}
