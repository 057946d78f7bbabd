//! Providers (DESIGN §2): the built-in table and the ones the config adds, resolved against
//! the environment into values. A key is attached to exactly one provider and is only ever
//! sent to that provider's base URL (`wire/client.rs` enforces the URL side).

use std::net::IpAddr;

use reqwest::Url;

use crate::config::{Config, ModelConfig};
pub use crate::presets::{Catalog, Dialect, Hint, Limits, ProviderKind, Tier};
use crate::presets::{PRESETS, Preset};
use crate::secret::Secret;

pub fn is_builtin(name: &str) -> bool {
    crate::presets::find(name).is_some()
}

/// A provider ready to be asked.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// Without a trailing slash.
    pub base_url: String,
    pub kind: ProviderKind,
    pub key: Option<Secret>,
    pub key_env: Option<String>,
    /// The user says this provider's models cost money.
    pub paid: bool,
    /// Models listed in the config or the preset; `None` means: ask `GET {base}/models`.
    pub models: Option<Vec<ModelConfig>>,
    /// Added by the user's config (its models count as free unless `paid`).
    pub configured: bool,
    pub limits: Limits,
    pub tier: Tier,
    pub dialect: Dialect,
    /// Added to Unix ms so that days start when the provider's daily quota resets.
    pub day_offset_ms: i64,
    /// Capability hints for the ids a fetched `/models` lists.
    pub hints: &'static [Hint],
    /// `max_tokens` sent when the user gives none.
    pub default_max_tokens: Option<u32>,
    /// Said on stderr whenever this provider answers.
    pub data_note: Option<&'static str>,
}

impl Provider {
    /// A user-configured or discovered OpenAI-compatible endpoint.
    pub fn custom(name: &str, base_url: &str, tier: Tier) -> Provider {
        Provider {
            name: name.to_string(),
            base_url: trim_base(base_url),
            kind: ProviderKind::OpenAiCompatible,
            key: None,
            key_env: None,
            paid: false,
            models: None,
            configured: true,
            limits: Limits::default(),
            tier,
            dialect: Dialect::Generic,
            day_offset_ms: 0,
            hints: &[],
            default_max_tokens: None,
            data_note: None,
        }
    }
}

/// A provider that is known but not used this run, and why (`config show`, `-v`).
#[derive(Debug, Clone)]
pub struct Disabled {
    pub name: String,
    pub reason: String,
}

/// Every provider resolved against the config and the environment.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Keyed presets and the user's own endpoints.
    pub enabled: Vec<Provider>,
    /// Keyless presets that are not turned off (used by the `keyless` setting's rules).
    pub keyless: Vec<Provider>,
    pub disabled: Vec<Disabled>,
}

