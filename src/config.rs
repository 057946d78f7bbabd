//! The config file (DESIGN §2): its schema, where it lives, and errors that name the file,
//! the line and the key. No flags here: precedence is `request.rs`'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The whole config file. Every table is optional: no file at all is a valid config.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Defaults for the options of the default action.
    #[serde(default)]
    pub defaults: Defaults,
    /// Built-in providers to adjust, and OpenAI-compatible endpoints to add, by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Where the memory lives: this host's files, or a Redis shared by many hosts.
    #[serde(default)]
    pub state: StateConfig,
    /// How providers are reached.
    #[serde(default)]
    pub network: Network,
}

/// `[state]`: the memory shared by many hosts (DESIGN §9).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The environment variable holding the Redis URL (built-in `FREEROUTE_REDIS_URL`);
    /// the URL itself is never in the file, since it may carry a password.
    pub redis_url_env: Option<String>,
    /// Key prefix, so that two teams can share one Redis (built-in `freeroute`).
    pub namespace: Option<String>,
    /// Budget for each Redis round trip, in milliseconds (built-in 150).
    pub timeout_ms: Option<u64>,
}

/// `[network]`: settings of the HTTP client that every provider shares.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// A PEM file of certificate authorities trusted besides the system's roots (with
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR`) and the built-in ones: a company's CA, or the one a
    /// TLS-intercepting proxy signs with. A relative path is relative to the config file.
    pub ca_file: Option<PathBuf>,
    /// Open the next candidate's connection while an attempt runs, when it is at another
    /// host (an `OPTIONS` request without the key); built-in true.
    pub preconnect: Option<bool>,
}

/// `[defaults]`: each key is the default of the flag of the same name.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Deadline for a whole run, in seconds (`--timeout`; built-in 120).
    pub timeout: Option<f64>,
    /// Most candidates tried (`--attempts`; built-in 8).
    pub attempts: Option<u32>,
    /// Language of `--translate` when `--to` is not given (built-in English).
    pub translate_to: Option<String>,
    /// Globs of model ids ranked first (added to `--prefer`).
    #[serde(default)]
    pub prefer: Vec<String>,
    /// Globs of model ids never used (added to `--exclude`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Providers to use when `-p` is not given (all enabled ones when empty).
    #[serde(default)]
    pub providers: Vec<String>,
    /// System prompt when `-s` is not given.
    pub system: Option<String>,
    /// `--max-tokens` when not given.
    pub max_tokens: Option<u32>,
    /// `--temperature` when not given.
    pub temperature: Option<f32>,
    /// Seconds a cached model catalog stays fresh (built-in 3600).
    pub catalog_ttl: Option<u64>,
    /// Stream to the terminal (`true`/`false`); unset means: stream when stdout is a terminal.
    pub stream: Option<bool>,
    /// Permit paid models, like `--allow-paid`.
    pub allow_paid: Option<bool>,
    /// Keyless free services: `"auto"` (only when nothing else is there), `true`, `false`.
    pub keyless: Option<Keyless>,
    /// Look for local servers on the usual loopback ports (built-in true).
    pub discover: Option<bool>,
    /// The ports looked at (built-in 11434, 8080, 1234, 8000).
    pub discover_ports: Option<Vec<u16>>,
    /// Keep the prompt text in the request log (built-in false).
    pub log_prompts: Option<bool>,
    /// `--race` when not given.
    pub race: Option<u32>,
    /// Hedge after this many milliseconds, or `"auto"` (from the model's measured latency).
    /// Off unless set: a hedge spends quota.
    pub hedge: Option<HedgeSetting>,
}

/// `[defaults] hedge`: `"auto"` or milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HedgeSetting {
    Auto,
    Millis(u64),
}

impl<'de> Deserialize<'de> for HedgeSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(HedgeSetting::Millis(ms)),
            Raw::Word(w) if w == "auto" => Ok(HedgeSetting::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected \"auto\" or a number of milliseconds, not \"{w}\""
            ))),
        }
    }
}

/// `[defaults] keyless`: `"auto"`, `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Keyless {
    Auto,
    Always,
    Never,
}

