//! Scores and orders kept candidates (DESIGN §3 step 3): a quality prior from the model's
//! size, family and age, the user's `prefer`, measured health and latency, and a little
//! jitter so load spreads and unmeasured models get tried. Pure: `now` and the Rng come in.

use serde::Serialize;

use super::Candidate;
use super::filter::glob_match;
use crate::catalog::Model;
use crate::health::Health;
use crate::request::Route;

/// Bonus for a model matching `prefer`: larger than every other part together.
pub const PREFER_BONUS: f64 = 2.0;
/// Weight of the measured success ratio (health 0.5 = unmeasured = no effect).
pub const HEALTH_WEIGHT: f64 = 1.2;
/// What a model loses for each doubling of its expected time to an answer over the
/// fastest candidate's: a model twice as slow as the fastest loses 0.5, more than the size
/// prior tells a 400B model from an 8B one (0.4), so a bigger model goes first only when it
/// answers about as fast (within about 1.4 times, for a 70B over an 8B). Relative, so it
/// orders a fleet the same way whether its answers take 50 ms or 5 s, and users of free
/// models suffer slow answers most. It was 0.25 until issue 18: on `bench/fleet.sh`'s
/// fleets the ranking then sent one prompt in ten or more to models two to four times
/// slower than the fastest, and those set the p95 (bench/results.md).
pub const LATENCY_PER_DOUBLING: f64 = 0.5;
/// The most latency can cost (a model 32 times slower than the fastest).
pub const LATENCY_MAX: f64 = 2.5;
/// Jitter spreads load and gets unmeasured models tried (DESIGN §3).
pub const JITTER: f64 = 0.25;
/// Now and then (`EXPLORE_RATE` of the time) a model the router knows little about (fewer
/// than two outcomes, after decay) is lifted by up to `EXPLORE`, so models never measured,
/// or measured long ago (one that has since recovered, say), are found again. A model with
/// a few recent outcomes is known: lifting it again only resends traffic to a slow one.
pub const EXPLORE: f64 = 0.6;
pub const EXPLORE_RATE: f64 = 0.1;
/// A model some run asked lately (its load, which counts a request when it is reserved, by
/// every run sharing the store, is at least this) is not explored: it is being measured
/// now or was a moment ago, and its outcome is on the way (one request's load fades below
/// this after about 42 s, `LOAD_TAU_MS` · ln 2). Without this a burst of parallel
/// runs explored the same unknown models once each (`xargs -P 8` on `bench/fleet.sh`'s
/// heavy fleet: 38 explored requests in 200 prompts, each one more request in a window
/// that had 28 to spare; bench/results.md, issue 18's third pass).
pub const EXPLORE_MAX_LOAD: f64 = 0.5;
/// Most a provider's used-up quota window costs its models: a provider near its limit
/// yields to one with room. A model as loaded as when it last answered 429 loses as much
/// (quadratically on the way there, up to twice as much beyond), so parallel runs spread
/// over models before meeting their limits.
pub const QUOTA_WEIGHT: f64 = 0.8;

/// The parts of a candidate's score; `total` orders them. Printable in `--dry-run`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Score {
    pub total: f64,
    pub quality: f64,
    pub prefer: f64,
    pub health: f64,
    pub latency: f64,
    pub explore: f64,
    pub quota: f64,
    pub jitter: f64,
}

impl Score {
    /// Each part to two decimals, for `--dry-run --json`.
    pub fn rounded(&self) -> Score {
        let r = |x: f64| (x * 100.0).round() / 100.0;
        Score {
            total: r(self.total),
            quality: r(self.quality),
            prefer: r(self.prefer),
            health: r(self.health),
            latency: r(self.latency),
            explore: r(self.explore),
            quota: r(self.quota),
            jitter: r(self.jitter),
        }
    }

    pub fn explain(&self) -> String {
        format!(
            "quality {:.2} + prefer {:.2} + health {:+.2} + latency {:+.2} + explore {:.2} + quota {:+.2} + jitter {:.2}",
            self.quality,
            self.prefer,
            self.health,
            self.latency,
            self.explore,
            self.quota,
            self.jitter
        )
    }
}

/// How a model's time to an answer is assumed to grow with its size until measured:
/// as parameters^0.4 (a 400B model about 11 times slower than a 1B one), calibrated on the
/// models measured so far.
pub const SIZE_EXPONENT: f64 = 0.4;

