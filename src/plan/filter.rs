//! Keep or drop one model, with the reason (DESIGN §3 step 2). Pure.

use crate::catalog::{Capability, Model};
use crate::health::Health;
use crate::request::{Needs, Route};

#[derive(Debug, Clone, PartialEq)]
pub enum DropReason {
    NotFree,
    Router,
    NoTextOutput,
    ProviderNotSelected,
    NotRequested,
    Excluded(String),
    Lacks(Capability),
    KnownMiss(Capability),
    ContextTooSmall {
        need: u64,
        have: u64,
    },
    /// The provider said a request of about `at` tokens was too long for this model.
    TooLongBefore {
        at: u64,
    },
    CoolingDown {
        until_ms: u64,
        why: String,
    },
    ProviderBlocked {
        until_ms: u64,
        why: String,
    },
}

impl DropReason {
    /// The reason in words, its waits counted from `now_ms`.
    pub fn describe(&self, now_ms: u64) -> String {
        let in_secs = |until_ms: u64| format_wait(until_ms, now_ms);
        match self {
            DropReason::NotFree => "not free (use --allow-paid to permit)".into(),
            DropReason::Router => "a router model, not a model".into(),
            DropReason::NoTextOutput => "does not output text".into(),
            DropReason::ProviderNotSelected => "provider not selected (-p)".into(),
            DropReason::NotRequested => "not named by -m/--model".into(),
            DropReason::Excluded(g) => format!("excluded by `{g}`"),
            DropReason::Lacks(c) => format!("lacks {c}"),
            DropReason::KnownMiss(c) => format!("the provider said it lacks {c} (remembered)"),
            DropReason::ContextTooSmall { need, have } => {
                format!("context {have} tokens < about {need} needed")
            }
            DropReason::TooLongBefore { at } => {
                format!("a request of about {at} tokens was too long for it before (remembered)")
            }
            DropReason::CoolingDown { until_ms, why } => {
                format!("cooling down for {} after {why}", in_secs(*until_ms))
            }
            DropReason::ProviderBlocked { until_ms, why } => {
                format!("provider skipped for {} after {why}", in_secs(*until_ms))
            }
        }
    }

    /// A model dropped for this reason may be eligible later (its provider's quota or a
    /// block), as opposed to never for this request (capabilities, filters, context).
    pub fn for_now(&self) -> bool {
        matches!(self, DropReason::ProviderBlocked { .. })
    }
}

