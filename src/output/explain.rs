//! The words of the run-level failures a user meets first (DESIGN §4): why no model is
//! eligible, what each failed attempt said, and the most likely fix. Wording only: the
//! decisions (which kind, which exit code) are made by the stages that build the `Error`.

use crate::catalog::Capability;
use crate::outcome::{AttemptOutcome, AttemptRecord};
use crate::plan::{DropReason, Plan};

/// "7,001"
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1 model", "3 models"
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Why no model of the plan can take the request, in words: the context first (the
/// request's size against the largest model that has everything else), then every other
/// reason, grouped and counted.
pub fn no_eligible(plan: &Plan, context_tokens: u64) -> String {
    let mut parts = Vec::new();
    let largest = plan
        .dropped
        .iter()
        .filter_map(|d| match d.reason {
            DropReason::ContextTooSmall { have, .. } => Some((have, d)),
            _ => None,
        })
        .max_by_key(|(have, _)| *have);
    if let Some((have, d)) = largest {
        parts.push(format!(
            "the prompt and the room for its answer (about {} tokens) are larger than every eligible model's context (largest {}: {}/{})",
            thousands(context_tokens),
            thousands(have),
            d.provider,
            d.model
        ));
    }
    let refused = plan
        .dropped
        .iter()
        .filter_map(|d| match d.reason {
            DropReason::TooLongBefore { at } => Some((at, d)),
            _ => None,
        })
        .max_by_key(|(at, _)| *at);
    if let Some((at, d)) = refused {
        let n = plan
            .dropped
            .iter()
            .filter(|d| matches!(d.reason, DropReason::TooLongBefore { .. }))
            .count();
        parts.push(format!(
            "the prompt (about {} tokens) is larger than {} refused before (the largest, {}/{}, from about {} tokens; remembered for a while)",
            thousands(context_tokens),
            if n == 1 { "what 1 model".to_string() } else { format!("what {n} models") },
            d.provider,
            d.model,
            thousands(at)
        ));
    }
    let mut groups: Vec<(String, usize)> = Vec::new();
    for d in &plan.dropped {
        let Some(label) = label(&d.reason) else {
            continue;
        };
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => groups.push((label, 1)),
        }
    }
    for (label, n) in groups {
        let verb = if n == 1 { "is" } else { "are" };
        parts.push(format!("{} {verb} {label}", count(n, "model")));
    }
    if parts.is_empty() {
        return "the providers listed no models".into();
    }
    parts.join("; ")
}

/// What the models dropped for this reason are, for "3 models are …"; the context
/// reasons are said separately (`no_eligible`).
fn label(reason: &DropReason) -> Option<String> {
    Some(match reason {
        DropReason::ContextTooSmall { .. } | DropReason::TooLongBefore { .. } => return None,
        DropReason::NotFree => "not free (--allow-paid permits them)".into(),
        DropReason::Router => "routers, not models".into(),
        DropReason::NoTextOutput => "without text output".into(),
        DropReason::ProviderNotSelected => "at providers not chosen with -p".into(),
        DropReason::NotRequested => "not named by -m".into(),
        DropReason::Excluded(g) => format!("excluded by `{g}`"),
        DropReason::Lacks(c) => format!("without {c}"),
        DropReason::KnownMiss(c) => {
            format!("without {c}, as their provider said lately (remembered for a while)")
        }
        DropReason::CoolingDown { .. } => "cooling down after failures".into(),
        DropReason::ProviderBlocked { .. } => "at providers skipped for now".into(),
    })
}

/// One short line per attempt: provider/model, outcome, the server's message on one line.
pub fn attempt_lines(attempts: &[AttemptRecord]) -> Vec<String> {
    attempts
        .iter()
        .map(|a| {
            let status = a.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            let said = a
                .error
                .as_deref()
                .map(|e| format!(": {}", one_line(e, 120)))
                .unwrap_or_default();
            format!(
                "  {}/{}: {}{status}{said}",
                a.provider,
                a.model,
                a.outcome.as_str()
            )
        })
        .collect()
}

/// The text on one line, at most `max` characters (an ellipsis when cut).
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Every attempt failed to connect: nothing could be reached at all.
pub fn nothing_reached(attempts: &[AttemptRecord]) -> bool {
    !attempts.is_empty()
        && attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::ConnectionFailed)
}

