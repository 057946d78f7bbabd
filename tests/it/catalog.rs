//! Model catalogs: cached with a TTL, stale copy on a failed refresh, `--offline`,
//! `--refresh`, and the `models` subcommand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ask::{BIG, catalog};
use crate::fake::{self, FakeServer};
use crate::harness::Env;

/// A server whose `/models` can be switched to fail.
fn switchable() -> (FakeServer, Arc<AtomicBool>) {
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let s = FakeServer::start(move |r| {
        if r.path.ends_with("/models") {
            if b.load(Ordering::SeqCst) {
                fake::error_json(500, "catalog down")
            } else {
                catalog()
            }
        } else {
            fake::answer(&r.model(), &["ok"])
        }
    });
    (s, broken)
}

#[test]
fn catalog_is_cached_within_its_ttl() {
    let (s, _) = switchable();
    let s = s.expect_chats(3);
    let env = Env::new(&s);
    assert_eq!(env.run(&["-m", BIG, "q"]).code, 0);
    assert_eq!(env.run(&["-m", BIG, "q"]).code, 0);
    assert_eq!(s.count("/models"), 1, "the second run used the cache");
    assert_eq!(env.run(&["--refresh", "-m", BIG, "q"]).code, 0);
    assert_eq!(s.count("/models"), 2, "--refresh fetched again");
}

#[test]
fn a_failed_refresh_uses_the_stale_copy_with_a_note() {
    let (s, broken) = switchable();
    let s = s.expect_chats(2);
    let env = Env::new(&s);
    assert_eq!(env.run(&["-m", BIG, "q"]).code, 0);
    broken.store(true, Ordering::SeqCst);
    let later = (now_ms() + 2 * 3_600_000).to_string();
    let out = env.run_with_env(&["-m", BIG, "q"], &[("FREEROUTE_NOW_MS", &later)]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "ok\n");
    assert!(out.stderr.contains("using the cached copy"), "{out}");
    assert_eq!(s.count("/models"), 2);
}

#[test]
fn offline_never_fetches() {
    let (s, _) = switchable();
    let s = s.expect_chats(2);
    let env = Env::new(&s);
    let out = env.run(&["--offline", "-m", BIG, "q"]);
    assert_eq!(out.code, 4, "no cache yet: {out}");
    assert!(out.stderr.contains("--offline"), "{out}");
    assert_eq!(s.count("/models"), 0);
    assert_eq!(env.run(&["-m", BIG, "q"]).code, 0);
    let later = (now_ms() + 48 * 3_600_000).to_string();
    let out = env.run_with_env(
        &["--offline", "-m", BIG, "q"],
        &[("FREEROUTE_NOW_MS", &later)],
    );
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(s.count("/models"), 1);
}

#[test]
fn catalog_failure_without_cache_is_reported() {
    let (s, broken) = switchable();
    broken.store(true, Ordering::SeqCst);
    let out = Env::new(&s).run(&["q"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stderr.contains("model list"), "{out}");
    assert!(s.chats().is_empty());
}

#[test]
fn models_lists_eligible_models_in_order() {
    let (s, _) = switchable();
    let env = Env::new(&s);
    let out = env.run(&["models", "--json", "--prefer", "qwen/*"]);
    assert_eq!(out.code, 0, "{out}");
    let rows = out.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["model"], "qwen/qwen3-32b:free");
    assert_eq!(rows[0]["provider"], "openrouter");
    assert_eq!(rows[0]["context"], 40960);
    assert_eq!(
        rows[0]["capabilities"],
        serde_json::json!({"vision": false, "tools": false, "schema": false})
    );
    assert!(rows[0]["score"].is_number());
    assert_eq!(rows[3]["model"], "openrouter/free");
    let out = env.run(&["models"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(BIG) && !out.stdout.contains("gpt-4o"),
        "{out}"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
