//! The plan (DESIGN §3 steps 2–3): every model is kept or dropped with a reason, and the
//! kept ones are ranked. Pure: models, the request's route and needs, the health model,
//! `now` and an Rng come in; a `Plan` comes out. No I/O.

pub mod filter;
pub mod rank;

use std::time::Duration;

use serde::Serialize;

use crate::catalog::Model;
use crate::health::Health;
use crate::providers::Tier;
use crate::request::{Needs, Route};

pub use filter::DropReason;
pub use rank::Score;

/// A local server may unload a model left idle this long (Ollama's default `keep_alive`
/// is five minutes) and load it again on the next request, which then takes seconds: its
/// first token is not held to the measured (warm) time, only to the deadline's share.
pub const LOCAL_IDLE_MS: u64 = 5 * 60_000;

/// A model's patience (`Candidate::patience`) is `PATIENCE_MULT` times the
/// `PATIENCE_QUANTILE` of its own recent first tokens, or `PATIENCE_MEDIAN_MULT` times
/// their median when that is less, at least `PATIENCE_FLOOR`: a model known to be fast is
/// overtaken within a few hundred ms when it hangs, a slow one is given what it usually
/// needs, and one whose tail is heavy (one first token in ten or more far out, so that its
/// p90 is in the tail) is not waited for as long as its tail. They were 2 and 4 until the
/// second half of issue 18: 1.5 and 2.5 took the sequential and open-loop p95 on
/// `bench/fleet.sh`'s fleets a little closer to the clairvoyant client's, for about 3% more
/// requests (bench/results.md).
pub const PATIENCE_QUANTILE: f64 = 0.9;
pub const PATIENCE_MULT: f64 = 1.5;
pub const PATIENCE_MEDIAN_MULT: f64 = 2.5;
/// The floor only guards against samples too few or too alike to show a spread (a busy
/// machine's scheduling, a cold connection): a cloud model's own p90 is hundreds of ms.
pub const PATIENCE_FLOOR: Duration = Duration::from_millis(60);
/// The patience of a model whose own is not known when no candidate's is known either
/// (a first run): about a slow free model's first token.
pub const PATIENCE_UNKNOWN: Duration = Duration::from_secs(3);
/// Exploring beside the next candidate costs a request: not once a provider's fullest
/// window (its minute, its day) is more than this share spent.
pub const EXPLORE_BESIDE_MAX_SPENT: f64 = 0.5;
/// A long prompt takes longer to read before the first token: this much more patience per
/// estimated token of the request beyond `PREFILL_FREE_TOKENS` (about 20,000 tokens a
/// second, a cloud GPU's prefill; the samples were mostly short prompts).
pub const PREFILL_MS_PER_TOKEN: f64 = 0.05;
pub const PREFILL_FREE_TOKENS: u64 = 1_000;

#[derive(Debug, Clone)]
pub struct Candidate {
    pub model: Model,
    pub score: Score,
    /// The first-token time to expect, tail included (mean plus two deviations), when
    /// measured: plans the attempt's first-token timeout and its `hedge = "auto"` delay.
    pub ttft_tail_ms: Option<f64>,
    /// How long its first token is waited for before the next candidate is started beside
    /// it (it keeps running until its own first-token limit, and the first of the two to
    /// produce a token wins): from its own recent first tokens, or for a model without
    /// them from the other candidates' (their median), so an unmeasured one, explored, costs
    /// no more than a known one; a local model idle long enough to have been unloaded gets
    /// `PATIENCE_UNKNOWN` (loading it again takes seconds).
    pub patience: Duration,
    /// Lifted by the ranking's exploration (`rank::EXPLORE`, never with `-m`, never a model
    /// on this machine): when its
    /// turn comes, the next candidate is started beside it at once, so finding out about
    /// a model never measured costs a request, not a wait.
    pub explored: bool,
    /// The model is cooling down until then: it is tried only after every other candidate
    /// (never slept on), so a run never ends with nothing tried while one exists. Cooling
    /// candidates go in score order among themselves (bench/fleet-results.md, variant F).
    pub cooling_until_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub provider: String,
    pub model: String,
    /// Why, in words (its waits counted from the plan's `now`).
    #[serde(rename = "reason")]
    pub why: String,
    #[serde(skip)]
    pub reason: DropReason,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    pub dropped: Vec<Dropped>,
}

