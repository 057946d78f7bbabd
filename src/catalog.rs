//! Models and their capabilities (DESIGN §2): parsing `GET /models` answers tolerantly,
//! models listed in the config, and the on-disk cache with a time-to-live. No ranking here.
//!
//! The cache keeps only the compact fields below, not the provider's full JSON, so a warm
//! run parses a few kilobytes instead of OpenRouter's megabyte-sized catalog.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ModelConfig;
use crate::providers::{Provider, ProviderKind, Tier};
use crate::wire::client::FetchError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub vision: bool,
    pub tools: bool,
    pub schema: bool,
}

/// One capability a request may need and a model may lack. Serialized (in the state's
/// remembered misses) as `vision`, `tools`, `schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Vision,
    Tools,
    Schema,
}

impl Capability {
    pub const ALL: [Capability; 3] = [Capability::Vision, Capability::Tools, Capability::Schema];

    /// What a user calls it.
    pub fn describe(self) -> &'static str {
        match self {
            Capability::Vision => "image input",
            Capability::Tools => "tool calling",
            Capability::Schema => "structured output",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl Capabilities {
    pub fn has(&self, c: Capability) -> bool {
        match c {
            Capability::Vision => self.vision,
            Capability::Tools => self.tools,
            Capability::Schema => self.schema,
        }
    }

    /// The capabilities that are set, in `Capability::ALL` order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.has(*c))
    }
}

/// One model at one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub provider: String,
    pub id: String,
    /// Context window in tokens, when known.
    pub context: Option<u64>,
    pub caps: Capabilities,
    /// Costs nothing (both prices exactly zero, or a user-configured free provider).
    pub free: bool,
    /// A meta-model that picks another model (`openrouter/auto`, `openrouter/free`, …).
    pub router: bool,
    /// Outputs text (models that only output images or audio are never candidates).
    pub text_output: bool,
    /// Unix seconds the model was added to the catalog, when known (a recency prior).
    pub created: Option<i64>,
    /// The provider's tier (set from the provider on every load, not trusted from a cache).
    #[serde(skip, default = "cloud")]
    pub tier: Tier,
}

fn cloud() -> Tier {
    Tier::Cloud
}

impl Model {
    /// What the catalog claims for this model (context, capabilities), as one word: a
    /// belief learned against one claim is dropped when the claim changes (DESIGN §5).
    pub fn entry(&self) -> String {
        let c = self.caps;
        let flag = |on: bool, name: &str| {
            if on {
                format!(",{name}")
            } else {
                String::new()
            }
        };
        format!(
            "context={}{}{}{}",
            self.context.map_or("?".to_string(), |n| n.to_string()),
            flag(c.vision, "vision"),
            flag(c.tools, "tools"),
            flag(c.schema, "schema")
        )
    }

    /// `openrouter/free`: free and allowed, but only as the last candidate.
    pub fn is_free_router(&self) -> bool {
        self.id == "openrouter/free"
    }
}

/// Parses a `GET /models` body: OpenRouter's shape, or any OpenAI-compatible server's
/// (`data[].id`), reading capability and context fields where a server sends them.
/// Unknown fields and enum values are ignored; entries without an id are skipped.
pub fn parse_models(body: &[u8], provider: &Provider) -> Result<Vec<Model>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let entries = match &v {
        Value::Object(o) => o
            .get("data")
            .or_else(|| o.get("models"))
            .and_then(Value::as_array),
        Value::Array(a) => Some(a),
        _ => None,
    }
    .ok_or("no `data` array in the model list")?;
    Ok(entries
        .iter()
        .filter_map(|e| parse_entry(e, provider))
        .collect())
}