impl<'de> Deserialize<'de> for Keyless {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Keyless::Always),
            Raw::Bool(false) => Ok(Keyless::Never),
            Raw::Word(w) if w == "auto" => Ok(Keyless::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected \"auto\", true or false, not \"{w}\""
            ))),
        }
    }
}

/// `[providers.NAME]`: overrides of a built-in provider, or a new OpenAI-compatible one.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Base URL of the OpenAI-compatible API, up to and including `/v1` (or equivalent).
    pub base_url: Option<String>,
    /// Name of the environment variable that holds this provider's key.
    pub api_key_env: Option<String>,
    /// `false` turns the provider off.
    pub enabled: Option<bool>,
    /// The provider's models; when absent they come from `GET {base_url}/models`.
    pub models: Option<Vec<ModelConfig>>,
    /// The provider's models cost money: used only with `--allow-paid`.
    #[serde(default)]
    pub paid: bool,
    /// Allow plain `http://` to a host that is not loopback.
    #[serde(default)]
    pub allow_insecure: bool,
    /// The provider's request limit per minute (replaces a preset's figure).
    pub requests_per_minute: Option<u32>,
    /// The provider's request limit per day (replaces a preset's figure).
    pub requests_per_day: Option<u32>,
}

/// One model listed in the config, with the capabilities the user vouches for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub id: String,
    /// Context window in tokens; unknown when absent.
    pub context: Option<u64>,
    #[serde(default)]
    pub vision: bool,
    #[serde(default)]
    pub tools: bool,
    #[serde(default)]
    pub schema: bool,
}

/// Where the config file is: `--config`/`FREEROUTE_CONFIG`, else the XDG config dir.
pub fn path(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => dirs::config_dir().map(|d| d.join("freeroute").join("config.toml")),
    }
}

/// The largest config file read (a config is a few KiB).
const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Loads the config. A missing default file is an empty config; a missing explicit file is
/// an error (the user named it).
pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
    let Some(path) = path(explicit) else {
        return Ok((Config::default(), None));
    };
    let read = |path: &Path| -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(MAX_CONFIG_BYTES as u64 + 1)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    let text = match read(&path) {
        Ok(t) if t.len() > MAX_CONFIG_BYTES => {
            return Err(Error::config(format!(
                "Config file {} is larger than {} MiB",
                path.display(),
                MAX_CONFIG_BYTES >> 20
            )));
        }
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok((Config::default(), None));
        }
        Err(e) => {
            return Err(
                Error::config(format!("Cannot read config file {}", path.display()))
                    .with_source(e)
                    .with_hint("Pass an existing file with --config, or unset FREEROUTE_CONFIG"),
            );
        }
    };
    let mut config = parse(&text, &path)?;
    if let Some(ca) = &mut config.network.ca_file
        && ca.is_relative()
        && let Some(dir) = path.parent()
    {
        *ca = dir.join(&*ca);
    }
    Ok((config, Some(path)))
}

/// Parses config text; errors name the file, line and key.
pub fn parse(text: &str, path: &Path) -> Result<Config> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(span) => locate(text, span.start),
            None => (None, None),
        };
        let mut msg = format!("Invalid config file {}", path.display());
        if let Some(line) = line {
            msg.push_str(&format!(", line {line}"));
        }
        if let Some(key) = key {
            msg.push_str(&format!(", key `{key}`"));
        }
        msg.push_str(&format!(": {}", in_words(e.message().trim())));
        Error::config(msg).with_hint("Fix the file, or see `freeroute config init` for an example")
    })?;
    validate(&config, path)?;
    Ok(config)
}

/// serde's type errors ("invalid type: string \"slow\", expected f64") in a user's words:
/// what the setting takes, then what was found ("expected a number, such as 120 or 0.5;
/// found string \"slow\""). Other messages are kept as they are.
fn in_words(message: &str) -> String {
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "))
    else {
        return message.to_string();
    };
    let expected = match expected {
        "f64" | "f32" => "a number, such as 120 or 0.5",
        "u64" | "u32" | "usize" => "a whole number, 0 or more",
        "u16" => "a whole number from 0 to 65535",
        "u8" => "a whole number from 0 to 255",
        "i64" | "i32" => "a whole number",
        "a sequence" => "a list, such as [\"a\", \"b\"]",
        "a map" | "struct" => "a table, such as { key = \"value\" }",
        other => other,
    };
    format!("expected {expected}; found {found}")
}

