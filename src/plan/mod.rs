//! The plan (DESIGN §3 steps 2–3): every model is kept or dropped with a reason, and the
//! kept ones are ranked. Pure: models, the request's route and needs, the remembered state,
//! `now` and an Rng come in; a `Plan` comes out. No I/O.

pub mod filter;
pub mod rank;

use serde::Serialize;

use crate::catalog::Model;
use crate::request::{Needs, Route};
use crate::state::State;

pub use filter::DropReason;
pub use rank::Score;

#[derive(Debug, Clone)]
pub struct Candidate {
    pub model: Model,
    pub score: Score,
    /// Measured time to first token, when known (plans the attempt's timeout and hedge).
    pub ttft_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub provider: String,
    pub model: String,
    pub reason: String,
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
    state: &State,
    now_ms: u64,
    rng: &mut fastrand::Rng,
) -> Plan {
    let mut out = Plan::default();
    for m in models {
        match filter::check(m, route, needs, state, now_ms) {
            Ok(()) => out.candidates.push(Candidate {
                model: m.clone(),
                score: rank::score(m, route, state, now_ms, rng),
                ttft_ms: state.model(&m.provider, &m.id).and_then(|s| s.ttft_ms),
            }),
            Err(reason) => out.dropped.push(Dropped {
                provider: m.provider.clone(),
                model: m.id.clone(),
                reason: reason.to_string(),
            }),
        }
    }
    rank::order(&mut out.candidates, &route.models);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Capabilities;

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
        let p = plan(
            &models,
            &Route::default(),
            &Needs::default(),
            &State::default(),
            0,
            &mut fastrand::Rng::with_seed(1),
        );
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
                .any(|d| d.model == "openai/gpt-4" && d.reason.contains("not free"))
        );
        assert!(
            p.dropped
                .iter()
                .any(|d| d.model == "openrouter/auto" && d.reason.contains("router"))
        );
    }
}