fn parse_entry(e: &Value, provider: &Provider) -> Option<Model> {
    let id = e
        .get("id")
        .or_else(|| e.get("model"))
        .and_then(Value::as_str)?
        .to_string();
    if provider.kind == ProviderKind::OpenAiCompatible && !is_chat_model(&id, e) {
        return None;
    }
    let arch = e.get("architecture");
    let modalities = |key: &str| -> Option<Vec<String>> {
        arch.and_then(|a| a.get(key))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
    };
    let inputs = modalities("input_modalities").unwrap_or_default();
    let text_output = modalities("output_modalities").is_none_or(|o| o.iter().any(|m| m == "text"));
    let params: Vec<&str> = e
        .get("supported_parameters")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // Ollama and LM Studio describe capabilities their own way.
    let cap_list: Vec<&str> = e
        .get("capabilities")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let cap_flag = |k: &str| {
        e.get("capabilities")
            .and_then(|c| c.get(k))
            .and_then(Value::as_bool)
    };
    // Mistral's `function_calling` also means it honours `response_format` schemas.
    let mistral_tools = cap_flag("function_calling") == Some(true);
    let hint = provider.hints.iter().find(|h| h.id == id);
    let caps = Capabilities {
        vision: inputs.iter().any(|m| m == "image")
            || cap_list.contains(&"vision")
            || cap_flag("vision") == Some(true)
            || hint.is_some_and(|h| h.vision),
        tools: params.contains(&"tools")
            || cap_list.contains(&"tools")
            || cap_flag("trained_for_tool_use") == Some(true)
            || mistral_tools
            || hint.is_some_and(|h| h.tools),
        schema: params.contains(&"response_format")
            || params.contains(&"structured_outputs")
            || mistral_tools
            || hint.is_some_and(|h| h.schema),
    };
    let context = [
        e.get("context_length"),
        e.get("top_provider").and_then(|t| t.get("context_length")),
        e.get("max_model_len"),
        e.get("max_context_length"),
        e.get("context_window"),
        e.get("meta").and_then(|m| m.get("n_ctx")),
    ]
    .into_iter()
    .flatten()
    .find_map(Value::as_u64)
    .filter(|&c| c > 0)
    .or(hint.map(|h| h.context));

    let (free, router) = match provider.kind {
        ProviderKind::OpenRouter => {
            let price = |k: &str| e.get("pricing").and_then(|p| p.get(k)).map(price_value);
            let (p, c) = (price("prompt"), price("completion"));
            let is_zero = |x: Option<Option<f64>>| matches!(x, Some(Some(v)) if v == 0.0);
            let is_sentinel = |x: Option<Option<f64>>| matches!(x, Some(Some(v)) if v < 0.0);
            let router = id.starts_with("openrouter/") || is_sentinel(p) || is_sentinel(c);
            (is_zero(p) && is_zero(c) && !provider.paid, router)
        }
        ProviderKind::OpenAiCompatible => (!provider.paid, false),
    };
    Some(Model {
        provider: provider.name.clone(),
        id,
        context,
        caps,
        free,
        router,
        text_output,
        created: e.get("created").and_then(Value::as_i64),
        tier: provider.tier,
    })
}

/// Whether a `/models` entry of an OpenAI-compatible server is a chat model: Mistral says
/// so (`capabilities.completion_chat`), others list speech, embedding and guard models
/// beside chat ones with nothing but their names to tell them apart.
fn is_chat_model(id: &str, e: &Value) -> bool {
    if let Some(chat) = e
        .get("capabilities")
        .and_then(|c| c.get("completion_chat"))
        .and_then(Value::as_bool)
    {
        return chat;
    }
    if e.get("active").and_then(Value::as_bool) == Some(false) {
        return false;
    }
    let lower = id.to_ascii_lowercase();
    ![
        "whisper",
        "tts",
        "embed",
        "guard",
        "moderation",
        "rerank",
        "orpheus",
        "distil-",
        "playai",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// A price is a string of a decimal number (or, from some servers, a number).
fn price_value(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Models the user listed in the config: capabilities as stated, free unless `paid`.
pub fn from_config(models: &[ModelConfig], provider: &Provider) -> Vec<Model> {
    models
        .iter()
        .map(|m| Model {
            provider: provider.name.clone(),
            id: m.id.clone(),
            context: m.context,
            caps: Capabilities {
                vision: m.vision,
                tools: m.tools,
                schema: m.schema,
            },
            free: !provider.paid,
            router: false,
            text_output: true,
            created: None,
            tier: provider.tier,
        })
        .collect()
}

/// The compact cache file of one provider's catalog.
#[derive(Debug, Serialize, Deserialize)]
pub struct CacheFile {
    /// Unix milliseconds of the fetch.
    pub fetched_ms: u64,
    /// The catalog belongs to this base URL; a changed URL makes it a miss.
    pub base_url: String,
    pub models: Vec<Model>,
}

pub fn cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("freeroute"))
}

pub fn cache_path(dir: &Path, provider: &str) -> PathBuf {
    dir.join(format!("models-{provider}.json"))
}

pub fn read_cache(path: &Path) -> Option<CacheFile> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the cache atomically (temporary file, then rename) so readers never see half;
/// serialized in memory first, so the file takes one write, not one per token.
pub fn write_cache(path: &Path, cache: &CacheFile) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    crate::store::write_atomic(path, &serde_json::to_vec(cache)?)
}