/// 1-based line of a byte offset and the dotted key written on that line, if any.
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let offset = offset.min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let mut table = String::new();
    for l in text.lines().take(line_no) {
        let t = l.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let key = line.split_once('=').map(|(k, _)| k.trim().to_string());
    let key = match (key, line.trim().starts_with('[')) {
        (_, true) => Some(
            line.trim()
                .trim_matches(|c| c == '[' || c == ']')
                .to_string(),
        ),
        (Some(k), false) if !k.is_empty() && !table.is_empty() => Some(format!("{table}.{k}")),
        (Some(k), false) if !k.is_empty() => Some(k),
        _ => None,
    };
    (Some(line_no), key)
}

fn validate(config: &Config, path: &Path) -> Result<()> {
    let at = |key: String| {
        Error::config(format!(
            "Invalid config file {}, key `{key}`",
            path.display()
        ))
    };
    let bad = |key: String, why: String| at(key).with_source(why);
    if let Some(t) = config.defaults.timeout
        && !(t.is_finite() && t > 0.0)
    {
        return Err(bad(
            "defaults.timeout".into(),
            "must be a positive number of seconds".into(),
        ));
    }
    if config.defaults.attempts == Some(0) {
        return Err(bad("defaults.attempts".into(), "must be at least 1".into()));
    }
    for (name, p) in &config.providers {
        if let Some(url) = &p.base_url {
            crate::providers::check_base_url(url, p.allow_insecure)
                .map_err(|why| at(format!("providers.{name}.base_url")).with_source(why))?;
        }
        if let Some(var) = &p.api_key_env
            && !is_env_var_name(var)
        {
            return Err(bad(
                format!("providers.{name}.api_key_env"),
                "must be the name of an environment variable, not the key itself".into(),
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                format!("providers.{name}"),
                "a provider name may hold only letters, digits, _ and -".into(),
            ));
        }
        if !crate::providers::is_builtin(name) && p.base_url.is_none() {
            return Err(bad(
                format!("providers.{name}.base_url"),
                "is required for a provider that is not built in".into(),
            ));
        }
    }
    Ok(())
}

/// An environment variable's name as keys are kept in: `OPENROUTER_API_KEY`, never a
/// key itself (`sk-or-…`, `gsk_…`, `hf_…` all fail this, and are never echoed back).
pub fn is_env_var_name(var: &str) -> bool {
    let mut chars = var.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && var.len() <= 64
}

/// A commented starter config for `freeroute config init`.
pub const STARTER: &str = r#"# freeroute configuration. Every key is optional; delete what you do not need.
# With OPENROUTER_API_KEY set, no config is needed at all.

[defaults]
# timeout = 120            # seconds for a whole run
# attempts = 8             # most candidates tried
# translate_to = "English"
# prefer = ["meta-llama/*"] # ranked first
# exclude = []              # never used
# catalog_ttl = 3600       # seconds a cached model list stays fresh
# keyless = "auto"         # keyless free services: "auto" (when nothing else), true, false
# discover = true          # look for local servers on loopback
# discover_ports = [11434, 8080, 1234, 8000]
# race = 1                 # candidates asked at once
# hedge = "auto"           # or milliseconds: start the next candidate beside a slow one

# The built-in OpenRouter provider; change only what you need.
# [providers.openrouter]
# base_url = "https://openrouter.ai/api/v1"
# api_key_env = "OPENROUTER_API_KEY"
# enabled = true

# A local OpenAI-compatible server (Ollama, llama.cpp, LM Studio, vLLM). Loopback needs no key.
# [providers.local]
# base_url = "http://127.0.0.1:11434/v1"
# models = [{ id = "llama3.2", context = 8192, vision = false, tools = true, schema = false }]

# A second OpenRouter account under another name.
# [providers.openrouter2]
# base_url = "https://openrouter.ai/api/v1"
# api_key_env = "OPENROUTER_API_KEY_2"