/// "4m05s" from `now_ms` until a future Unix-ms time (display only).
pub fn format_wait(until_ms: u64, now_ms: u64) -> String {
    let s = until_ms.saturating_sub(now_ms).div_ceil(1000);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Whether a `-m` entry names this model: its id, or `PROVIDER/ID` with the model's
/// provider (the form `--dry-run`, `stats` and the spinner show). OpenRouter's ids contain
/// slashes, so the whole string is tried as an id too (DESIGN §1).
pub fn names(entry: &str, m: &Model) -> bool {
    entry == m.id
        || entry
            .strip_prefix(m.provider.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|id| id == m.id)
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

pub fn check(
    m: &Model,
    route: &Route,
    needs: &Needs,
    state: &Health,
    now_ms: u64,
) -> Result<(), DropReason> {
    if !route.providers.is_empty() && !route.providers.iter().any(|p| p == &m.provider) {
        return Err(DropReason::ProviderNotSelected);
    }
    if !route.models.is_empty() && !route.models.iter().any(|e| names(e, m)) {
        return Err(DropReason::NotRequested);
    }
    if m.router && !m.is_free_router() {
        return Err(DropReason::Router);
    }
    if !m.free && !route.allow_paid {
        return Err(DropReason::NotFree);
    }
    if !m.text_output {
        return Err(DropReason::NoTextOutput);
    }
    if let Some(g) = route.exclude.iter().find(|g| glob_match(g, &m.id)) {
        return Err(DropReason::Excluded(g.clone()));
    }
    for cap in needs.caps.iter() {
        if !m.caps.has(cap) {
            return Err(DropReason::Lacks(cap));
        }
        if state
            .model(&m.provider, &m.id)
            .is_some_and(|s| s.known_miss(cap, &m.entry(), now_ms))
        {
            return Err(DropReason::KnownMiss(cap));
        }
    }
    if let Some(have) = m.context
        && have < needs.context_tokens
    {
        return Err(DropReason::ContextTooSmall {
            need: needs.context_tokens,
            have,
        });
    }
    if let Some(at) = state
        .model(&m.provider, &m.id)
        .and_then(|s| s.too_long_from(&m.entry(), now_ms))
        && needs.context_tokens >= at
    {
        return Err(DropReason::TooLongBefore { at });
    }
    if let Some(p) = state.providers.get(&m.provider)
        && p.blocked_until_ms > now_ms
    {
        let why = p
            .blocked_outcome
            .map_or("a provider-wide failure", |o| o.as_str())
            .to_string();
        return Err(DropReason::ProviderBlocked {
            until_ms: p.blocked_until_ms,
            why,
        });
    }
    if let Some((until_ms, why)) = state
        .providers
        .get(&m.provider)
        .and_then(|p| p.quota_block(now_ms))
    {
        return Err(DropReason::ProviderBlocked { until_ms, why });
    }
    if let Some(s) = state.model(&m.provider, &m.id)
        && s.cooldown_until_ms > now_ms
    {
        let why = s
            .last_outcome
            .map_or("a failure", |o| o.as_str())
            .to_string();
        return Err(DropReason::CoolingDown {
            until_ms: s.cooldown_until_ms,
            why,
        });
    }
    // As loaded (by every run) as when it last answered 429: out of quota for now.
    if let Some(until_ms) = state
        .model(&m.provider, &m.id)
        .and_then(|s| s.busy_until(now_ms))
    {
        return Err(DropReason::CoolingDown {
            until_ms,
            why: "as many recent requests as when it answered 429".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{ModelStats, ProviderStats, key};
    use crate::outcome::AttemptOutcome;
    use crate::plan::tests::model;

    #[test]
    fn globs() {
        assert!(glob_match(
            "meta-llama/*",
            "meta-llama/llama-3.3-70b-instruct:free"
        ));
        assert!(glob_match("*:free", "a/b:free"));
        assert!(glob_match(
            "*llama*70b*",
            "meta-llama/llama-3.3-70b-instruct:free"
        ));
        assert!(!glob_match(
            "*llama*8b*",
            "meta-llama/llama-3.3-70b-instruct:free"
        ));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn user_filters() {
        let m = model("or", "meta-llama/llama-3.3-70b-instruct:free");
        let s = Health::default();
        let n = Needs::default();
        let r = Route {
            providers: vec!["other".into()],
            ..Default::default()
        };
        assert_eq!(
            check(&m, &r, &n, &s, 0),
            Err(DropReason::ProviderNotSelected)
        );
        let r = Route {
            models: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(check(&m, &r, &n, &s, 0), Err(DropReason::NotRequested));
        let r = Route {
            exclude: vec!["meta-*".into()],
            ..Default::default()
        };
        assert_eq!(
            check(&m, &r, &n, &s, 0),
            Err(DropReason::Excluded("meta-*".into()))
        );
    }

    #[test]
    fn paid_only_with_allow_paid() {
        let mut m = model("or", "openai/gpt-4");
        m.free = false;
        let n = Needs::default();
        assert_eq!(
            check(&m, &Route::default(), &n, &Health::default(), 0),
            Err(DropReason::NotFree)
        );
        let r = Route {
            allow_paid: true,
            ..Default::default()
        };
        assert_eq!(check(&m, &r, &n, &Health::default(), 0), Ok(()));
    }

    #[test]
    fn context_and_capabilities() {
        let m = model("or", "a");
        let n = Needs {
            context_tokens: 9000,
            ..Default::default()
        };
        assert!(matches!(
            check(&m, &Route::default(), &n, &Health::default(), 0),
            Err(DropReason::ContextTooSmall { .. })
        ));
        let mut unknown = model("or", "b");
        unknown.context = None;
        assert_eq!(
            check(&unknown, &Route::default(), &n, &Health::default(), 0),
            Ok(())
        );
        let n = Needs {
            caps: crate::catalog::Capabilities {
                vision: true,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            check(&m, &Route::default(), &n, &Health::default(), 0),
            Err(DropReason::Lacks(Capability::Vision))
        );
    }

    #[test]
    fn cooldowns_and_blocks_expire() {
        let m = model("or", "a");
        let mut s = Health::default();
        s.models.insert(
            key("or", "a"),
            ModelStats {
                cooldown_until_ms: 100,
                last_outcome: Some(AttemptOutcome::RateLimited),
                ..Default::default()
            },
        );
        let r = Route::default();
        let n = Needs::default();
        assert!(matches!(
            check(&m, &r, &n, &s, 50),
            Err(DropReason::CoolingDown { .. })
        ));
        assert_eq!(check(&m, &r, &n, &s, 100), Ok(()));
        s.providers.insert(
            "or".into(),
            ProviderStats {
                blocked_until_ms: 200,
                blocked_outcome: Some(AttemptOutcome::QuotaExhausted),
                ..Default::default()
            },
        );
        let e = check(&m, &r, &n, &s, 150).unwrap_err();
        assert!(e.describe(150).contains("quota_exhausted"), "{e:?}");
    }
}