/// Whether a cached copy can be used without a refresh.
pub fn is_fresh(cache: &CacheFile, base_url: &str, now_ms: u64, ttl_secs: u64) -> bool {
    cache.base_url == crate::secret::public_url(base_url)
        && now_ms.saturating_sub(cache.fetched_ms) < ttl_secs.saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openrouter() -> Provider {
        let mut p = Provider::custom("openrouter", "https://openrouter.ai/api/v1", Tier::Cloud);
        p.kind = ProviderKind::OpenRouter;
        p
    }

    const CATALOG: &str = r#"{"data":[
      {"id":"meta-llama/llama-3.3-70b-instruct:free","context_length":131072,
       "architecture":{"input_modalities":["text"],"output_modalities":["text"]},
       "pricing":{"prompt":"0","completion":"0"},"supported_parameters":["tools","max_tokens"],
       "created":1733500000,"future_field":{"x":1}},
      {"id":"stealth/space-bunny:free","context_length":null,
       "architecture":{"input_modalities":["text","image","hologram"]},
       "pricing":{"prompt":"0","completion":"0"},"supported_parameters":["structured_outputs","new_param"]},
      {"id":"openai/gpt-4","context_length":8192,"pricing":{"prompt":"0.00003","completion":"0.00006"}},
      {"id":"openrouter/auto","pricing":{"prompt":"-1","completion":"-1"}},
      {"id":"openrouter/free","context_length":200000,"pricing":{"prompt":"0","completion":"0"}},
      {"id":"some/image-gen:free","architecture":{"output_modalities":["image"]},"pricing":{"prompt":"0","completion":"0"}},
      {"name":"no id"}
    ]}"#;

    #[test]
    fn parses_openrouter_catalog_tolerantly() {
        let models = parse_models(CATALOG.as_bytes(), &openrouter()).unwrap();
        assert_eq!(models.len(), 6);
        let llama = &models[0];
        assert!(llama.free && !llama.router && llama.text_output);
        assert_eq!(llama.context, Some(131072));
        assert!(llama.caps.tools && !llama.caps.vision && !llama.caps.schema);
        let bunny = &models[1];
        assert_eq!(bunny.context, None);
        assert!(bunny.caps.vision && bunny.caps.schema);
        assert!(!models[2].free, "priced model is not free");
        assert!(
            models[3].router && !models[3].free,
            "-1 sentinel is never free"
        );
        assert!(models[4].router && models[4].free && models[4].is_free_router());
        assert!(!models[5].text_output);
    }

    #[test]
    fn parses_local_server_lists() {
        let mut p = openrouter();
        p.kind = ProviderKind::OpenAiCompatible;
        p.name = "local".into();
        let body =
            br#"{"object":"list","data":[{"id":"smollm2","object":"model","meta":{"n_ctx":4096},
            "architecture":{"input_modalities":["text"]}},{"id":"qwen","max_model_len":2048}]}"#;
        let models = parse_models(body, &p).unwrap();
        assert_eq!(models[0].context, Some(4096));
        assert_eq!(models[1].context, Some(2048));
        assert!(models.iter().all(|m| m.free));
        assert!(parse_models(b"<html>", &p).is_err());
    }

    #[test]
    fn non_chat_models_are_skipped_and_hints_fill_gaps() {
        static HINTS: &[crate::presets::Hint] = &[crate::presets::Hint {
            id: "llama-3.3-70b-versatile",
            context: 131_072,
            vision: false,
            tools: true,
            schema: false,
        }];
        let mut p = Provider::custom("groq", "https://api.groq.com/openai/v1", Tier::Cloud);
        p.hints = HINTS;
        let body = br#"{"data":[{"id":"llama-3.3-70b-versatile","active":true},{"id":"whisper-large-v3","context_window":448},
            {"id":"meta-llama/llama-guard-4-12b"},{"id":"old-model","active":false}]}"#;
        let models = parse_models(body, &p).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].context, Some(131_072));
        assert!(models[0].caps.tools);
        let mistral = br#"{"data":[{"id":"mistral-small-latest","max_context_length":32768,
            "capabilities":{"completion_chat":true,"function_calling":true,"vision":true}},
            {"id":"mistral-embed","capabilities":{"completion_chat":false}}]}"#;
        let models = parse_models(
            mistral,
            &Provider::custom("mistral", "https://api.mistral.ai/v1", Tier::Cloud),
        )
        .unwrap();
        assert_eq!(models.len(), 1);
        assert!(models[0].caps.vision && models[0].caps.tools && models[0].caps.schema);
        assert_eq!(models[0].context, Some(32768));
    }

    #[test]
    fn freshness_depends_on_url_and_age() {
        let c = CacheFile {
            fetched_ms: 1_000_000,
            base_url: "u".into(),
            models: vec![],
        };
        assert!(is_fresh(&c, "u", 1_000_000 + 3_599_000, 3600));
        assert!(!is_fresh(&c, "u", 1_000_000 + 3_600_000, 3600));
        assert!(!is_fresh(&c, "v", 1_000_001, 3600));
    }
}