# Memory shared by many hosts in Redis or Valkey, used when the variable below is set to
# redis://[:password@]host:port/db, rediss://… (TLS) or unix:///path.
# [state]
# redis_url_env = "FREEROUTE_REDIS_URL"
# namespace = "freeroute"  # key prefix, so two teams can share one Redis
# timeout_ms = 150         # budget for each Redis round trip

# Behind a TLS-intercepting proxy or with a company CA: trust its certificate (PEM).
# The system's roots, SSL_CERT_FILE and SSL_CERT_DIR are trusted already.
# [network]
# ca_file = "company-ca.pem"   # relative to this file
# preconnect = true            # open the next provider's connection during an attempt
"#;

/// `config init`: the commented starter config at `path`, never over an existing file
/// unless `force`.
pub fn write_starter(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::usage(format!("{} already exists", path.display()))
            .with_hint("Pass --force to overwrite it"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(format!("Cannot create {}", dir.display())).with_source(e)
        })?;
    }
    crate::store::write_atomic(path, STARTER.as_bytes())
        .map_err(|e| Error::config(format!("Cannot write {}", path.display())).with_source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("/tmp/c.toml")
    }

    #[test]
    fn empty_and_starter_parse() {
        parse("", &p()).unwrap();
        parse(STARTER, &p()).unwrap();
    }

    #[test]
    fn type_error_names_line_and_key() {
        let err = parse("[defaults]\ntimeout = \"soon\"\n", &p()).unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::Config);
        assert!(err.message.contains("line 2"), "{}", err.message);
        assert!(err.message.contains("defaults.timeout"), "{}", err.message);
        assert!(err.message.contains("/tmp/c.toml"), "{}", err.message);
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = parse("[defaults]\ntimeuot = 3\n", &p()).unwrap_err();
        assert!(err.message.contains("timeuot"), "{}", err.message);
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn keyless_setting_takes_auto_true_false() {
        let k = |t: &str| {
            parse(&format!("[defaults]\nkeyless = {t}\n"), &p()).map(|c| c.defaults.keyless)
        };
        assert_eq!(k("\"auto\"").unwrap(), Some(Keyless::Auto));
        assert_eq!(k("true").unwrap(), Some(Keyless::Always));
        assert_eq!(k("false").unwrap(), Some(Keyless::Never));
        let e = k("\"sometimes\"").unwrap_err();
        assert!(e.message.contains("defaults.keyless"), "{}", e.message);
    }

    #[test]
    fn custom_provider_needs_base_url() {
        let err = parse("[providers.local]\napi_key_env = \"X\"\n", &p()).unwrap_err();
        assert!(
            err.message.contains("providers.local.base_url"),
            "{}",
            err.message
        );
    }

    #[test]
    fn insecure_remote_http_is_refused() {
        let err = parse(
            "[providers.x]\nbase_url = \"http://example.com/v1\"\n",
            &p(),
        )
        .unwrap_err();
        assert!(
            err.message.contains("providers.x.base_url"),
            "{}",
            err.message
        );
        parse(
            "[providers.x]\nbase_url = \"http://example.com/v1\"\nallow_insecure = true\n",
            &p(),
        )
        .unwrap();
        parse(
            "[providers.x]\nbase_url = \"http://127.0.0.1:9/v1\"\n",
            &p(),
        )
        .unwrap();
    }

    #[test]
    fn env_var_names_versus_keys() {
        assert!(
            is_env_var_name("OPENROUTER_API_KEY")
                && is_env_var_name("HF_TOKEN")
                && is_env_var_name("_X1")
        );
        for key in [
            "gsk_abc123",
            "hf_abcdef",
            "ghp_xyz",
            "sk-or-v1-abc",
            "",
            "1ABC",
        ] {
            assert!(!is_env_var_name(key), "{key}");
        }
    }

    #[test]
    fn key_in_api_key_env_is_refused() {
        let err = parse(
            "[providers.openrouter]\napi_key_env = \"sk-or-v1-123\"\n",
            &p(),
        )
        .unwrap_err();
        assert!(err.message.contains("api_key_env"), "{}", err.message);
        assert!(!err.message.contains("sk-or-v1-123"), "{}", err.message);
    }
}