pub fn resolve(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Resolved {
    let mut out = Resolved::default();
    let set = |var: &str| {
        env(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_string())
    };
    for preset in PRESETS {
        let over = config.providers.get(preset.name);
        let off = |reason: String| Disabled {
            name: preset.name.into(),
            reason,
        };
        if over.and_then(|o| o.enabled) == Some(false) {
            out.disabled
                .push(off("enabled = false in the config".into()));
            continue;
        }
        let mut base_url = over
            .and_then(|o| o.base_url.clone())
            .unwrap_or_else(|| preset.base_url.into());
        if let Some(var) = preset.account_env
            && base_url.contains("{account_id}")
        {
            match set(var) {
                Some(id) => base_url = base_url.replace("{account_id}", &id),
                None => {
                    out.disabled.push(off(format!("{var} is not set")));
                    continue;
                }
            }
        }
        let keyless = preset.tier == Tier::Keyless;
        // DESIGN §2: a key variable (the preset's, or `api_key_env`) must be set, whatever
        // the base URL; only a keyless service's own variable is optional.
        let required = over
            .and_then(|o| o.api_key_env.clone())
            .or(preset.key_env.filter(|_| !keyless).map(str::to_string));
        let key_env = required
            .clone()
            .or(preset.optional_key_env.map(str::to_string));
        let key = key_env.as_deref().and_then(set);
        if let (Some(var), None) = (&required, &key) {
            out.disabled.push(off(format!("{var} is not set")));
            continue;
        }
        let listed = (preset.catalog == Catalog::Listed)
            .then(|| preset.models.iter().map(hint_to_config).collect());
        let provider = Provider {
            name: preset.name.into(),
            base_url: trim_base(&base_url),
            kind: preset.kind,
            key: key.map(Secret::new),
            key_env,
            paid: over.is_some_and(|o| o.paid),
            models: over.and_then(|o| o.models.clone()).or(listed),
            configured: false,
            limits: preset.limits,
            tier: preset.tier,
            dialect: preset.dialect,
            day_offset_ms: preset.day_reset.offset_ms(),
            hints: preset.models,
            default_max_tokens: preset.default_max_tokens,
            data_note: preset.data_note,
        };
        let provider = with_limits(provider, over);
        if keyless {
            out.keyless.push(provider)
        } else {
            out.enabled.push(provider)
        }
    }
    for (name, p) in &config.providers {
        if is_builtin(name) {
            continue;
        }
        if p.enabled == Some(false) {
            out.disabled.push(Disabled {
                name: name.clone(),
                reason: "enabled = false in the config".into(),
            });
            continue;
        }
        let Some(base_url) = p.base_url.clone() else {
            continue;
        };
        let key = p.api_key_env.as_deref().and_then(set);
        if let (Some(var), None) = (&p.api_key_env, &key) {
            out.disabled.push(Disabled {
                name: name.clone(),
                reason: format!("{var} is not set"),
            });
            continue;
        }
        let mut provider = Provider::custom(name, &base_url, Tier::Cloud);
        if base_url.contains("openrouter.ai") {
            let or = &PRESETS[0];
            provider.kind = ProviderKind::OpenRouter;
            provider.limits = or.limits;
            provider.dialect = or.dialect;
        }
        provider.key = key.map(Secret::new);
        provider.key_env = p.api_key_env.clone();
        provider.paid = p.paid;
        provider.models = p.models.clone();
        out.enabled.push(with_limits(provider, Some(p)));
    }
    out
}

/// `requests_per_minute` / `requests_per_day` from the config replace the preset's.
fn with_limits(mut p: Provider, over: Option<&crate::config::ProviderConfig>) -> Provider {
    if let Some(o) = over {
        if o.requests_per_minute.is_some() {
            p.limits.per_minute = o.requests_per_minute;
        }
        if o.requests_per_day.is_some() {
            p.limits.per_day = o.requests_per_day;
        }
    }
    p
}

fn hint_to_config(h: &Hint) -> ModelConfig {
    ModelConfig {
        id: h.id.into(),
        context: Some(h.context),
        vision: h.vision,
        tools: h.tools,
        schema: h.schema,
    }
}

/// The preset behind a built-in provider's name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    crate::presets::find(name)
}

fn trim_base(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// Why a `base_url` was refused.
#[derive(Debug, thiserror::Error)]
pub enum BaseUrlError {
    #[error("`{url}` is not a valid URL ({source})")]
    Invalid {
        url: String,
        source: url::ParseError,
    },
    #[error(
        "plain http:// is only allowed for loopback hosts; use https:// or set allow_insecure = true ({url})"
    )]
    PlainHttp { url: String },
    #[error("scheme `{scheme}` is not supported; use https:// ({url})")]
    Scheme { scheme: String, url: String },
}

/// A base URL must be http(s); plain http only to loopback unless the provider allows it.
pub fn check_base_url(url: &str, allow_insecure: bool) -> Result<(), BaseUrlError> {
    let parsed = Url::parse(url).map_err(|source| BaseUrlError::Invalid {
        url: crate::secret::public_url(url),
        source,
    })?;
    let url = &crate::secret::public_url(url);
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure || is_loopback_url(url) => Ok(()),
        "http" => Err(BaseUrlError::PlainHttp {
            url: url.to_string(),
        }),
        other => Err(BaseUrlError::Scheme {
            scheme: other.to_string(),
            url: url.to_string(),
        }),
    }
}