/// Cached models take their tier, and whether they are free, from the provider as it is
/// configured now (a provider marked `paid` since the cache was written is not free).
fn with_tier(models: Vec<Model>, p: &Provider) -> Vec<Model> {
    models
        .into_iter()
        .map(|m| {
            let free = match p.kind {
                ProviderKind::OpenRouter => m.free && !p.paid,
                ProviderKind::OpenAiCompatible => !p.paid,
            };
            Model {
                tier: p.tier,
                free,
                ..m
            }
        })
        .collect()
}

/// What loading the catalogs produced: the models, and notes for stderr.
#[derive(Debug, Default)]
pub struct Loaded {
    pub models: Vec<Model>,
    pub notes: Vec<String>,
    /// Providers whose catalog could not be had at all, with the reason.
    pub failed: Vec<(String, FetchError)>,
    /// Providers whose catalog is to be fetched once the run has answered (`Defer`).
    pub later: Vec<String>,
}

/// A run that may answer before its catalogs are fresh (issue 18: the fetch costs a round
/// trip before the first token). The catalogs it did not fetch are fetched after the
/// answer, so the next run has them.
#[derive(Debug, Clone, Copy)]
pub struct Defer<'a> {
    /// `-m`, `-p` and `--allow-paid`, to ask picks at a provider with no cache at all.
    pub route: &'a crate::request::Route,
    /// The request needs no capability (image input, tools, a schema) and fits any
    /// model's context (`FITS_ANY_CONTEXT`): a model of which nothing is known yet can be
    /// asked.
    pub text_only: bool,
}

/// Tokens (prompt and output reserve) that every chat model's context holds.
pub const FITS_ANY_CONTEXT: u64 = 2048;

/// The one `-m` pick as a model at a provider whose catalog is not cached at all, when it
/// names one such provider unambiguously (`PROVIDER/ID`, or the only provider `-p`
/// leaves) and is free by its id alone (OpenRouter's `:free` ids; any model of another
/// provider, unless it is marked paid). `None`: the catalog must be read first.
fn provisional_picks(
    defer: &Defer<'_>,
    providers: &[Provider],
    cold: &[&Provider],
) -> Option<Vec<Model>> {
    let route = defer.route;
    // One pick: no fall-back order depends on what the catalog says (a second pick with
    // a smaller context than a first one refused is skipped, which needs the catalog).
    if !defer.text_only || route.models.len() != 1 {
        return None;
    }
    let eligible: Vec<&Provider> = providers
        .iter()
        .filter(|p| route.providers.is_empty() || route.providers.contains(&p.name))
        .collect();
    route
        .models
        .iter()
        .map(|pick| {
            let pinned = pick.split_once('/').and_then(|(name, rest)| {
                eligible
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| (*p, rest.to_string()))
            });
            let (p, id) = match (pinned, eligible.as_slice()) {
                (Some(found), _) => found,
                (None, [only]) => (*only, pick.clone()),
                _ => return None,
            };
            let free = match p.kind {
                ProviderKind::OpenRouter => id.ends_with(":free") && !p.paid,
                ProviderKind::OpenAiCompatible => !p.paid,
            };
            if !(free || route.allow_paid) || !cold.iter().any(|c| c.name == p.name) {
                return None;
            }
            Some(Model {
                provider: p.name.clone(),
                id,
                context: None,
                caps: Capabilities::default(),
                free,
                router: false,
                text_output: true,
                created: None,
                tier: p.tier,
            })
        })
        .collect()
}

