//! Latency (DESIGN §1 `--race`, `--hedge-after`, §3 deadline planning): the first candidate
//! to produce a token wins, the others are dropped and recorded as `cancelled`, no loser's
//! text reaches stdout, every request sent is counted against the quota.

use std::time::Duration;

use crate::ask::{BIG, JsonAnswer, MID, SMALL, server};
use crate::fake::{self, Reply, Step};
use crate::harness::{Env, RUN_LIMIT, wait_within};

/// BIG starts its answer only after `delay`; MID answers at once.
fn slow_and_fast(delay: Duration) -> crate::fake::FakeServer {
    server(move |r| {
        if r.model() == BIG {
            let mut steps = vec![Step::Sleep(delay)];
            steps.extend(fake::answer_steps(BIG, &["slow ", "loser"]));
            Reply::stream(steps)
        } else {
            fake::answer(&r.model(), &["fast ", "winner"])
        }
    })
}

#[test]
fn race_keeps_the_first_token_and_cancels_the_rest() {
    let s = slow_and_fast(Duration::from_secs(5));
    let env = Env::new(&s);
    let out = env.run(&["--json", "-v", "--race", "2", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    // The trace numbers the racers in launch order (both once said "attempt 2").
    let started: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("] attempt "))
        .collect();
    assert!(
        started.len() == 2
            && started[0].contains("attempt 1: openrouter/")
            && started[1].contains("attempt 2: openrouter/"),
        "{started:?}"
    );
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.content, "fast winner");
    assert_eq!(a.model, MID);
    let outcomes: Vec<(&str, &str)> = a
        .attempts
        .iter()
        .map(|x| (x.model.as_str(), x.outcome.as_str()))
        .collect();
    assert!(
        outcomes.contains(&(BIG, "cancelled")) && outcomes.contains(&(MID, "ok")),
        "{outcomes:?}"
    );
    assert_eq!(s.chat_models().len(), 2, "both were asked at once");
    // The loser's connection was dropped, not left to run.
    let waited = std::time::Instant::now();
    while !s.aborted().contains(&BIG.to_string()) {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the loser's connection stayed open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every request sent counts against the quota, cancelled or not.
    let stats = env.run(&["stats", "--json"]).json();
    assert_eq!(stats["providers"][0]["requests_today"], 2);
}

#[test]
fn no_loser_text_reaches_stdout_even_when_streaming() {
    let s = slow_and_fast(Duration::from_millis(1500)).expect_chats(2);
    for mode in ["--stream", "--no-stream"] {
        let out = Env::new(&s).run(&[mode, "--race", "2", "-m", BIG, "-m", MID, "q"]);
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(out.stdout, "fast winner\n", "{mode}");
    }
}

#[test]
fn hedge_starts_the_next_candidate_beside_a_slow_one() {
    let s = server(|r| {
        if r.model() == BIG {
            Reply::stream(vec![
                Step::Send(": OPENROUTER PROCESSING\n\n".into()),
                Step::Hang,
            ])
        } else {
            fake::answer(&r.model(), &["hedged"])
        }
    })
    .expect_chats(2);
    let out = Env::new(&s).run(&[
        "--json",
        "--hedge-after",
        "300",
        "--timeout",
        "60",
        "-m",
        BIG,
        "-m",
        MID,
        "q",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.content, "hedged");
    let big = a.attempts.iter().find(|x| x.model == BIG).unwrap();
    assert_eq!(
        big.outcome, "cancelled",
        "the hung one lost to the hedge, not to a timeout"
    );
    // Without the hedge the hung model would hold the run for half the deadline (30 s);
    // with it the answer comes soon after the hedge delay (generous margin).
    assert!(a.timing.total_ms < 15_000, "{:?}", a.timing);
}

#[test]
fn without_a_hedge_a_fast_answer_is_not_raced() {
    let s = server(|r| fake::answer(&r.model(), &["only one"]));
    let out = Env::new(&s).run(&["--json", "--hedge-after", "5000", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        s.chat_models(),
        vec![BIG],
        "a hedge starts only when the first is slow"
    );
}

#[test]
fn failed_racers_are_replaced_by_the_next_candidates() {
    let s = server(|r| {
        if r.model() == SMALL {
            fake::answer(SMALL, &["third"])
        } else {
            fake::upstream_429(&r.model())
        }
    })
    .expect_chats(3);
    let out = Env::new(&s).run(&[
        "--json", "--race", "2", "-m", BIG, "-m", MID, "-m", SMALL, "q",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.model, SMALL);
    assert_eq!(
        a.attempts
            .iter()
            .filter(|x| x.outcome == "rate_limited")
            .count(),
        2
    );
}

#[test]
fn races_never_push_a_provider_over_its_minute_limit() {
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let env = Env::new(&s);
    let now: u64 = 1_900_000_000_000;
    for i in 0..19 {
        let t = (now + i * 100).to_string();
        let out = env.run_with_env(&["-q", "-m", MID, "q"], &[("FREEROUTE_NOW_MS", &t)]);
        assert_eq!(out.code, 0, "{out}");
    }
    let t = (now + 5_000).to_string();
    let out = env.run_with_env(&["--json", "--race", "3", "q"], &[("FREEROUTE_NOW_MS", &t)]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        s.chats().len(),
        20,
        "one request left in the minute: the race sent one"
    );
}

#[test]
fn dry_run_shows_the_deadline_plan() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    let out = Env::new(&s).run(&[
        "--dry-run",
        "--json",
        "--timeout",
        "40",
        "-m",
        BIG,
        "-m",
        MID,
        "-m",
        SMALL,
        "q",
    ]);
    let v = out.json();
    let t: Vec<u64> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["first_token_timeout_ms"].as_u64().unwrap())
        .collect();
    // Unmeasured: half of what is left, then half again, then all the rest.
    assert!(
        (19_000..=20_000).contains(&t[0])
            && (9_500..=10_000).contains(&t[1])
            && (9_500..=10_000).contains(&t[2]),
        "{t:?}"
    );
    let out = Env::new(&s).run(&["--dry-run", "--timeout", "40", "--hedge-after", "800", "q"]);
    assert!(
        out.stdout.contains("first token within") && out.stdout.contains("hedge after 800 ms"),
        "{out}"
    );
}

#[test]
fn a_model_measured_fast_is_given_up_on_early_when_it_hangs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let hang = Arc::new(AtomicBool::new(false));
    let h = hang.clone();
    // Once `hang` is set, every model hangs: MID, started beside BIG when BIG's patience ran
    // out, does not answer either, so BIG meets its own first-token limit.
    let s = server(move |r| {
        if h.load(Ordering::SeqCst) {
            Reply::stream(vec![
                Step::Send(": OPENROUTER PROCESSING\n\n".into()),
                Step::Hang,
            ])
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    })
    .expect_chats(3);
    let env = Env::new(&s);
    assert_eq!(env.run(&["-m", BIG, "q"]).code, 0, "BIG is measured fast");
    hang.store(true, Ordering::SeqCst);
    let out = env.run(&["--json", "--timeout", "8", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 5, "{out}");
    let v = out.json();
    let big = &v["attempts"][0];
    assert_eq!(
        (big["model"].as_str(), big["outcome"].as_str()),
        (Some(BIG), Some("timeout"))
    );
    // Half the deadline would be 4 s, the old floor 5 s; a model known to answer in
    // milliseconds gets the 2 s floor (margin for slow machines).
    let ms = big["elapsed_ms"].as_u64().unwrap();
    assert!((1_900..3_900).contains(&ms), "{v}");
}

#[test]
fn racers_side_by_side_do_not_halve_each_others_share() {
    // The only two candidates both need 2.5 s; with --timeout 4 a racer must get it all.
    let s = server(|r| {
        let mut steps = vec![Step::Sleep(Duration::from_millis(2500))];
        steps.extend(fake::answer_steps(&r.model(), &["late but fine"]));
        Reply::stream(steps)
    })
    .expect_chats(2);
    let out = Env::new(&s).run(&[
        "--json",
        "--race",
        "2",
        "--timeout",
        "4",
        "-m",
        BIG,
        "-m",
        MID,
        "q",
    ]);
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn the_hedge_fires_once_not_in_a_loop() {
    let s = server(|_| {
        Reply::stream(vec![
            Step::Send(": OPENROUTER PROCESSING\n\n".into()),
            Step::Hang,
        ])
    });
    let out = Env::new(&s).run(&["-v", "--hedge-after", "100", "--timeout", "1.5", "q"]);
    assert_eq!(out.code, 5, "{out}");
    let hedges = out.stderr.matches("hedge: no first token").count();
    assert!((1..=3).contains(&hedges), "{hedges} hedges: {}", out.stderr);
}

#[test]
fn ctrl_c_during_a_race_records_the_requests_in_flight() {
    let s = server(|_| {
        Reply::stream(vec![
            Step::Send(": OPENROUTER PROCESSING\n\n".into()),
            Step::Hang,
        ])
    });
    let env = Env::new(&s);
    let child = env.spawn(&[
        "--json",
        "--race",
        "2",
        "--timeout",
        "50",
        "-m",
        BIG,
        "-m",
        MID,
        "q",
    ]);
    s.wait_for_chats(2);
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = wait_within(child, Duration::from_secs(20), "the race after Ctrl-C");
    assert_eq!(out.status.code(), Some(130));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<&str> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["cancelled", "cancelled"]);
    let stats = env.run(&["stats", "--json"]).json();
    assert_eq!(
        stats["providers"][0]["requests_today"], 2,
        "both requests count against the quota"
    );
}

/// BIG answers at once until `slow` is set, then only after `delay`; MID answers at once
/// until `hang` is set, then never.
fn measured_then_slow(
    delay: Duration,
) -> (
    crate::fake::FakeServer,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let slow = Arc::new(AtomicBool::new(false));
    let flag = slow.clone();
    let s = server(move |r| {
        let late = flag.load(Ordering::SeqCst);
        match (r.model() == BIG, late) {
            (true, true) => fake::late_answer(BIG, delay, &["late ", "but ", "first"]),
            (false, true) => Reply::stream(vec![
                Step::Send(": OPENROUTER PROCESSING\n\n".into()),
                Step::Hang,
            ]),
            _ => fake::answer(&r.model(), &["ok"]),
        }
    });
    (s, slow)
}

/// Four answers from `model`: a first-token distribution of its own.
fn measure(env: &Env, model: &str) {
    for _ in 0..4 {
        assert_eq!(env.run(&["-m", model, "q"]).code, 0);
    }
}

/// The first-token samples the state holds for `model`.
fn samples(env: &Env, model: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(env.state_dir().join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["models"][format!("openrouter/{model}")]["ttft_recent"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default()
}

#[test]
fn a_model_known_fast_is_overtaken_within_its_patience_and_not_cut_off() {
    use std::sync::atomic::Ordering;
    // BIG is measured fast (four answers: a distribution of its own), then takes 1.2 s.
    let (s, slow) = measured_then_slow(Duration::from_millis(1200));
    let env = Env::new(&s);
    measure(&env, BIG);
    assert_eq!(
        samples(&env, BIG).len(),
        4,
        "one first-token sample per answer"
    );
    let plan = env.run(&["--dry-run", "--json", "-m", BIG, "-m", MID, "q"]);
    let patience = plan.json()["candidates"][0]["patience_ms"]
        .as_u64()
        .unwrap();
    assert!(
        (60..1000).contains(&patience),
        "a model answering in milliseconds gets the floor: {patience} ms"
    );
    slow.store(true, Ordering::SeqCst);
    // Its patience runs out: MID is started beside it and hangs; BIG was not cut off, and
    // its late first token wins (the old rule, a timeout at its own limit, would have given
    // up on it and waited for MID until the deadline's share).
    let out = env.run(&["--json", "-v", "--timeout", "60", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (a.model.as_str(), a.content.as_str()),
        (BIG, "late but first")
    );
    let outcomes: Vec<(&str, &str)> = a
        .attempts
        .iter()
        .map(|x| (x.model.as_str(), x.outcome.as_str()))
        .collect();
    assert!(
        outcomes.contains(&(MID, "cancelled")) && outcomes.contains(&(BIG, "ok")),
        "{outcomes:?}"
    );
    assert!(
        out.stderr.contains("within its patience"),
        "the trace says why MID was started: {}",
        out.stderr
    );
    assert_eq!(s.chats().len(), 6);
}

#[test]
fn a_hung_model_costs_its_patience_and_teaches_a_longer_one() {
    use std::sync::atomic::Ordering;
    // MID is measured fast, then hangs; BIG answers after a little while, always.
    let (s, hang) = measured_then_slow(Duration::from_millis(50));
    let env = Env::new(&s);
    measure(&env, MID);
    hang.store(true, Ordering::SeqCst);
    let out = env.run(&["--json", "--timeout", "60", "-m", MID, "-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.model, BIG);
    let mid = a.attempts.iter().find(|x| x.model == MID).unwrap();
    assert_eq!(mid.outcome, "cancelled", "{:?}", a.attempts);
    // Cancelled once BIG answered: about its patience (60 ms) plus BIG's 50 ms, far from
    // the 2 s its first-token limit allows (generous margins for a slow machine).
    assert!(mid.elapsed_ms < 1_500, "{:?}", a.attempts);
    // What it waited is remembered as a sample: at least its patience.
    let learned = samples(&env, MID);
    assert_eq!(learned.len(), 5, "{learned:?}");
    assert!(*learned.last().unwrap() >= 60, "{learned:?}");
}

#[test]
fn an_explored_model_is_tried_beside_the_next_so_exploring_costs_no_wait() {
    use std::sync::{Arc, Mutex};
    // Whichever model the ranking explores first is slow; every other answers at once.
    let explored: Arc<Mutex<String>> = Arc::default();
    let slow = explored.clone();
    let s = server(move |r| {
        if r.model() == *slow.lock().unwrap() {
            fake::late_answer(&r.model(), Duration::from_secs(3), &["slow ", "explorer"])
        } else {
            fake::answer(&r.model(), &["known"])
        }
    });
    let env = Env::new(&s);
    // A seed whose plan, with nothing measured, puts an explored model first.
    let (seed, model) = (1..200)
        .map(|seed| seed.to_string())
        .find_map(|seed| {
            let v = env
                .run_with_env(&["--dry-run", "--json", "q"], &[("FREEROUTE_SEED", &seed)])
                .json();
            let first = &v["candidates"][0];
            (first["parts"]["explore"].as_f64()? > 0.0)
                .then(|| (seed, first["model"].as_str().unwrap().to_string()))
        })
        .expect("some seed explores first");
    *explored.lock().unwrap() = model.clone();
    let out = env.run_with_env(
        &["--json", "-v", "--timeout", "60", "q"],
        &[("FREEROUTE_SEED", &seed)],
    );
    assert_eq!(out.code, 0, "{out}");
    let a: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(a.content, "known", "{out}");
    assert!(
        out.stderr.contains("explored: the next beside it at once"),
        "{}",
        out.stderr
    );
    let first = &a.attempts[0];
    assert_eq!(
        (first.model.as_str(), first.outcome.as_str()),
        (model.as_str(), "cancelled")
    );
    // Not waited for: cancelled as soon as the other answered, long before its 3 s, and
    // before the 3 s patience a model gets when nothing is measured (margins for a slow
    // machine).
    assert!(first.elapsed_ms < 2_500, "{:?}", a.attempts);
    assert_eq!(
        s.chats().len(),
        2,
        "one request more than the answer needed"
    );
}

#[test]
fn a_model_another_run_is_asking_is_not_explored_again() {
    // The answer to the run in flight is held 5 s behind OpenRouter's keep-alive comment.
    let s = server(|r| fake::late_answer(&r.model(), Duration::from_secs(5), &["late"]));
    let env = Env::new(&s);
    let explore = |seed: &str, model: &str| {
        let v = env
            .run_with_env(&["--dry-run", "--json", "q"], &[("FREEROUTE_SEED", seed)])
            .json();
        v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["model"] == model)
            .map_or(0.0, |c| c["parts"]["explore"].as_f64().unwrap())
    };
    // Seeds whose plan, with nothing measured, explores MID.
    let seeds: Vec<String> = (1..300)
        .map(|seed| seed.to_string())
        .filter(|seed| explore(seed, MID) > 0.0)
        .take(3)
        .collect();
    assert_eq!(seeds.len(), 3, "some seeds explore {MID}");
    let child = env.spawn(&["-q", "--timeout", "60", "-m", MID, "q"]);
    s.wait_for_chats(1);
    for seed in &seeds {
        assert_eq!(
            explore(seed, MID),
            0.0,
            "seed {seed}: asked by the run in flight"
        );
    }
    let out = wait_within(child, RUN_LIMIT, "the run in flight");
    assert!(out.status.success());
}
