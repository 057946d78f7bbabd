//! Every setting of a run, resolved once and validated once (STYLE §2, uv's `settings.rs`).
//!
//! Precedence, for every setting that has more than one source:
//!
//! ```text
//! batch item field  >  flag  >  environment variable  >  config [defaults]  >  built-in default
//! ```
//!
//! This is the only module that reads the environment (the memory's clock, in `clock.rs`,
//! aside): `FREEROUTE_KEYLESS`, `FREEROUTE_DISCOVER`, `FREEROUTE_SEED`, `NO_COLOR`, the
//! shared memory's URL (`FREEROUTE_REDIS_URL` or `[state] redis_url_env`) and the
//! providers' key variables. Past it nothing looks at clap, the config's `[defaults]` or the
//! environment: a single run, each batch item and each server request get these values.

use std::time::Duration;

use crate::cli::{AskOptions, LogFormat, RouteArgs, ServeArgs};
use crate::config::{Config, HedgeSetting, Keyless};
use crate::discover;
use crate::error::{Error, Result};
use crate::request::{CatalogMode, Hedge, Route};
use crate::secret::Secret;

pub const DEFAULT_TIMEOUT_SECS: f64 = 120.0;
pub const DEFAULT_ATTEMPTS: u32 = 8;
/// A week: longer deadlines are almost certainly a typo.
pub const MAX_TIMEOUT_SECS: f64 = 7.0 * 86_400.0;
pub const DEFAULT_CATALOG_TTL: u64 = 3600;
pub const DEFAULT_TRANSLATE_TO: &str = "English";

/// An environment variable's value; the one read of the process environment.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn env_switch(name: &str) -> Option<bool> {
    match env_var(name).as_deref().map(str::trim) {
        Some("0" | "false" | "no" | "off") => Some(false),
        Some("1" | "true" | "yes" | "on") => Some(true),
        _ => None,
    }
}

/// `NO_COLOR` set to anything but the empty string turns colour off (no-color.org).
pub fn no_color() -> bool {
    env_var("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// `FREEROUTE_SEED`: a fixed seed for the ranking's jitter (tests, simulations).
pub fn rng() -> fastrand::Rng {
    match env_var("FREEROUTE_SEED").and_then(|s| s.parse().ok()) {
        Some(seed) => fastrand::Rng::with_seed(seed),
        None => fastrand::Rng::new(),
    }
}

/// Where providers and their models come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `FREEROUTE_KEYLESS` > `[defaults] keyless` > `auto`.
    pub keyless: Keyless,
    /// `FREEROUTE_DISCOVER=0` or `[defaults] discover = false` turn discovery off.
    pub discover: bool,
    /// Loopback ports probed for local servers.
    pub discover_ports: Vec<u16>,
    /// Where the memory lives (DESIGN §9).
    pub memory: Memory,
    /// `[network] ca_file`: certificate authorities trusted besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// `[network] preconnect` (built-in true).
    pub preconnect: bool,
}

pub const DEFAULT_REDIS_URL_ENV: &str = "FREEROUTE_REDIS_URL";
pub const DEFAULT_NAMESPACE: &str = "freeroute";
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 150;
/// Longer Redis budgets would let a slow Redis eat a run's deadline.
pub const MAX_REDIS_TIMEOUT_MS: u64 = 10_000;

/// The memory's home: this host's files, or also a Redis shared by many hosts.
#[derive(Debug, Clone)]
pub struct Memory {
    /// The variable the URL is read from (named in notes and `config show`).
    pub url_env: String,
    /// Its value: it may carry a password, so it is a `Secret`.
    pub redis_url: Option<Secret>,
    pub namespace: String,
    /// Budget for each round trip (connect, read, reserve, record).
    pub timeout: Duration,
}

impl Memory {
    pub fn resolve(config: &Config) -> Memory {
        let s = &config.state;
        let url_env = s
            .redis_url_env
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS_URL_ENV.to_string());
        let namespace = s
            .namespace
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let ms = s
            .timeout_ms
            .unwrap_or(DEFAULT_REDIS_TIMEOUT_MS)
            .clamp(1, MAX_REDIS_TIMEOUT_MS);
        Memory {
            redis_url: env_var(&url_env)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(Secret::new),
            url_env,
            namespace,
            timeout: Duration::from_millis(ms),
        }
    }
}