/// True for `localhost`, 127.0.0.0/8 and ::1.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = Url::parse(url) else {
        return false;
    };
    match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;

    fn env_with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn openrouter_needs_its_key() {
        let r = resolve(&Config::default(), &env_with(&[]));
        assert!(r.enabled.is_empty());
        assert!(r.disabled[0].reason.contains("OPENROUTER_API_KEY"));
        assert_eq!(
            r.keyless.len(),
            3,
            "keyless presets are available without keys"
        );
        let r = resolve(
            &Config::default(),
            &env_with(&[("OPENROUTER_API_KEY", "sk-1")]),
        );
        assert_eq!(r.enabled[0].name, "openrouter");
        assert_eq!(r.enabled[0].key.as_ref().unwrap().expose(), "sk-1");
    }

    #[test]
    fn overrides_and_custom_providers() {
        let mut c = Config::default();
        c.providers.insert(
            "openrouter".into(),
            ProviderConfig {
                api_key_env: Some("MY_KEY".into()),
                ..Default::default()
            },
        );
        c.providers.insert(
            "local".into(),
            ProviderConfig {
                base_url: Some("http://127.0.0.1:8080/v1/".into()),
                ..Default::default()
            },
        );
        let on = resolve(&c, &env_with(&[("MY_KEY", "k")])).enabled;
        assert_eq!(on.len(), 2);
        assert_eq!(on[1].base_url, "http://127.0.0.1:8080/v1");
        assert!(on[1].key.is_none());
        assert!(on[1].configured);
    }

    #[test]
    fn presets_switch_on_by_their_variables() {
        let r = resolve(
            &Config::default(),
            &env_with(&[
                ("GROQ_API_KEY", "g"),
                ("CLOUDFLARE_API_TOKEN", "t"),
                ("CLOUDFLARE_ACCOUNT_ID", "acc"),
            ]),
        );
        let names: Vec<_> = r.enabled.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["groq", "cloudflare"]);
        assert_eq!(
            r.enabled[1].base_url,
            "https://api.cloudflare.com/client/v4/accounts/acc/ai/v1"
        );
        assert!(
            r.enabled[1].models.is_some(),
            "listed presets need no /models call"
        );
        let r = resolve(
            &Config::default(),
            &env_with(&[("CLOUDFLARE_API_TOKEN", "t")]),
        );
        assert!(
            r.disabled
                .iter()
                .any(|d| d.name == "cloudflare" && d.reason.contains("CLOUDFLARE_ACCOUNT_ID"))
        );
    }

    #[test]
    fn presets_can_be_overridden_and_turned_off() {
        let mut c = Config::default();
        c.providers.insert(
            "kilo".into(),
            ProviderConfig {
                enabled: Some(false),
                ..Default::default()
            },
        );
        c.providers.insert(
            "groq".into(),
            ProviderConfig {
                base_url: Some("http://127.0.0.1:9/groq".into()),
                api_key_env: Some("MY_GROQ".into()),
                ..Default::default()
            },
        );
        let r = resolve(&c, &env_with(&[("MY_GROQ", "x")]));
        assert!(!r.keyless.iter().any(|p| p.name == "kilo"));
        let groq = r.enabled.iter().find(|p| p.name == "groq").unwrap();
        assert_eq!(groq.base_url, "http://127.0.0.1:9/groq");
        assert_eq!(groq.key_env.as_deref(), Some("MY_GROQ"));
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_url("http://127.0.0.1:1/v1"));
        assert!(is_loopback_url("http://localhost/v1"));
        assert!(is_loopback_url("http://[::1]:8/v1"));
        assert!(!is_loopback_url("http://10.0.0.1/v1"));
        assert!(!is_loopback_url("https://openrouter.ai/api/v1"));
    }
}