/// What a candidate's latency is judged against: the fastest candidate's expected time to
/// an answer, measured or assumed from its size.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencyRef {
    pub best_ms: Option<f64>,
    /// Milliseconds per parameters^`SIZE_EXPONENT` (billions) among the models measured: the
    /// median; 1 when none is measured (then only ratios between sizes matter).
    pub per_size: Option<f64>,
}

impl LatencyRef {
    /// From the candidates' measured expected times (None: not measured) and sizes.
    pub fn of(cands: impl IntoIterator<Item = (Option<f64>, Option<f64>)>) -> Self {
        let cands: Vec<(Option<f64>, Option<f64>)> = cands
            .into_iter()
            .map(|(t, p)| (t.filter(|t| *t > 0.0), p.filter(|p| *p > 0.0)))
            .collect();
        let mut ratios: Vec<f64> = cands
            .iter()
            .filter_map(|(t, p)| Some(t.as_ref()? / p.as_ref()?.powf(SIZE_EXPONENT)))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let per_size = if cands.iter().all(|(t, _)| t.is_none()) {
            Some(1.0)
        } else {
            ratios.get(ratios.len().saturating_sub(1) / 2).copied()
        };
        let mut r = LatencyRef {
            best_ms: None,
            per_size,
        };
        r.best_ms = cands
            .iter()
            .filter_map(|(t, p)| r.estimate(*t, *p))
            .min_by(f64::total_cmp);
        r
    }

    /// The measured time, else one assumed from the size, else none (an unknown model).
    fn estimate(&self, measured_ms: Option<f64>, params_b: Option<f64>) -> Option<f64> {
        measured_ms.or_else(|| Some(self.per_size? * params_b?.powf(SIZE_EXPONENT)))
    }

    /// 0 for the fastest, less by `LATENCY_PER_DOUBLING` per doubling of the time. A model
    /// neither measured nor sized is taken to be as fast as the fastest (optimism: else it
    /// would never be tried, and never be found fast); one answer measures it.
    pub fn latency(&self, measured_ms: Option<f64>, params_b: Option<f64>) -> f64 {
        let (Some(best), Some(t)) = (self.best_ms, self.estimate(measured_ms, params_b)) else {
            return 0.0;
        };
        -(LATENCY_PER_DOUBLING * (t.max(best) / best).log2()).min(LATENCY_MAX)
    }
}

/// What `LatencyRef` needs of a model: its expected time to an answer (first token, tail
/// included, then the rest) when measured, and its size in billions when the id says.
pub fn latency_inputs(state: &Health, m: &Model) -> (Option<f64>, Option<f64>) {
    (
        state
            .model(&m.provider, &m.id)
            .and_then(|s| s.expected_answer_ms()),
        params_billions(&m.id.to_ascii_lowercase()),
    )
}

pub fn score(
    m: &Model,
    route: &Route,
    state: &Health,
    now_ms: u64,
    latency_ref: &LatencyRef,
    rng: &mut fastrand::Rng,
) -> Score {
    let quality = quality_prior(m, now_ms);
    let prefer = if route.prefer.iter().any(|g| glob_match(g, &m.id)) {
        PREFER_BONUS
    } else {
        0.0
    };
    let stats = state.model(&m.provider, &m.id);
    let health = stats.map_or(0.0, |s| HEALTH_WEIGHT * (s.health(now_ms) - 0.5));
    let (measured_ms, params_b) = latency_inputs(state, m);
    let latency = latency_ref.latency(measured_ms, params_b);
    let confidence = stats.map_or(0.0, |s| s.confidence(now_ms));
    let asked_lately = stats.is_some_and(|s| s.load(now_ms) >= EXPLORE_MAX_LOAD);
    let explore = if rng.f64() < EXPLORE_RATE && !asked_lately {
        // confidence n / (n + 2): 0 outcomes lift fully, 1 a third, 2 or more not at all.
        EXPLORE * (1.0 - 2.0 * confidence).max(0.0)
    } else {
        0.0
    };
    let jitter = JITTER * rng.f64();
    let used = state
        .providers
        .get(&m.provider)
        .map_or(0.0, |p| p.used_fraction(now_ms));
    let busy = stats.map_or(0.0, |s| s.busy(now_ms));
    let quota = -QUOTA_WEIGHT * (used * used + (busy * busy).min(2.0));
    Score {
        total: quality + prefer + health + latency + explore + quota + jitter,
        quota,
        quality,
        prefer,
        health,
        latency,
        explore,
        jitter,
    }
}

