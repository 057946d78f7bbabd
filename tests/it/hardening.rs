//! Hardening (issue 14): hostile servers, damaged files and the edges of the machine.
//! Nothing a server or a file says may make a run panic, hang, lose words or leak a key.

use crate::ask::{BIG, MID, server};
use crate::fake::{self, FakeServer};
use crate::harness::Env;

/// A moment on the memory's clock, 10:00 UTC: far from a day's end.
const NOW: u64 = 1_900_000_000_000 - 1_900_000_000_000 % 86_400_000 + 10 * 3_600_000;
const HOUR: u64 = 3_600_000;

fn at(now: u64) -> [(&'static str, String); 1] {
    [("FREEROUTE_NOW_MS", now.to_string())]
}

fn run_at(env: &Env, now: u64, args: &[&str]) -> crate::harness::Out {
    let [(k, v)] = at(now);
    env.run_with_env(args, &[(k, &v)])
}

fn stats_at(env: &Env, now: u64) -> serde_json::Value {
    let out = run_at(env, now, &["stats", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    out.json()
}

#[test]
fn absurd_numbers_in_a_state_file_that_parses_never_panic() {
    let s = FakeServer::start(|r| fake::answer(&r.model(), &["ok"])).expect_chats(1);
    let env = Env::bare().config(&format!(
        "[providers.local]\nbase_url = \"{}\"\nmodels = [{{ id = \"fast-7b\", context = 8192 }}, {{ id = \"slow-7b\", context = 8192 }}]\n",
        s.url("/v1")
    ));
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let damaged = serde_json::json!({
        "version": 1,
        "models": {
            "local/fast-7b": {"ok": 1e308, "fail": -3.0, "ttft_ms": -5000.0, "ttft_dev_ms": 1e308,
                              "gen_ms": 1e308, "tps": -1.0, "load": 1e308, "busy_at": -2.0,
                              "updated_ms": u64::MAX, "load_ms": u64::MAX, "busy_ms": u64::MAX,
                              "cooldown_until_ms": 0, "consecutive_failures": u32::MAX},
            "local/slow-7b": {"ttft_ms": 1e308, "ttft_dev_ms": -1e308, "gen_ms": -5000.0}
        },
        "providers": {
            "other": {"blocked_until_ms": 99_999_999_999_999u64, "day_offset_ms": i64::MIN,
                      "minute_start_ms": u64::MAX, "minute_count": u32::MAX,
                      "day": u64::MAX, "day_count": u32::MAX}
        }
    });
    std::fs::write(env.state_dir().join("state.json"), damaged.to_string()).unwrap();
    for args in [
        &["--dry-run", "q"][..],
        &["models"][..],
        &["stats"][..],
        &["stats", "--json"][..],
    ] {
        let out = run_at(&env, NOW, args);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out}");
    }
    let out = run_at(&env, NOW, &["q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "ok\n");
    // What was written back is bounded: finite, non-negative, nothing in the future.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state_dir().join("state.json")).unwrap())
            .unwrap();
    for m in state["models"].as_object().unwrap().values() {
        for k in [
            "ok",
            "fail",
            "ttft_ms",
            "ttft_dev_ms",
            "gen_ms",
            "tps",
            "load",
        ] {
            if let Some(x) = m[k].as_f64() {
                assert!((0.0..1e10).contains(&x), "{k} = {x} in {m}");
            }
        }
        for k in ["updated_ms", "load_ms", "busy_ms"] {
            assert!(m[k].as_u64().unwrap() <= NOW + HOUR, "{k} in {m}");
        }
    }
    let other = &state["providers"]["other"];
    assert!(
        other["blocked_until_ms"].as_u64().unwrap() <= NOW + 25 * HOUR,
        "{other}"
    );
}

#[test]
fn a_server_cannot_block_a_provider_for_centuries() {
    // A quota 429 whose reset is 3,112 years away: the block lasts until the provider's
    // next daily reset at most.
    let s = server(|r| {
        if r.model() == BIG {
            fake::daily_quota_429(99_999_999_999_999)
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let out = run_at(&env, NOW, &["-m", BIG, "q"]);
    assert_eq!(out.code, 4, "{out}");
    let v = stats_at(&env, NOW);
    let until = v["providers"][0]["skipped_until_ms"].as_u64().unwrap();
    let next_midnight = NOW - NOW % 86_400_000 + 86_400_000;
    assert_eq!(until, next_midnight, "{v}");
    // After that reset the provider is asked again.
    let out = run_at(&env, next_midnight + 1_000, &["-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn a_retry_after_of_decades_cools_a_model_for_hours_at_most() {
    let s = server(|r| {
        if r.model() == BIG {
            fake::rate_limit_429(BIG, 999_999_999)
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    let env = Env::new(&s);
    let out = run_at(&env, NOW, &["-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let v = stats_at(&env, NOW);
    let row = crate::harness::stats_row(&v, "models", "model", BIG);
    let until = row["cooldown_until_ms"].as_u64().unwrap();
    assert!(until > NOW && until <= NOW + 3 * HOUR, "{row}");
    // Once it has passed, the model is tried again.
    let out = run_at(&env, NOW + 3 * HOUR + 1_000, &["--dry-run", "-m", BIG, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stdout.contains("cooling"), "{out}");
}