/// What to do when nothing could be reached.
pub const NOTHING_REACHED_HINT: &str = "Set OPENROUTER_API_KEY (a free key from https://openrouter.ai/keys) or another provider's key (`freeroute config show` lists them), start a local server (Ollama, llama.cpp), or check the network";

/// The most likely fix after every attempt failed, from what most of them said.
pub fn likely_fix(attempts: &[AttemptRecord]) -> Option<String> {
    use AttemptOutcome::*;
    if nothing_reached(attempts) {
        return Some(NOTHING_REACHED_HINT.into());
    }
    let failed: Vec<_> = attempts.iter().filter(|a| a.outcome != Cancelled).collect();
    let most = |o: &[AttemptOutcome]| {
        failed.iter().filter(|a| o.contains(&a.outcome)).count() * 2 > failed.len()
    };
    let hint = if most(&[RateLimited, QuotaExhausted]) {
        "The free models are busy or their quota is spent: try again in a minute, or add another provider's key (`freeroute config show` lists them)"
    } else if most(&[ContextTooLong]) {
        "The prompt is too long for the models tried: shorten it, or lower --max-tokens"
    } else if most(&[Timeout]) {
        "The models were too slow: raise --timeout, or see `freeroute -v` for where the time went"
    } else if most(&[CapabilityMissing]) {
        "The models do not have what the request needs after all: see `freeroute models` for others"
    } else if most(&[BadRequest]) {
        "The servers refused the request itself (their messages are above): check the options sent, such as --temperature or --max-tokens"
    } else if most(&[InvalidAnswer]) {
        "The answers did not match what was asked (the schema, or a tool call): try other models with -m, or loosen the schema"
    } else if most(&[
        ServerError,
        ConnectionFailed,
        EmptyAnswer,
        StreamInterrupted,
    ]) {
        "The servers failed (their messages are above): try again later, or pick other models with -m (`freeroute models` lists them)"
    } else {
        return None;
    };
    Some(hint.into())
}

/// A capability missing at a model the user can vouch for: how to claim it in the config.
pub fn claim_hint(provider: &str, model: &str, cap: Capability) -> String {
    let key = match cap {
        Capability::Vision => "vision",
        Capability::Tools => "tools",
        Capability::Schema => "schema",
    };
    // A server found by itself is in no config yet: its entry needs the base URL too.
    let base = crate::discover::base_url_for(provider)
        .map(|u| format!(" base_url = \"{u}\","))
        .unwrap_or_default();
    format!(
        "If {provider}/{model} does support {cap}, say so in the config: [providers.{provider}]{base} models = [{{ id = \"{model}\", {key} = true }}]"
    )
}

/// Edits (insertions, deletions, substitutions) from `a` to `b`, case ignored.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// The `n` candidates closest to `wanted`: those containing it first, then by edits.
pub fn closest(wanted: &str, candidates: &[String], n: usize) -> Vec<String> {
    let w = wanted.to_lowercase();
    let distance = |c: &str| {
        let lower = c.to_lowercase();
        if lower.contains(&w) {
            return 0;
        }
        // Each part after a `/` counts, whole or cut to the wanted length (a tag such as
        // `:free` left off costs one edit).
        let mut parts = vec![lower.as_str()];
        parts.extend(lower.match_indices('/').map(|(i, _)| &lower[i + 1..]));
        parts
            .iter()
            .map(|p| {
                let cut: String = p.chars().take(w.chars().count()).collect();
                edit_distance(&w, p).min(edit_distance(&w, &cut) + 1)
            })
            .min()
            .unwrap_or(usize::MAX)
    };
    let mut scored: Vec<(usize, &String)> = candidates.iter().map(|c| (distance(c), c)).collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(n).map(|(_, c)| c.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_lines() {
        assert_eq!(thousands(7001), "7,001");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(count(1, "model"), "1 model");
        assert_eq!(count(2, "model"), "2 models");
        assert_eq!(one_line("a\n\nb  c", 10), "a b c");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
    }

    #[test]
    fn closest_ids() {
        assert_eq!(edit_distance("model", "models"), 1);
        assert_eq!(edit_distance("stat", "stats"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        let ids: Vec<String> = [
            "llamacpp/smollm2",
            "openrouter/qwen/qwen3-32b:free",
            "groq/llama-3.1-8b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(closest("smolm2", &ids, 1), vec!["llamacpp/smollm2"]);
        assert_eq!(
            closest("qwen3", &ids, 1),
            vec!["openrouter/qwen/qwen3-32b:free"]
        );
    }
}