/// Orders candidates: models named by `-m` in the order given; then keyed clouds before
/// local servers found by themselves before keyless services (DESIGN §2); within a tier
/// by score, with the `openrouter/free` router last (it spends the same quota and picks
/// at random).
pub fn order(candidates: &mut [Candidate], pinned: &[String]) {
    let pin_rank = |c: &Candidate| {
        pinned
            .iter()
            .position(|p| super::filter::names(p, &c.model))
            .unwrap_or(usize::MAX)
    };
    candidates.sort_by(|a, b| {
        pin_rank(a)
            .cmp(&pin_rank(b))
            .then(a.model.tier.cmp(&b.model.tier))
            .then(a.model.is_free_router().cmp(&b.model.is_free_router()))
            .then(b.score.total.total_cmp(&a.score.total))
    });
}

/// 0..1 from the parameter count in the id, a small family table and the model's age.
pub fn quality_prior(m: &Model, now_ms: u64) -> f64 {
    let id = m.id.to_ascii_lowercase();
    let size = match params_billions(&id) {
        // 1B → 0, 1000B → 1, on a log scale.
        Some(b) => (b.max(1.0).log10() / 3.0).clamp(0.0, 1.0),
        None => 0.35,
    };
    const FAMILIES: &[(&str, f64)] = &[
        ("deepseek", 0.15),
        ("qwen3", 0.12),
        ("kimi", 0.12),
        ("glm", 0.1),
        ("gpt-oss", 0.1),
        ("llama-4", 0.1),
        ("llama-3.3", 0.08),
        ("gemini", 0.1),
        ("gemma-3", 0.05),
        ("gemma-4", 0.08),
        ("mistral", 0.05),
        ("nemotron", 0.05),
        ("hermes", 0.05),
    ];
    let family = FAMILIES
        .iter()
        .find(|(f, _)| id.contains(f))
        .map_or(0.0, |(_, b)| *b);
    let small = ["nano", "mini", "tiny", "-1b", "-3b"]
        .iter()
        .any(|s| id.contains(s));
    let age_bonus = match m.created {
        Some(created) => {
            let age_days = (now_ms / 1000).saturating_sub(created.max(0) as u64) / 86_400;
            0.1 * (1.0 - (age_days as f64 / 730.0).clamp(0.0, 1.0))
        }
        None => 0.0,
    };
    (0.7 * size + family + age_bonus - if small { 0.1 } else { 0.0 }).clamp(0.0, 1.0)
}