/// Gathers the models of every provider: the config's list, a fresh cache, or a fetch
/// (all providers at once), falling back to a stale cache when a refresh fails. With
/// `defer`, a stale cache is used as it is and `-m` picks may be asked at a provider with
/// none (`provisional_picks`): those catalogs are left in `later`.
pub async fn load(
    providers: &[Provider],
    mode: crate::request::CatalogMode,
    ttl_secs: u64,
    client: &dyn Fn() -> Result<crate::wire::client::Client, crate::wire::client::ClientError>,
    now_ms: u64,
    fetch_timeout: std::time::Duration,
    defer: Option<Defer<'_>>,
) -> Loaded {
    use crate::request::CatalogMode;
    let dir = cache_dir();
    let mut out = Loaded::default();
    let mut to_fetch = Vec::new();
    for p in providers {
        if let Some(list) = &p.models {
            out.models.extend(from_config(list, p));
            continue;
        }
        let cached = dir
            .as_ref()
            .and_then(|d| read_cache(&cache_path(d, &p.name)));
        // The cache keeps the URL without its password (`public_url`).
        let usable = cached.filter(|c| c.base_url == crate::secret::public_url(&p.base_url));
        match (mode, usable) {
            (CatalogMode::Offline, Some(c)) => out.models.extend(with_tier(c.models, p)),
            (CatalogMode::Offline, None) => {
                out.failed.push((
                    p.name.clone(),
                    FetchError::other("no cached model list (--offline)"),
                ));
            }
            (CatalogMode::Normal, Some(c)) if is_fresh(&c, &p.base_url, now_ms, ttl_secs) => {
                out.models.extend(with_tier(c.models, p))
            }
            (CatalogMode::Normal, Some(c)) if defer.is_some() => {
                out.models.extend(with_tier(c.models, p));
                out.later.push(p.name.clone());
            }
            (_, stale) => to_fetch.push((p, stale)),
        }
    }
    if let Some(d) = &defer
        && mode == CatalogMode::Normal
    {
        let cold: Vec<&Provider> = to_fetch.iter().map(|(p, _)| *p).collect();
        // The pick names its provider: no other catalog can add a candidate, so none is
        // waited for.
        if let Some(picks) = provisional_picks(d, providers, &cold) {
            out.later
                .extend(to_fetch.drain(..).map(|(p, _)| p.name.clone()));
            out.models.extend(picks);
        }
    }
    if to_fetch.is_empty() {
        return out;
    }
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            for (p, _) in to_fetch {
                out.failed
                    .push((p.name.clone(), FetchError::other(e.to_string())));
            }
            return out;
        }
    };
    let fetches = to_fetch
        .iter()
        .map(|(p, _)| client.models(p, fetch_timeout));
    let results = futures_util::future::join_all(fetches).await;
    for ((p, stale), result) in to_fetch.into_iter().zip(results) {
        let mut parsed = result.and_then(|body| parse_models(&body, p).map_err(FetchError::other));
        // A server found on a loopback port says more about itself than its /models list.
        if let Ok(models) = &mut parsed
            && p.tier == crate::providers::Tier::Local
        {
            crate::discover::describe(&client, p, models).await;
        }
        match (parsed, stale) {
            (Ok(models), _) => {
                if let Some(d) = &dir {
                    let cache = CacheFile {
                        fetched_ms: now_ms,
                        base_url: crate::secret::public_url(&p.base_url),
                        models: models.clone(),
                    };
                    if let Err(e) = write_cache(&cache_path(d, &p.name), &cache) {
                        out.notes
                            .push(format!("Could not cache the {} model list: {e}", p.name));
                    }
                }
                out.models.extend(models);
            }
            (Err(e), Some(c)) => {
                let age_min = now_ms.saturating_sub(c.fetched_ms) / 60_000;
                out.notes.push(format!(
                    "Could not refresh the {} model list ({e}); using the cached copy from {age_min} min ago",
                    p.name
                ));
                out.models.extend(with_tier(c.models, p));
            }
            (Err(e), None) => out.failed.push((p.name.clone(), e)),
        }
    }
    out
}