impl Sources {
    pub fn resolve(config: &Config) -> Sources {
        let d = &config.defaults;
        let keyless = match env_switch("FREEROUTE_KEYLESS") {
            Some(false) => Keyless::Never,
            Some(true) => Keyless::Always,
            None => d.keyless.unwrap_or(Keyless::Auto),
        };
        Sources {
            keyless,
            discover: env_switch("FREEROUTE_DISCOVER") != Some(false) && d.discover.unwrap_or(true),
            discover_ports: d
                .discover_ports
                .clone()
                .unwrap_or_else(|| discover::DEFAULT_PORTS.to_vec()),
            memory: Memory::resolve(config),
            ca_file: config.network.ca_file.clone(),
            preconnect: config.network.preconnect.unwrap_or(true),
        }
    }
}

/// Which models may be used: `-m`, `-p`, `--exclude`, `--prefer`, `--allow-paid`, catalog mode.
pub fn route(args: &RouteArgs, config: &Config) -> Route {
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

/// What to translate into, and from.
#[derive(Debug, Clone, PartialEq)]
pub struct Translate {
    pub to: String,
    pub from: Option<String>,
}

/// The settings of one prompt: how it is asked and how its answer is delivered.
#[derive(Debug, Clone)]
pub struct Ask {
    pub route: Route,
    /// Deadline of the run (of each item in a batch).
    pub timeout: Duration,
    /// Most candidates tried.
    pub attempts: usize,
    /// Candidates asked at once (`--race`, 1..=8).
    pub race: usize,
    /// Start the next candidate beside a slow one (`--hedge-after`, `hedge`).
    pub hedge: Option<Hedge>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// The user's system prompt (`-s`, `[defaults] system`); blank is none.
    pub system: Option<String>,
    /// `--translate` with its languages.
    pub translate: Option<Translate>,
    /// `--ocr`.
    pub ocr: bool,
    /// `--vision`: require image input even without an image.
    pub vision: bool,
    /// `--tool-choice` as typed (checked against the tools when the request is built).
    pub tool_choice: Option<String>,
    /// Print one JSON object instead of text.
    pub json: bool,
    /// Print tokens as they arrive (never with `json`; a schema turns it off too).
    pub stream: bool,
    /// Plan only; send nothing.
    pub dry_run: bool,
    /// Keep the prompt text in the request log (`[defaults] log_prompts`).
    pub log_prompts: bool,
}

/// Checks a `--timeout` (or `[defaults] timeout`) value once, for every caller.
pub fn timeout(secs: f64) -> Result<Duration> {
    if !(secs.is_finite() && secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(Error::usage(format!(
            "--timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}, not {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Ask {
    /// Resolves the options of the default action (and of `batch`, whose items share them).
    pub fn resolve(args: &AskOptions, config: &Config, stdout_is_terminal: bool) -> Result<Ask> {
        let d = &config.defaults;
        let timeout = timeout(args.timeout.or(d.timeout).unwrap_or(DEFAULT_TIMEOUT_SECS))?;
        let attempts = args.attempts.or(d.attempts).unwrap_or(DEFAULT_ATTEMPTS);
        if attempts == 0 {
            return Err(Error::usage("--attempts must be at least 1"));
        }
        if args.max_tokens.or(d.max_tokens) == Some(0) {
            return Err(Error::usage("--max-tokens must be at least 1"));
        }
        let stream = if args.json || args.no_stream {
            false
        } else if args.stream {
            true
        } else {
            d.stream.unwrap_or(stdout_is_terminal)
        };
        Ok(Ask {
            route: route(&args.route, config),
            timeout,
            attempts: attempts as usize,
            race: args.race.or(d.race).unwrap_or(1).clamp(1, 8) as usize,
            hedge: match (args.hedge_after, d.hedge) {
                (Some(ms), _) | (None, Some(HedgeSetting::Millis(ms))) => {
                    Some(Hedge::After(Duration::from_millis(ms)))
                }
                (None, Some(HedgeSetting::Auto)) => Some(Hedge::Auto),
                (None, None) => None,
            },
            max_tokens: args.max_tokens.or(d.max_tokens),
            temperature: args.temperature.or(d.temperature),
            system: args
                .system
                .clone()
                .or_else(|| d.system.clone())
                .filter(|s| !s.trim().is_empty()),
            translate: args.translate.then(|| Translate {
                to: args
                    .to
                    .clone()
                    .or_else(|| d.translate_to.clone())
                    .unwrap_or_else(|| DEFAULT_TRANSLATE_TO.into()),
                from: args.from.clone(),
            }),
            ocr: args.ocr,
            vision: args.vision,
            tool_choice: args.tool_choice.clone(),
            json: args.json,
            stream,
            dry_run: args.dry_run,
            log_prompts: d.log_prompts.unwrap_or(false),
        })
    }

    /// A batch item's own fields, which beat the batch's flags.
    pub fn with_item(&self, item: &ItemFields) -> Ask {
        let mut ask = self.clone();
        if let Some(s) = item.system.clone().filter(|s| !s.trim().is_empty()) {
            ask.system = Some(s);
        }
        if item.translate || item.to.is_some() {
            let base = ask.translate.clone().unwrap_or(Translate {
                to: DEFAULT_TRANSLATE_TO.into(),
                from: None,
            });
            ask.translate = Some(Translate {
                to: item.to.clone().unwrap_or(base.to),
                from: base.from,
            });
        }
        if item.max_tokens.is_some() {
            ask.max_tokens = item.max_tokens;
        }
        ask
    }
}

/// The fields of a batch item that override the batch's settings.
#[derive(Debug, Clone, Default)]
pub struct ItemFields {
    pub system: Option<String>,
    pub translate: bool,
    pub to: Option<String>,
    pub max_tokens: Option<u32>,
}

/// `freeroute batch`: the items' shared settings and the batch's own deadline.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Each item's settings (its timeout the configured per-run one, not `--timeout`).
    pub item: Ask,
    /// `--timeout`: the deadline of the whole batch.
    pub deadline: Option<Duration>,
}

impl Batch {
    pub fn resolve(args: &AskOptions, config: &Config) -> Result<Batch> {
        let mut item = Ask::resolve(args, config, false)?;
        // Items are answered whole and written as JSON lines, each within the per-run
        // deadline; `--timeout` is the batch's.
        item.json = true;
        item.stream = false;
        item.timeout = timeout(config.defaults.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))?;
        Ok(Batch {
            item,
            deadline: args.timeout.map(timeout).transpose()?,
        })
    }
}

/// `--listen` when not given (DESIGN §8).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4020";
/// `--max-concurrency` when not given (DESIGN §8).
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

/// `freeroute serve`: where it listens, who may ask, and every request's default settings.
#[derive(Debug, Clone)]
pub struct Serve {
    pub listen: std::net::SocketAddr,
    /// The token clients must send; required off loopback (DESIGN §8).
    pub token: Option<crate::secret::Secret>,
    /// Requests answered at once; four times as many may wait.
    pub max_concurrency: usize,
    pub log_json: bool,
    /// Each request's defaults: `-p`, `--exclude`, `--prefer`, `--timeout`, `--attempts`,
    /// `--hedge-after`, `--allow-paid` and the config's `[defaults]`. A client's own
    /// messages, limits and sampling replace the rest per request.
    pub ask: Ask,
}

impl Serve {
    pub fn resolve(args: &ServeArgs, config: &Config) -> Result<Serve> {
        let listen = args
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid address"));
        let token = match &args.token_env {
            None => None,
            Some(var) => match env_var(var).filter(|v| !v.trim().is_empty()) {
                Some(v) => Some(crate::secret::Secret::new(v.trim().to_string())),
                None => {
                    return Err(Error::config(format!(
                        "--token-env {var}: the variable {var} is not set"
                    ))
                    .with_hint(format!("export {var}=<a long random string>, and send it as `Authorization: Bearer …`")));
                }
            },
        };
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(Error::config(format!(
                "Listening on {listen}, which is not loopback, needs a token"
            ))
            .with_hint("Pass --token-env VAR with VAR set to a secret clients send, or listen on 127.0.0.1"));
        }
        let opts = AskOptions {
            route: args.route.clone(),
            timeout: args.timeout,
            attempts: args.attempts,
            hedge_after: args.hedge_after,
            ..Default::default()
        };
        let mut ask = Ask::resolve(&opts, config, false)?;
        // The client's conversation is the prompt: no system prompt of ours replaces its own.
        ask.system = None;
        ask.json = false;
        ask.log_prompts = false;
        Ok(Serve {
            listen,
            token,
            max_concurrency: args
                .max_concurrency
                .map_or(DEFAULT_MAX_CONCURRENCY, |n| n as usize),
            log_json: args.log_format == LogFormat::Json,
            ask,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Defaults;

    #[test]
    fn flag_beats_config_beats_default() {
        let mut c = Config::default();
        let a = Ask::resolve(&AskOptions::default(), &c, false).unwrap();
        assert_eq!(a.timeout, Duration::from_secs(120));
        assert_eq!(a.attempts, 8);
        c.defaults = Defaults {
            timeout: Some(30.0),
            attempts: Some(3),
            ..Default::default()
        };
        let a = Ask::resolve(&AskOptions::default(), &c, false).unwrap();
        assert_eq!(a.timeout, Duration::from_secs(30));
        let opts = AskOptions {
            timeout: Some(5.0),
            ..Default::default()
        };
        let a = Ask::resolve(&opts, &c, false).unwrap();
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert_eq!(a.attempts, 3);
    }

    #[test]
    fn streaming_default_follows_the_terminal() {
        let c = Config::default();
        let resolve = |o: &AskOptions, tty| Ask::resolve(o, &c, tty).unwrap().stream;
        assert!(resolve(&AskOptions::default(), true));
        assert!(!resolve(&AskOptions::default(), false));
        let json = AskOptions {
            json: true,
            ..Default::default()
        };
        assert!(!resolve(&json, true), "json never streams");
        let stream = AskOptions {
            stream: true,
            ..Default::default()
        };
        assert!(resolve(&stream, false));
    }

    #[test]
    fn a_timeout_is_checked_the_same_for_a_run_and_a_batch() {
        for bad in [f64::INFINITY, f64::NAN, 0.0, -1.0, MAX_TIMEOUT_SECS * 2.0] {
            let opts = AskOptions {
                timeout: Some(bad),
                ..Default::default()
            };
            let run = Ask::resolve(&opts, &Config::default(), false).unwrap_err();
            let batch = Batch::resolve(&opts, &Config::default()).unwrap_err();
            assert_eq!(run.message, batch.message);
            assert_eq!(batch.exit_code(), 2);
        }
    }

    #[test]
    fn an_item_field_beats_the_batch_flags() {
        let opts = AskOptions {
            system: Some("flag".into()),
            max_tokens: Some(5),
            ..Default::default()
        };
        let b = Batch::resolve(&opts, &Config::default()).unwrap();
        let item = ItemFields {
            system: Some("item".into()),
            to: Some("German".into()),
            ..Default::default()
        };
        let a = b.item.with_item(&item);
        assert_eq!(a.system.as_deref(), Some("item"));
        assert_eq!(a.max_tokens, Some(5));
        assert_eq!(a.translate.unwrap().to, "German");
        assert!(a.json && !a.stream);
    }
}