/// The largest `<n>b` in the id (`70b`, `1.5b`, `120b`), ignoring active-parameter tags
/// like `a12b`.
pub fn params_billions(id: &str) -> Option<f64> {
    let bytes = id.as_bytes();
    let mut best: Option<f64> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit()
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'.')
        {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let end_ok = i + 1 >= bytes.len() || !bytes[i + 1].is_ascii_alphanumeric();
            if i < bytes.len()
                && bytes[i] == b'b'
                && end_ok
                && let Ok(n) = id[start..i].parse::<f64>()
            {
                best = Some(best.map_or(n, |b: f64| b.max(n)));
            }
        } else {
            i += 1;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{ModelStats, key};
    use crate::plan::tests::model;

    #[test]
    fn parameter_counts() {
        assert_eq!(
            params_billions("meta-llama/llama-3.3-70b-instruct:free"),
            Some(70.0)
        );
        assert_eq!(params_billions("openai/gpt-oss-120b:free"), Some(120.0));
        assert_eq!(
            params_billions("nvidia/nemotron-3-nano-30b-a3b:free"),
            Some(30.0)
        );
        assert_eq!(params_billions("qwen/qwen2.5-1.5b"), Some(1.5));
        assert_eq!(params_billions("mistral/mistral-small"), None);
        assert_eq!(params_billions("x/model-8bit"), None);
    }

    #[test]
    fn bigger_models_rank_higher_by_prior() {
        let big = model("or", "meta-llama/llama-3.3-70b-instruct:free");
        let small = model("or", "meta-llama/llama-3.2-3b-instruct:free");
        assert!(quality_prior(&big, 0) > quality_prior(&small, 0));
    }

    #[test]
    fn prefer_beats_everything_and_failures_sink() {
        let mut rng = fastrand::Rng::with_seed(7);
        let route = Route {
            prefer: vec!["*small*".into()],
            ..Default::default()
        };
        let s = Health::default();
        let big = score(
            &model("or", "big-405b"),
            &route,
            &s,
            0,
            &LatencyRef::default(),
            &mut rng,
        );
        let small = score(
            &model("or", "small-1b"),
            &route,
            &s,
            0,
            &LatencyRef::default(),
            &mut rng,
        );
        assert!(small.total > big.total);

        let mut st = Health::default();
        st.models.insert(
            key("or", "big-405b"),
            ModelStats {
                fail: 5.0,
                ..Default::default()
            },
        );
        let failing = score(
            &model("or", "big-405b"),
            &Route::default(),
            &st,
            0,
            &LatencyRef::default(),
            &mut rng,
        );
        let fresh = score(
            &model("or", "mid-70b"),
            &Route::default(),
            &st,
            0,
            &LatencyRef::default(),
            &mut rng,
        );
        assert!(fresh.total > failing.total, "{fresh:?} vs {failing:?}");
    }

    fn timed(ttft_ms: f64, gen_ms: f64) -> ModelStats {
        ModelStats {
            ok: 3.0,
            ttft_ms: Some(ttft_ms),
            ttft_dev_ms: Some(0.0),
            gen_ms: Some(gen_ms),
            ..Default::default()
        }
    }

    /// Latency parts of `ids` in a state with these (ttft, gen) times; None: unmeasured.
    fn latencies(times: &[(&str, Option<(f64, f64)>)]) -> Vec<f64> {
        let mut st = Health::default();
        for (id, t) in times {
            if let Some((ttft, gen_ms)) = t {
                st.models.insert(key("or", id), timed(*ttft, *gen_ms));
            }
        }
        let models: Vec<Model> = times.iter().map(|(id, _)| model("or", id)).collect();
        let r = LatencyRef::of(models.iter().map(|m| latency_inputs(&st, m)));
        let mut rng = fastrand::Rng::with_seed(1);
        models
            .iter()
            .map(|m| score(m, &Route::default(), &st, 0, &r, &mut rng).latency)
            .collect()
    }

    #[test]
    fn faster_measured_model_rises() {
        let l = latencies(&[
            ("a-70b", Some((300.0, 200.0))),
            ("b-70b", Some((6000.0, 200.0))),
        ]);
        assert_eq!(l[0], 0.0, "the fastest loses nothing");
        assert!(l[0] - l[1] > JITTER, "{l:?}");
    }

    #[test]
    fn latency_is_relative_and_counts_the_whole_answer() {
        // The same fleet ten times slower is ordered the same way.
        let fast = latencies(&[("a", Some((50.0, 50.0))), ("b", Some((200.0, 200.0)))]);
        let slow = latencies(&[("a", Some((500.0, 500.0))), ("b", Some((2000.0, 2000.0)))]);
        assert!((fast[1] - slow[1]).abs() < 1e-9, "{fast:?} vs {slow:?}");
        // Four times slower: two doublings.
        assert!(
            (fast[1] + 2.0 * LATENCY_PER_DOUBLING).abs() < 1e-9,
            "{fast:?}"
        );
        // A quick first token followed by a slow answer is slow.
        let l = latencies(&[
            ("quick-start", Some((50.0, 2000.0))),
            ("steady", Some((300.0, 300.0))),
        ]);
        assert!(l[0] < l[1], "{l:?}");
        // Unmeasured models are taken to be as fast as the fastest, so they get tried.
        let l = latencies(&[
            ("a", Some((100.0, 0.0))),
            ("b", Some((400.0, 0.0))),
            ("new", None),
        ]);
        assert_eq!(l[2], 0.0, "{l:?}");
        assert!(l[1] < 0.0, "{l:?}");
        // Nothing measured: latency tells nothing.
        assert_eq!(latencies(&[("a", None), ("b", None)]), vec![0.0, 0.0]);
        // Bounded: a hung model cannot sink below every failure.
        let l = latencies(&[("a", Some((10.0, 0.0))), ("b", Some((1e7, 0.0)))]);
        assert_eq!(l[1], -LATENCY_MAX);
    }

    #[test]
    fn until_measured_bigger_models_are_assumed_slower() {
        let expect = -LATENCY_PER_DOUBLING * 405f64.powf(SIZE_EXPONENT).log2();
        // Nothing measured: sizes alone.
        let l = latencies(&[("x-1b", None), ("y-405b", None), ("z", None)]);
        assert_eq!(l[0], 0.0);
        assert!((l[1] - expect).abs() < 1e-9, "{l:?}");
        assert_eq!(l[2], 0.0, "no size, nothing known: optimism");
        // Calibrated on what is measured: a 405B at 600 ms makes an unmeasured 1B the
        // fastest, and an unmeasured 405B as slow as the measured one.
        let l = latencies(&[
            ("big-405b", Some((600.0, 0.0))),
            ("small-1b", None),
            ("other-405b", None),
        ]);
        assert_eq!(l[1], 0.0, "{l:?}");
        assert!(
            (l[0] - expect).abs() < 1e-6 && (l[2] - l[0]).abs() < 1e-9,
            "{l:?}"
        );
        // A measurement beats the assumption.
        let l = latencies(&[
            ("big-405b", Some((50.0, 0.0))),
            ("small-1b", Some((100.0, 0.0))),
        ]);
        assert!(l[0] > l[1], "{l:?}");
    }

    #[test]
    fn unmeasured_models_are_explored_now_and_then() {
        let mut st = Health::default();
        st.models.insert(
            key("or", "known-70b"),
            ModelStats {
                ok: 50.0,
                ..Default::default()
            },
        );
        let mut rng = fastrand::Rng::with_seed(3);
        let runs = 1000;
        let explored = (0..runs)
            .filter(|_| {
                score(
                    &model("or", "new-70b"),
                    &Route::default(),
                    &st,
                    0,
                    &LatencyRef::default(),
                    &mut rng,
                )
                .explore
                    > 0.0
            })
            .count();
        assert!((50..200).contains(&explored), "{explored} of {runs}");
        // The most each is lifted over many runs: fully when never seen, a third after one
        // outcome, not at all once known.
        st.models.insert(
            key("or", "once-70b"),
            ModelStats {
                ok: 1.0,
                ..Default::default()
            },
        );
        let most = |id: &str, rng: &mut fastrand::Rng| {
            (0..runs)
                .map(|_| {
                    score(
                        &model("or", id),
                        &Route::default(),
                        &st,
                        0,
                        &LatencyRef::default(),
                        rng,
                    )
                    .explore
                })
                .fold(0.0, f64::max)
        };
        assert!((most("new-70b", &mut rng) - EXPLORE).abs() < 1e-9);
        assert!((most("once-70b", &mut rng) - EXPLORE / 3.0).abs() < 1e-9);
        assert_eq!(most("known-70b", &mut rng), 0.0);
    }

    #[test]
    fn a_model_another_run_just_asked_is_not_explored_again() {
        // Reserved by a run in flight (load 1 at t = 0), no outcome yet.
        let mut st = Health::default();
        st.models.insert(
            key("or", "new-70b"),
            ModelStats {
                load: 1.0,
                load_ms: 0,
                ..Default::default()
            },
        );
        let mut rng = fastrand::Rng::with_seed(5);
        let explored_at = |now_ms: u64, rng: &mut fastrand::Rng| {
            (0..1000)
                .filter(|_| {
                    score(
                        &model("or", "new-70b"),
                        &Route::default(),
                        &st,
                        now_ms,
                        &LatencyRef::default(),
                        rng,
                    )
                    .explore
                        > 0.0
                })
                .count()
        };
        assert_eq!(explored_at(1_000, &mut rng), 0, "asked a second ago");
        // The load fades below half a request after about 42 s (60 s time constant).
        let n = explored_at(60_000, &mut rng);
        assert!((50..200).contains(&n), "a minute later: {n} of 1000");
    }

    #[test]
    fn pinned_order_wins_and_free_router_is_last() {
        let mk = |id: &str, total: f64| Candidate {
            model: model("or", id),
            score: Score {
                total,
                ..Default::default()
            },
            ttft_tail_ms: None,
            patience: crate::plan::PATIENCE_UNKNOWN,
            explored: false,
            cooling_until_ms: None,
        };
        let mut free = mk("openrouter/free", 9.0);
        let mut keyless = mk("k", 99.0);
        keyless.model.tier = crate::providers::Tier::Keyless;
        free.model.router = true;
        let mut cs = vec![keyless, free, mk("a", 1.0), mk("b", 2.0), mk("c", 3.0)];
        order(&mut cs, &["a".into(), "b".into()]);
        let ids: Vec<_> = cs.iter().map(|c| c.model.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b", "c", "openrouter/free", "k"]);
    }
}
