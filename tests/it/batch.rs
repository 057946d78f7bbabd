//! `freeroute batch` (DESIGN §6): JSONL and plain input, ordering, resume, malformed lines,
//! per-provider limits never exceeded (the fake server checks), waiting for a reset, the
//! batch deadline.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake::{self, FakeServer, Reply, Step};
use crate::harness::{Env, RUN_LIMIT, wait_within};

/// A custom provider (no built-in limits unless given) answering with the prompt echoed.
fn local(s: &FakeServer, extra: &str) -> Env {
    Env::bare().config(&format!(
        "[providers.local]\nbase_url = \"{}\"\nmodels = [{{ id = \"echo-8b\", context = 8192 }}]\n{extra}",
        s.url("/v1")
    ))
}

fn prompt_of(r: &fake::Request) -> String {
    let v = r.json();
    v["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn echo() -> FakeServer {
    FakeServer::start(|r| {
        let p = prompt_of(r);
        // "slow N": answer after N×100 ms (to shuffle completion order).
        let delay = p
            .strip_prefix("slow ")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let mut steps = vec![Step::Sleep(Duration::from_millis(delay * 100))];
        steps.extend(fake::answer_steps(&r.model(), &[&format!("re: {p}")]));
        Reply::stream(steps)
    })
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn jsonl_and_plain_lines_in_results_out() {
    let s = echo().expect_chats(3);
    let env = local(&s, "");
    let input = "{\"id\": \"a\", \"prompt\": \"first\", \"system\": \"be brief\"}\nsecond as plain text\n\n{\"prompt\": \"third\", \"max_tokens\": 5}\n";
    let out = env.run_with_stdin(&["batch", "-"], Some(input));
    assert_eq!(out.code, 0, "{out}");
    let results = lines(&out.stdout);
    assert_eq!(results.len(), 3);
    let by_id: Vec<(String, String)> = results
        .iter()
        .map(|v| {
            (
                v["id"].to_string(),
                v["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(by_id.contains(&("\"a\"".into(), "re: first".into())));
    assert!(
        by_id.contains(&("2".into(), "re: second as plain text".into())),
        "a plain line's id is its line number: {by_id:?}"
    );
    assert!(by_id.contains(&("4".into(), "re: third".into())));
    for v in &results {
        assert_eq!(v["ok"], true);
        assert!(v["attempts"].is_array() && v["model"] == "echo-8b");
    }
    let chats = s.chats();
    let first = chats
        .iter()
        .find(|c| prompt_of(c) == "first")
        .unwrap()
        .json();
    assert_eq!(first["messages"][0]["content"], "be brief");
    let third = chats
        .iter()
        .find(|c| prompt_of(c) == "third")
        .unwrap()
        .json();
    assert_eq!(third["max_tokens"], 5);
    assert!(
        out.stderr
            .contains("batch: 3 answered, 0 failed, 0 skipped, 0 unreadable"),
        "{out}"
    );
    assert!(
        out.stderr.contains("answers per provider: local 3"),
        "{out}"
    );
}

#[test]
fn ordered_output_follows_the_input() {
    let s = echo().expect_chats(8);
    let env = local(&s, "");
    let input = "slow 6\nslow 1\nslow 3\nslow 0\n";
    let out = env.run_with_stdin(&["batch", "--concurrency", "4"], Some(input));
    assert_eq!(out.code, 0, "{out}");
    let ids: Vec<u64> = lines(&out.stdout)
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_ne!(ids, vec![1, 2, 3, 4], "as they finish, the fastest first");
    let out = env.run_with_stdin(&["batch", "--concurrency", "4", "--ordered"], Some(input));
    let ids: Vec<u64> = lines(&out.stdout)
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

#[test]
fn resume_skips_answered_ids_and_retries_failed_ones() {
    let fail_once = Arc::new(Mutex::new(true));
    let f = fail_once.clone();
    let s = FakeServer::start(move |r| {
        let p = prompt_of(r);
        if p == "flaky" && std::mem::replace(&mut *f.lock().unwrap(), false) {
            return fake::error_json(500, "down");
        }
        fake::answer(&r.model(), &[&format!("re: {p}")])
    });
    let env = local(&s, "");
    let input_path = env.path("in.jsonl");
    let out_path = env.path("out.jsonl");
    std::fs::write(&input_path, "one\ntwo\nflaky\nfour\nfive\n").unwrap();
    let args = [
        "batch",
        input_path.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
        "--attempts",
        "1",
    ];
    let out = env.run(&args);
    assert_eq!(out.code, 4, "one item failed: {out}");
    assert!(out.stdout.is_empty(), "results go to the file: {out}");
    assert_eq!(lines(&std::fs::read_to_string(&out_path).unwrap()).len(), 5);
    // Lose two answered lines, as if the machine had crashed.
    let kept: Vec<String> = std::fs::read_to_string(&out_path)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("re: two") && !l.contains("re: five"))
        .map(String::from)
        .collect();
    std::fs::write(&out_path, kept.join("\n") + "\n").unwrap();
    let before = s.chats().len();
    let out = env.run(&args);
    assert_eq!(out.code, 0, "{out}");
    let asked: HashSet<String> = s.chats()[before..].iter().map(prompt_of).collect();
    assert_eq!(
        asked,
        HashSet::from(["two".to_string(), "five".to_string(), "flaky".to_string()])
    );
    assert!(out.stderr.contains("2 skipped"), "{out}");
    let results = lines(&std::fs::read_to_string(&out_path).unwrap());
    let ids: Vec<u64> = results.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 5, "each id once: {ids:?}");
    assert!(results.iter().all(|v| v["ok"] == true));
}

#[test]
fn a_malformed_line_is_reported_and_the_rest_done() {
    let s = echo().expect_chats(2);
    let out = local(&s, "").run_with_stdin(
        &["batch"],
        Some("fine\n{\"prompt\": \n{\"prompt\": 7}\nalso fine\n"),
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("Input line 2") && out.stderr.contains("Input line 3"),
        "{out}"
    );
    assert_eq!(lines(&out.stdout).len(), 2);
}

#[test]
fn provider_limits_are_never_exceeded_and_the_batch_waits_for_room() {
    // 3 requests per (scaled) one-second window; 10 items at concurrency 4.
    let times: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    let s = FakeServer::start(move |r| {
        t.lock().unwrap().push(Instant::now());
        fake::answer(&r.model(), &["ok"])
    });
    let env = local(&s, "requests_per_minute = 3\n").var("FREEROUTE_WINDOW_MS", "1000");
    let input: String = (0..10).map(|i| format!("item {i}\n")).collect();
    let out = env.run_with_stdin(&["batch", "--concurrency", "4"], Some(&input));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(lines(&out.stdout).len(), 10);
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), 10, "no item needed a second request");
    for (i, a) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .filter(|b| b.duration_since(*a) < Duration::from_millis(1000))
            .count();
        assert!(
            within <= 3,
            "{within} requests within one window starting at request {i}"
        );
    }
    // 10 items at 3 a window need at least three waits.
    assert!(times.last().unwrap().duration_since(times[0]) >= Duration::from_millis(2900));
}

