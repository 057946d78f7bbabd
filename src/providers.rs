//! Providers (DESIGN §2): the built-in table and the ones the config adds, resolved against
//! the environment into values. A key is attached to exactly one provider and is only ever
//! sent to that provider's base URL (`wire/client.rs` enforces the URL side).

use std::net::IpAddr;

use reqwest::Url;

use crate::config::{Config, ModelConfig};
use crate::secret::Secret;

/// How a provider's catalog and quirks are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenRouter: `:free` models, account-wide free quota, router models.
    OpenRouter,
    /// Any other OpenAI-compatible endpoint.
    OpenAiCompatible,
}

/// A built-in provider: name, base URL, key variable, where to sign up.
pub struct Builtin {
    pub name: &'static str,
    pub base_url: &'static str,
    pub key_env: &'static str,
    pub kind: ProviderKind,
    pub signup: &'static str,
    pub limits: Limits,
}

/// A provider's documented free-tier request limits, when it has any. A daily limit learned
/// from the provider's own 429 replaces `per_day` (see `state.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
}

pub const BUILTINS: &[Builtin] = &[Builtin {
    name: "openrouter",
    base_url: "https://openrouter.ai/api/v1",
    key_env: "OPENROUTER_API_KEY",
    kind: ProviderKind::OpenRouter,
    signup: "https://openrouter.ai/keys",
    // 20 a minute for every account; 50 or 1000 a day depending on credits bought, so the
    // daily figure is learned from the first quota 429 (reference §1.6).
    limits: Limits {
        per_minute: Some(20),
        per_day: None,
    },
}];

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.iter().any(|b| b.name == name)
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
    /// Models listed in the config; `None` means: ask `GET {base}/models`.
    pub models: Option<Vec<ModelConfig>>,
    /// Added by the user's config (its models count as free unless `paid`).
    pub configured: bool,
    pub limits: Limits,
}

/// A provider that is known but not used this run, and why (`config show`, `-v`).
#[derive(Debug, Clone)]
pub struct Disabled {
    pub name: String,
    pub reason: String,
}

/// Resolves every provider against the config and the environment.
pub fn resolve(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Provider>, Vec<Disabled>) {
    let mut enabled = Vec::new();
    let mut disabled = Vec::new();
    for b in BUILTINS {
        let over = config.providers.get(b.name);
        if over.and_then(|o| o.enabled) == Some(false) {
            disabled.push(Disabled {
                name: b.name.into(),
                reason: "enabled = false in the config".into(),
            });
            continue;
        }
        let base_url = over
            .and_then(|o| o.base_url.clone())
            .unwrap_or_else(|| b.base_url.into());
        let key_env = over
            .and_then(|o| o.api_key_env.clone())
            .unwrap_or_else(|| b.key_env.into());
        let key = env(&key_env).filter(|k| !k.trim().is_empty());
        if key.is_none() && !is_loopback_url(&base_url) {
            disabled.push(Disabled {
                name: b.name.into(),
                reason: format!("{key_env} is not set"),
            });
            continue;
        }
        enabled.push(Provider {
            name: b.name.into(),
            base_url: trim_base(&base_url),
            kind: b.kind,
            key: key.map(|k| Secret::new(k.trim().to_string())),
            key_env: Some(key_env),
            paid: over.is_some_and(|o| o.paid),
            models: over.and_then(|o| o.models.clone()),
            configured: false,
            limits: b.limits,
        });
    }
    for (name, p) in &config.providers {
        if is_builtin(name) {
            continue;
        }
        if p.enabled == Some(false) {
            disabled.push(Disabled {
                name: name.clone(),
                reason: "enabled = false in the config".into(),
            });
            continue;
        }
        let Some(base_url) = p.base_url.clone() else {
            continue;
        };
        let key = p
            .api_key_env
            .as_deref()
            .and_then(env)
            .filter(|k| !k.trim().is_empty());
        if let (Some(var), None) = (&p.api_key_env, &key)
            && !is_loopback_url(&base_url)
        {
            disabled.push(Disabled {
                name: name.clone(),
                reason: format!("{var} is not set"),
            });
            continue;
        }
        let kind = if base_url.contains("openrouter.ai") {
            ProviderKind::OpenRouter
        } else {
            ProviderKind::OpenAiCompatible
        };
        enabled.push(Provider {
            name: name.clone(),
            base_url: trim_base(&base_url),
            kind,
            key: key.map(|k| Secret::new(k.trim().to_string())),
            key_env: p.api_key_env.clone(),
            paid: p.paid,
            models: p.models.clone(),
            configured: true,
            limits: if kind == ProviderKind::OpenRouter {
                BUILTINS[0].limits
            } else {
                Limits::default()
            },
        });
    }
    (enabled, disabled)
}

fn trim_base(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// A base URL must be http(s); plain http only to loopback unless the provider allows it.
pub fn check_base_url(url: &str, allow_insecure: bool) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure || is_loopback_url(url) => Ok(()),
        "http" => Err(format!(
            "plain http:// is only allowed for loopback hosts; use https:// or set allow_insecure = true ({url})"
        )),
        other => Err(format!(
            "scheme `{other}` is not supported; use https:// ({url})"
        )),
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
        let (on, off) = resolve(&Config::default(), &env_with(&[]));
        assert!(on.is_empty());
        assert!(off[0].reason.contains("OPENROUTER_API_KEY"));
        let (on, _) = resolve(
            &Config::default(),
            &env_with(&[("OPENROUTER_API_KEY", "sk-1")]),
        );
        assert_eq!(on[0].name, "openrouter");
        assert_eq!(on[0].key.as_ref().unwrap().expose(), "sk-1");
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
        let (on, _) = resolve(&c, &env_with(&[("MY_KEY", "k")]));
        assert_eq!(on.len(), 2);
        assert_eq!(on[1].base_url, "http://127.0.0.1:8080/v1");
        assert!(on[1].key.is_none());
        assert!(on[1].configured);
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