pub fn plan(
    models: &[Model],
    route: &Route,
    needs: &Needs,
    state: &Health,
    now_ms: u64,
    rng: &mut fastrand::Rng,
) -> Plan {
    let mut out = Plan::default();
    let mut kept = Vec::new();
    let mut cooling = Vec::new();
    for m in models {
        match filter::check(m, route, needs, state, now_ms) {
            Ok(()) => kept.push(m),
            Err(DropReason::CoolingDown { until_ms, .. }) => cooling.push((m, until_ms)),
            Err(reason) => out.dropped.push(Dropped {
                provider: m.provider.clone(),
                model: m.id.clone(),
                why: reason.describe(now_ms),
                reason,
            }),
        }
    }
    // Latency is judged against the candidates that can be tried now.
    let latency_ref = rank::LatencyRef::of(kept.iter().map(|m| rank::latency_inputs(state, m)));
    // What is measured of a model and still holds: a local server idle for a while may
    // have unloaded it.
    let idle = |m: &Model| {
        m.tier == Tier::Local
            && state
                .model(&m.provider, &m.id)
                .is_some_and(|s| s.updated_ms + LOCAL_IDLE_MS < now_ms)
    };
    let warm = |m: &Model| state.model(&m.provider, &m.id).filter(|_| !idle(m));
    // Its own distribution; with fewer samples, its mean first token plus two deviations.
    let own_patience = |m: &Model| {
        let s = warm(m)?;
        let ms = match s.first_token_quantiles([PATIENCE_QUANTILE, 0.5]) {
            Some([tail, median]) => (tail * PATIENCE_MULT).min(median * PATIENCE_MEDIAN_MULT),
            None => s.expected_ttft_ms()? * PATIENCE_MULT,
        };
        Some(crate::from_ms_f64(ms).max(PATIENCE_FLOOR))
    };
    let own: Vec<Option<Duration>> = kept.iter().map(|m| own_patience(m)).collect();
    let mut known: Vec<Duration> = own.iter().flatten().copied().collect();
    known.sort_unstable();
    let typical = known
        .get(known.len() / 2)
        .copied()
        .unwrap_or(PATIENCE_UNKNOWN);
    let prefill = crate::from_ms_f64(
        needs.context_tokens.saturating_sub(PREFILL_FREE_TOKENS) as f64 * PREFILL_MS_PER_TOKEN,
    );
    let mut candidate = |m: &Model, own: Option<Duration>, cooling_until_ms| Candidate {
        model: m.clone(),
        score: rank::score(m, route, state, now_ms, &latency_ref, &mut *rng),
        ttft_tail_ms: warm(m).and_then(|s| s.expected_ttft_ms()),
        patience: own
            .unwrap_or(if idle(m) { PATIENCE_UNKNOWN } else { typical })
            .saturating_add(prefill),
        cooling_until_ms,
        explored: false,
    };
    out.candidates = kept
        .into_iter()
        .zip(own)
        .map(|(m, own)| candidate(m, own, None))
        .collect();
    // A model lifted to be explored is tried beside the next one, not instead of it; not
    // one on this machine, where two requests at once slow each other down, nor while its
    // provider's quota is more than half spent, where the extra request is dear.
    if route.models.is_empty() {
        for c in &mut out.candidates {
            let spent = state
                .providers
                .get(&c.model.provider)
                .map_or(0.0, |p| p.used_fraction(now_ms));
            c.explored = c.score.explore > 0.0
                && c.model.tier != Tier::Local
                && spent <= EXPLORE_BESIDE_MAX_SPENT;
        }
    }
    rank::order(&mut out.candidates, &route.models);
    let mut cooling: Vec<Candidate> = cooling
        .into_iter()
        .map(|(m, until)| candidate(m, own_patience(m), Some(until)))
        .collect();
    rank::order(&mut cooling, &route.models);
    out.candidates.extend(cooling);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Capabilities;

    /// The plan for `models` with no route or needs given (the same seed each time).
    fn plan_of(models: &[Model], st: &Health, now_ms: u64) -> Plan {
        plan(
            models,
            &Route::default(),
            &Needs::default(),
            st,
            now_ms,
            &mut fastrand::Rng::with_seed(1),
        )
    }

    pub(crate) fn model(provider: &str, id: &str) -> Model {
        Model {
            provider: provider.into(),
            id: id.into(),
            context: Some(8192),
            caps: Capabilities::default(),
            free: true,
            router: false,
            text_output: true,
            created: None,
            tier: crate::providers::Tier::Cloud,
        }
    }

    #[test]
    fn patience_comes_from_the_models_own_samples_or_the_others() {
        use crate::health::{ModelStats, key};
        let mut st = Health::default();
        let with = |samples: Vec<u32>| ModelStats {
            ttft_recent: samples,
            ..Default::default()
        };
        st.models
            .insert(key("or", "fast-8b"), with(vec![20, 30, 40, 50]));
        st.models
            .insert(key("or", "slow-70b"), with(vec![900, 1000, 1100, 1200]));
        st.models
            .insert(key("or", "mid-14b"), with(vec![300, 300, 300, 400]));
        st.models.insert(key("or", "new-1b"), with(vec![5, 5]));
        // One first token in four two seconds late: its p90 is in the tail.
        let tailed = vec![40, 50, 60, 2000, 45, 55, 2500, 50];
        st.models.insert(key("or", "tailed-9b"), with(tailed));
        let models: Vec<Model> = [
            "fast-8b",
            "slow-70b",
            "mid-14b",
            "new-1b",
            "unseen-3b",
            "tailed-9b",
        ]
        .iter()
        .map(|id| model("or", id))
        .collect();
        let p = plan_of(&models, &st, 0);
        let patience = |id: &str| {
            p.candidates
                .iter()
                .find(|c| c.model.id == id)
                .unwrap()
                .patience
                .as_millis()
        };
        assert_eq!(patience("fast-8b"), 75, "1.5 x its p90 (50 ms)");
        assert_eq!(patience("slow-70b"), 1800);
        assert_eq!(
            patience("mid-14b"),
            600,
            "1.5 x 400, under 2.5 x its median (300)"
        );
        assert_eq!(
            patience("tailed-9b"),
            125,
            "2.5 x its median (50), not 1.5 x 2,500"
        );
        // Too few samples, or none: the median of the others' (75, 125, 600, 1800).
        assert_eq!(patience("new-1b"), 600);
        assert_eq!(patience("unseen-3b"), 600);
        // Nothing measured anywhere: a slow free model's first token.
        let p = plan_of(&models, &Health::default(), 0);
        assert!(p.candidates.iter().all(|c| c.patience == PATIENCE_UNKNOWN));
    }

    #[test]
    fn explored_models_go_beside_the_next_unless_the_quota_is_dear() {
        use crate::health::ProviderStats;
        let models = vec![model("or", "a-8b"), model("or", "b-70b")];
        // The first seed whose plan explores a model.
        let explores = |st: &Health| {
            (0..500).find_map(|seed| {
                let p = plan(
                    &models,
                    &Route::default(),
                    &Needs::default(),
                    st,
                    0,
                    &mut fastrand::Rng::with_seed(seed),
                );
                let c = p.candidates.iter().find(|c| c.score.explore > 0.0)?;
                Some(c.explored)
            })
        };
        assert_eq!(explores(&Health::default()), Some(true));
        let mut st = Health::default();
        st.providers.insert(
            "or".into(),
            ProviderStats {
                day: 0,
                day_count: 40,
                per_day: Some(50),
                ..Default::default()
            },
        );
        assert_eq!(explores(&st), Some(false), "40 of 50 requests spent today");
        let pinned = Route {
            models: vec!["a-8b".into()],
            ..Route::default()
        };
        let p = plan(
            &models,
            &pinned,
            &Needs::default(),
            &Health::default(),
            0,
            &mut fastrand::Rng::with_seed(1),
        );
        assert!(p.candidates.iter().all(|c| !c.explored), "never with -m");
    }

    #[test]
    fn cooling_models_are_tried_last_not_dropped() {
        use crate::health::{ModelStats, key};
        use crate::outcome::AttemptOutcome;
        let mut st = Health::default();
        st.models.insert(
            key("or", "big-70b"),
            ModelStats {
                cooldown_until_ms: 500,
                last_outcome: Some(AttemptOutcome::Timeout),
                ..Default::default()
            },
        );
        let models = vec![model("or", "big-70b"), model("or", "small-1b")];
        let p = plan_of(&models, &st, 100);
        let ids: Vec<_> = p.candidates.iter().map(|c| c.model.id.as_str()).collect();
        assert_eq!(ids, vec!["small-1b", "big-70b"]);
        assert_eq!(p.candidates[1].cooling_until_ms, Some(500));
        assert!(p.dropped.is_empty());
    }

    #[test]
    fn cooling_models_are_tried_best_first_not_soonest_back_first() {
        // Parallel runs that all tried the soonest-back model first met its 429 together;
        // by score (jitter included) they spread, and the better model goes first.
        use crate::health::{ModelStats, key};
        let mut st = Health::default();
        for (id, until) in [("big-70b", 900), ("small-1b", 200)] {
            st.models.insert(
                key("or", id),
                ModelStats {
                    cooldown_until_ms: until,
                    ..Default::default()
                },
            );
        }
        let models = vec![model("or", "small-1b"), model("or", "big-70b")];
        let p = plan_of(&models, &st, 100);
        let ids: Vec<_> = p.candidates.iter().map(|c| c.model.id.as_str()).collect();
        assert_eq!(ids, vec!["big-70b", "small-1b"]);
    }

    #[test]
    fn plan_keeps_free_and_drops_the_rest_with_reasons() {
        let mut paid = model("or", "openai/gpt-4");
        paid.free = false;
        let mut auto = model("or", "openrouter/auto");
        auto.router = true;
        auto.free = false;
        let mut free_router = model("or", "openrouter/free");
        free_router.router = true;
        let models = vec![
            free_router,
            model("or", "meta-llama/llama-3.3-70b-instruct:free"),
            paid,
            auto,
            model("or", "qwen/qwen3-4b:free"),
        ];
        let p = plan_of(&models, &Health::default(), 0);
        let mut ids: Vec<_> = p.candidates.iter().map(|c| c.model.id.as_str()).collect();
        assert_eq!(
            ids.pop(),
            Some("openrouter/free"),
            "the free router goes last"
        );
        ids.sort();
        assert_eq!(
            ids,
            vec![
                "meta-llama/llama-3.3-70b-instruct:free",
                "qwen/qwen3-4b:free"
            ]
        );
        assert_eq!(p.dropped.len(), 2);
        assert!(
            p.dropped
                .iter()
                .any(|d| d.model == "openai/gpt-4" && d.reason == DropReason::NotFree)
        );
        assert!(
            p.dropped
                .iter()
                .any(|d| d.model == "openrouter/auto" && d.reason == DropReason::Router)
        );
    }
}