#[test]
fn items_left_at_the_batch_deadline_are_reported_undone() {
    let s = echo();
    // One request a (real) minute: after the first item, every provider is full.
    let env = local(&s, "requests_per_minute = 1\n");
    let out = env.run_with_stdin(&["batch", "--timeout", "2", "--ordered"], Some("a\nb\nc\n"));
    assert_eq!(out.code, 4, "{out}");
    let results = lines(&out.stdout);
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["ok"], true);
    for v in &results[1..] {
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["kind"], "deadline", "{v}");
    }
    assert_eq!(s.chats().len(), 1);
}

#[test]
fn batch_items_share_the_state_with_single_runs() {
    let s = echo().expect_chats(2);
    let env = local(&s, "");
    let out = env.run_with_stdin(&["batch"], Some("x\ny\n"));
    assert_eq!(out.code, 0, "{out}");
    let stats = env.run(&["stats", "--json"]).json();
    assert_eq!(stats["providers"][0]["requests_today"], 2);
    assert_eq!(stats["runs_logged"], 2);
}

#[test]
fn an_item_waits_for_its_own_providers_room_while_others_have_some() {
    let s = echo().expect_chats(3);
    // `lim` takes one request a (scaled) second; `open` has no limit but is excluded by -m.
    let env = Env::bare().var("FREEROUTE_WINDOW_MS", "1000").config(&format!(
        "[providers.lim]\nbase_url = \"{}\"\nmodels = [{{ id = \"a\" }}]\nrequests_per_minute = 1\n[providers.open]\nbase_url = \"{}\"\nmodels = [{{ id = \"b\" }}]\n",
        s.url("/lim/v1"),
        s.url("/open/v1")
    ));
    let out = env.run_with_stdin(
        &["batch", "-m", "a", "--concurrency", "2"],
        Some("one\ntwo\nthree\n"),
    );
    assert_eq!(out.code, 0, "{out}");
    let results = lines(&out.stdout);
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|v| v["ok"] == true && v["provider"] == "lim"),
        "{out}"
    );
    assert!(s.chats().iter().all(|r| r.path.starts_with("/lim/")));
}

#[test]
fn a_slow_producer_on_stdin_does_not_hold_back_items_in_flight() {
    use std::io::Write;
    let s = echo().expect_chats(2);
    let env = local(&s, "");
    let mut child = env
        .cmd(&["batch"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    // The first item is sent before more input comes (else this times out).
    s.wait_for_chats(1);
    stdin.write_all(b"second\n").unwrap();
    drop(stdin);
    let out = wait_within(child, RUN_LIMIT, "freeroute batch");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}
