//! Memory shared by many hosts (DESIGN §9) against a real Redis: each test starts its own
//! `redis-server` (a free loopback port and a unix socket, a password, a temporary
//! folder; killed on drop), and "hosts" are separate HOME/XDG folders pointing at it.
//!
//! Ignored by default, like the real llama.cpp tests: `.ci/run` installs `redis-server`
//! and runs them with `cargo test --test it redis -- --ignored`; there, a missing
//! `redis-server` fails them (it is never a pass).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ask::{BIG, JsonAnswer, MID, SMALL, server};
use crate::fake::{self, FakeServer};
use crate::harness::{Env, KEY, Out, RUN_LIMIT, stats_row, wait_within};

const PASSWORD: &str = "redis-test-pw-7f3a9c";

/// A redis-server of the test's own.
struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        };
        r.spawn();
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--requirepass", PASSWORD])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server cannot be started ({e}): install it (`apt-get install \
                     redis-server`; .ci/run does) to run the shared-memory tests"
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while self.try_conn().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}/0", self.port)
    }

    fn unix_url(&self) -> String {
        format!("unix://{}?pass={PASSWORD}", self.socket().display())
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        let c = redis::Client::open(self.url())?;
        let mut conn = c.get_connection_with_timeout(Duration::from_secs(1))?;
        redis::cmd("PING").query::<String>(&mut conn)?;
        Ok(conn)
    }

    fn conn(&self) -> redis::Connection {
        self.try_conn().expect("the test's redis answers")
    }

    /// Every key and every value it holds, as text.
    fn dump(&self) -> Vec<(String, String)> {
        let mut c = self.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        keys.into_iter()
            .map(|k| {
                let kind: String = redis::cmd("TYPE").arg(&k).query(&mut c).unwrap();
                let value = match kind.as_str() {
                    "string" => redis::cmd("GET").arg(&k).query::<String>(&mut c).unwrap(),
                    "hash" => format!(
                        "{:?}",
                        redis::cmd("HGETALL")
                            .arg(&k)
                            .query::<Vec<String>>(&mut c)
                            .unwrap()
                    ),
                    "zset" => format!(
                        "{:?}",
                        redis::cmd("ZRANGE")
                            .arg(&k)
                            .arg(0)
                            .arg(-1)
                            .arg("WITHSCORES")
                            .query::<Vec<String>>(&mut c)
                            .unwrap()
                    ),
                    other => panic!("freeroute wrote a {other} at {k}"),
                };
                (k, value)
            })
            .collect()
    }

    fn ttl_ms(&self, key: &str) -> i64 {
        redis::cmd("PTTL").arg(key).query(&mut self.conn()).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A host: its own HOME and XDG folders, OpenRouter on the fake with the shared key, its
/// memory at `url`, and OpenRouter's documented 20 a minute raised to `per_minute`. The
/// Redis budget is raised to 3 s: these tests run beside each other, one of them starting
/// 64 runs at once on a small machine, and only `budget_host`'s are about the budget.
fn host(s: &FakeServer, url: &str, per_minute: u32) -> Env {
    budget_host(s, url, per_minute, 3_000)
}

/// A host whose Redis round trips may take `budget_ms` (`[state] timeout_ms`).
fn budget_host(s: &FakeServer, url: &str, per_minute: u32, budget_ms: u64) -> Env {
    Env::new(s)
        .config(&format!(
            "requests_per_minute = {per_minute}\n\n[state]\ntimeout_ms = {budget_ms}\n"
        ))
        .var("FREEROUTE_REDIS_URL", url)
}

const NOTE: &str = "Shared memory unavailable";

fn notes(out: &Out) -> usize {
    out.stderr.matches(NOTE).count()
}

fn spawn_run(env: &Env, args: &[&str]) -> Child {
    env.spawn(args)
}

fn finish(c: Child) -> Out {
    let o = wait_within(c, RUN_LIMIT, "a parallel run");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A fake OpenRouter that answers and counts every chat; past `limit` requests (its
/// per-minute window: the runs' clock stands still, so the whole test is one minute) it
/// answers a per-minute quota 429 and counts it as over-sent.
fn limited(limit: usize) -> (FakeServer, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicUsize::new(0));
    let (s2, o2) = (sent.clone(), over.clone());
    let s = server(move |r| {
        if s2.fetch_add(1, Ordering::SeqCst) >= limit {
            o2.fetch_add(1, Ordering::SeqCst);
            return fake::minute_quota_429(60_000);
        }
        fake::answer(&r.model(), &["ok"])
    });
    (s, sent, over)
}

#[test]
#[ignore = "needs redis-server: .ci/run installs it and runs these with --ignored"]
fn four_hosts_together_never_exceed_a_strict_minute_limit_and_use_every_slot() {
    let redis = Redis::start();
    let (s, sent, over) = limited(6);
    let hosts: Vec<Env> = (0..4)
        .map(|_| host(&s, &redis.url(), 6).var("FREEROUTE_NOW_MS", "1800000000000"))
        .collect();
    let runs: Vec<Child> = hosts
        .iter()
        .flat_map(|h| (0..8).map(move |_| spawn_run(h, &["-q", "--timeout", "20", "q"])))
        .collect();
    let outs: Vec<Out> = runs.into_iter().map(finish).collect();
    let answered = outs.iter().filter(|o| o.code == 0).count();
    assert_eq!(over.load(Ordering::SeqCst), 0, "no request over the limit");
    assert_eq!(
        sent.load(Ordering::SeqCst),
        6,
        "every slot of the window used"
    );
    assert_eq!(answered, 6);
    for o in outs.iter().filter(|o| o.code != 0) {
        assert_eq!(o.code, 4, "{o}");
        let full = ["request window is full", "can be asked now"];
        assert!(full.iter().any(|f| o.stderr.contains(f)), "{o}");
    }
    assert!(outs.iter().all(|o| notes(o) == 0));
    let stats = hosts[3].run(&["stats", "--json"]).json();
    assert_eq!(stats["memory"]["shared"], true, "{stats}");
    let or = stats_row(&stats, "providers", "provider", "openrouter");
    assert_eq!(or["requests_this_minute"], 6, "{stats}");
}

#[test]
#[ignore = "needs redis-server: .ci/run installs it and runs these with --ignored"]
fn what_one_host_learns_the_others_act_on_without_sending() {
    let redis = Redis::start();
    // Host A meets a daily quota 429 at OpenRouter; host B then uses its other provider.
    let reset_ms = now_ms() + 120_000;
    let quota_hit = Arc::new(AtomicBool::new(true));
    let q = quota_hit.clone();
    let or = server(
        move |r| match (q.load(Ordering::SeqCst), r.model().as_str()) {
            (true, _) => fake::daily_quota_429(reset_ms),
            (false, m) if m == BIG => fake::error_json(500, "upstream died"),
            (false, m) if m == SMALL => {
                fake::error_json(404, "No endpoints found that support image input")
            }
            (false, m) => fake::answer(m, &["from openrouter"]),
        },
    );
    let backup = FakeServer::start(|r| fake::answer(&r.model(), &["from backup"]));
    let with_backup = |env: Env| {
        env.config(&format!(
            "[providers.backup]\nbase_url = \"{}\"\napi_key_env = \"BACKUP_KEY\"\nmodels = [{{ id = \"b-7b\", context = 8192 }}]\n",
            backup.url("/v1")
        ))
        .var("BACKUP_KEY", "backup-key-0123456789")
    };
    let a = with_backup(host(&or, &redis.url(), 100));
    let b = with_backup(host(&or, &redis.url(), 100));
    let out = a.run(&["-q", "-p", "openrouter", "q"]);
    assert_eq!(out.code, 4, "{out}");
    assert_eq!(or.chats().len(), 1);
    let out = b.run(&["--json", "q"]);
    assert_eq!(out.code, 0, "{out}");
    let answer: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(answer.provider, "backup", "{out}");
    assert_eq!(or.chats().len(), 1, "host B sent OpenRouter nothing");
    let out = b.run(&["-q", "-p", "openrouter", "q"]);
    assert_ne!(out.code, 0, "{out}");
    assert_eq!(or.chats().len(), 1, "not even when asked for it: {out}");
    let block = format!("freeroute:v1:block:{}", provider_scope(&redis));
    let ttl = redis.ttl_ms(&block);
    assert!(
        ttl > 0 && ttl <= 120_000,
        "the block expires at its reset: {ttl}"
    );

    // After the reset, host B asks OpenRouter again.
    quota_hit.store(false, Ordering::SeqCst);
    let later = (reset_ms + 1_000).to_string();
    let out = b.run_with_env(
        &["--json", "-p", "openrouter", "-m", MID, "q"],
        &[("FREEROUTE_NOW_MS", &later)],
    );
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(or.chats().len(), 2);

    // A capability miss and a cool-down learned by A: B drops the one, tries the other last.
    let png = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sign.png");
    let a_later = |args: &[&str]| a.run_with_env(args, &[("FREEROUTE_NOW_MS", &later)]);
    let out = a_later(&["-q", "-p", "openrouter", "-i", png.to_str().unwrap(), "q"]);
    assert_eq!(out.code, 4, "{out}");
    let out = a_later(&["--json", "-p", "openrouter", "-m", BIG, "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    let before = or.chats().len();
    let plan = b
        .run_with_env(
            &["--dry-run", "--json", "-p", "openrouter", "--vision", "q"],
            &[("FREEROUTE_NOW_MS", &later)],
        )
        .json();
    let miss = plan["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model"] == SMALL)
        .unwrap_or_else(|| panic!("B drops the model A found lacking: {plan}"));
    assert!(
        miss["reason"].as_str().unwrap().contains("remembered"),
        "{miss}"
    );
    let out = b.run_with_env(
        &["--json", "-p", "openrouter", "-m", BIG, "-m", MID, "q"],
        &[("FREEROUTE_NOW_MS", &later)],
    );
    assert_eq!(out.code, 0, "{out}");
    let answer: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        answer.attempts[0].model, MID,
        "B tries the cooling model last: {out}"
    );
    assert_eq!(or.chats().len(), before + 1, "and sends it nothing");
}

/// The quota scope of OpenRouter with the test key, as the shared memory names it.
fn provider_scope(redis: &Redis) -> String {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("freeroute:v1:block:openrouter#*")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0]
        .trim_start_matches("freeroute:v1:block:")
        .to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
#[ignore = "needs redis-server: .ci/run installs it and runs these with --ignored"]
fn redis_stopped_between_runs_costs_no_answer_and_is_shared_again_once_back() {
    let mut redis = Redis::start();
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let env = host(&s, &redis.url(), 100);
    let out = env.run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 0),
        "{out}"
    );
    assert!(redis.dump().iter().any(|(k, _)| k == "freeroute:v1:models"));
    redis.stop();
    let out = env.run(&["q"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "{out}");
    assert_eq!(notes(&out), 1, "{out}");
    assert!(out.stderr.contains("using this host's memory"), "{out}");
    assert!(!out.stderr.contains(PASSWORD), "{out}");
    assert!(out.stderr.contains(":***@127.0.0.1"), "{out}");
    redis.spawn();
    assert!(redis.dump().is_empty(), "a fresh redis");
    let out = env.run(&["q"]);
    assert_eq!((out.code, notes(&out)), (0, 0), "{out}");
    assert!(
        redis.dump().iter().any(|(k, _)| k == "freeroute:v1:models"),
        "shared again"
    );
}

/// A loopback TCP proxy to `port` that holds each chunk for `delay` ms (switchable while
/// connections are open). It stops accepting on drop; its connections end with the peers.
struct SlowProxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    fn start(to: u16, delay_ms: u64) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay = Arc::new(AtomicU64::new(delay_ms));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, st) = (delay.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(upstream) = TcpStream::connect(("127.0.0.1", to)) else {
                            continue;
                        };
                        pipe(
                            client.try_clone().unwrap(),
                            upstream.try_clone().unwrap(),
                            d.clone(),
                        );
                        pipe(upstream, client, d.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SlowProxy {
            port,
            delay_ms: delay,
            stop,
        }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk held for the current delay; ends when either closes
/// or nothing moves for 30 s.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        from.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

#[test]
#[ignore = "needs redis-server: .ci/run installs it and runs these with --ignored"]
fn a_wrong_password_a_slow_redis_and_a_key_of_the_wrong_type_cost_no_answer() {
    let redis = Redis::start();
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let wrong = format!("redis://:not-the-pw-123@127.0.0.1:{}/0", redis.port);
    let out = host(&s, &wrong, 100).run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 1),
        "{out}"
    );
    assert!(out.stderr.contains("password was refused"), "{out}");
    assert!(!out.stderr.contains("not-the-pw-123"), "{out}");

    // Slower than timeout_ms from the start.
    let proxy = SlowProxy::start(redis.port, 2_000);
    let slow = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", proxy.port);
    let env = budget_host(&s, &slow, 100, 300);
    let out = env.run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 1),
        "{out}"
    );
    assert!(out.stderr.contains("no reply within"), "{out}");

    // Slow from the middle of a run on: the first model fails, and the reservation of the
    // next one gets no reply in time; the run answers from this host's memory.
    proxy.delay_ms.store(0, Ordering::SeqCst);
    let d = proxy.delay_ms.clone();
    let s2 = server(move |r| {
        if r.model() == BIG {
            d.store(2_000, Ordering::SeqCst);
            return fake::error_json(500, "down");
        }
        fake::answer(&r.model(), &["second"])
    });
    let env = budget_host(&s2, &slow, 100, 300);
    let out = env.run(&["--json", "-m", BIG, "-m", MID, "q"]);
    assert_eq!((out.code, notes(&out)), (0, 1), "{out}");
    let answer: JsonAnswer = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (answer.model.as_str(), answer.content.as_str()),
        (MID, "second")
    );
    drop(proxy);

    // A key of the wrong type under the namespace: read, never written over. A newer
    // layout's keys are another prefix: never read, never touched.
    let mut c = redis.conn();
    redis::cmd("SET")
        .arg("freeroute:v1:models")
        .arg("planted")
        .query::<()>(&mut c)
        .unwrap();
    redis::cmd("HSET")
        .arg("freeroute:v2:models")
        .arg("x")
        .arg("{\"newer\":1}")
        .query::<()>(&mut c)
        .unwrap();
    let env = host(&s, &redis.url(), 100);
    let out = env.run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 1),
        "{out}"
    );
    assert!(out.stderr.contains("not of the type"), "{out}");
    let planted: String = redis::cmd("GET")
        .arg("freeroute:v1:models")
        .query(&mut c)
        .unwrap();
    assert_eq!(planted, "planted");
    let newer: Vec<String> = redis::cmd("HGETALL")
        .arg("freeroute:v2:models")
        .query(&mut c)
        .unwrap();
    assert_eq!(newer, ["x", "{\"newer\":1}"]);
    // A value that is not what this layout writes, in a field this run reads.
    redis::cmd("DEL")
        .arg("freeroute:v1:models")
        .query::<()>(&mut c)
        .unwrap();
    let field = format!("openrouter/{BIG}");
    redis::cmd("HSET")
        .arg("freeroute:v1:models")
        .arg(&field)
        .arg("{not json")
        .query::<()>(&mut c)
        .unwrap();
    let out = env.run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 1),
        "{out}"
    );
    assert!(out.stderr.contains("unreadable data"), "{out}");
    let kept: String = redis::cmd("HGET")
        .arg("freeroute:v1:models")
        .arg(&field)
        .query(&mut c)
        .unwrap();
    assert_eq!(kept, "{not json", "never written over");
    // The same at the window a reservation reads, planted after the run read the health.
    redis::cmd("DEL")
        .arg("freeroute:v1:models")
        .query::<()>(&mut c)
        .unwrap();
    let scope = {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("freeroute:v1:minute:openrouter#*")
            .query(&mut c)
            .unwrap();
        keys[0].clone()
    };
    redis::cmd("DEL").arg(&scope).query::<()>(&mut c).unwrap();
    redis::cmd("SET")
        .arg(&scope)
        .arg("planted")
        .query::<()>(&mut c)
        .unwrap();
    let out = env.run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 1),
        "{out}"
    );
    let planted: String = redis::cmd("GET").arg(&scope).query(&mut c).unwrap();
    assert_eq!(planted, "planted");
    // A day counter that is not a number: the reservation fails before it writes.
    redis::cmd("DEL").arg(&scope).query::<()>(&mut c).unwrap();
    assert_eq!(host(&s, &redis.url(), 100).run(&["q"]).code, 0);
    let day: Vec<String> = redis::cmd("KEYS")
        .arg("freeroute:v1:day:openrouter#*")
        .query(&mut c)
        .unwrap();
    redis::cmd("SET")
        .arg(&day[0])
        .arg("many")
        .query::<()>(&mut c)
        .unwrap();
    let in_window: u64 = redis::cmd("ZCARD").arg(&scope).query(&mut c).unwrap();
    let out = env.run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 1),
        "{out}"
    );
    assert!(out.stderr.contains("unreadable"), "{out}");
    let after: u64 = redis::cmd("ZCARD").arg(&scope).query(&mut c).unwrap();
    assert_eq!(after, in_window, "nothing written by the refused script");
    let day_value: String = redis::cmd("GET").arg(&day[0]).query(&mut c).unwrap();
    assert_eq!(day_value, "many");
}

#[test]
#[ignore = "needs redis-server: .ci/run installs it and runs these with --ignored"]
fn sixty_four_runs_on_four_hosts_count_every_attempt_and_no_key_reaches_redis() {
    let redis = Redis::start();
    // One model always fails, so that the runs that try it first make two attempts.
    let s = server(|r| match r.model().as_str() {
        m if m == SMALL => fake::error_json(502, "provider down"),
        m => fake::answer(m, &["ok"]),
    });
    let hosts: Vec<Env> = (0..4)
        .map(|i| {
            // Two hosts on the TCP port, two on the unix socket.
            let url = if i % 2 == 0 {
                redis.url()
            } else {
                redis.unix_url()
            };
            host(&s, &url, 1_000)
        })
        .collect();
    let runs: Vec<Child> = hosts
        .iter()
        .flat_map(|h| (0..16).map(move |_| spawn_run(h, &["--json", "q"])))
        .collect();
    let outs: Vec<Out> = runs.into_iter().map(finish).collect();
    let (mut attempts, mut cancelled) = (0, 0);
    for o in &outs {
        assert_eq!((o.code, notes(o)), (0, 0), "{o}");
        let a: JsonAnswer = serde_json::from_str(&o.stdout).unwrap();
        attempts += a.attempts.len();
        cancelled += a
            .attempts
            .iter()
            .filter(|x| x.outcome == "cancelled")
            .count();
        assert!(!o.stdout.contains(KEY) && !o.stderr.contains(KEY), "{o}");
    }
    // Under this load a fast model outlives its patience now and then and the next one is
    // started beside it; one cancelled a moment after it was launched may not have reached
    // the fake, but it was reserved (counted) before it was sent, which errs on the safe side.
    let seen = s.chats().len();
    assert!(
        attempts >= seen && attempts - cancelled <= seen,
        "every attempt the fake saw was reported: {attempts} reported ({cancelled} cancelled), {seen} seen"
    );
    for h in &hosts {
        let stats = h.run(&["stats", "--json"]);
        assert!(!stats.stdout.contains(KEY) && !stats.stdout.contains(PASSWORD));
        let v = stats.json();
        let or = stats_row(&v, "providers", "provider", "openrouter");
        assert_eq!(
            or["requests_today"], attempts,
            "shared counts lose none: {v}"
        );
        let oks: f64 = v["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["ok"].as_f64().unwrap())
            .sum();
        assert!(
            (oks - 64.0).abs() < 0.1,
            "every answer recorded (faded a little by time): {v}"
        );
    }
    let dump = redis.dump();
    assert!(!dump.is_empty());
    let fingerprint_only = dump
        .iter()
        .all(|(k, v)| !k.contains(KEY) && !v.contains(KEY) && !v.contains(&KEY[10..]));
    assert!(fingerprint_only, "{dump:?}");
    for (k, _) in &dump {
        assert!(k.starts_with("freeroute:v1:"), "{k}");
        assert!(redis.ttl_ms(k) > 0, "every key expires: {k}");
    }
    let shown = hosts[0].run(&["config", "show"]);
    assert!(shown.stdout.contains("redis://:***@127.0.0.1"), "{shown}");
    assert!(!shown.stdout.contains(PASSWORD), "{shown}");
    let shown = hosts[1].run(&["config", "show"]);
    assert!(shown.stdout.contains("pass=***"), "{shown}");
    assert!(!shown.stdout.contains(PASSWORD), "{shown}");
}

#[test]
#[ignore = "needs redis-server: .ci/run installs it and runs these with --ignored"]
fn stats_shows_the_shared_view_and_reset_shared_forgets_it() {
    let redis = Redis::start();
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let a = host(&s, &redis.url(), 100);
    let b = host(&s, &redis.url(), 100);
    assert_eq!(a.run(&["q"]).code, 0);
    let out = b.run(&["stats"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("# shared memory: redis://:***@127.0.0.1"),
        "{out}"
    );
    assert!(
        out.stdout.contains("namespace freeroute, layout v1"),
        "{out}"
    );
    let v = b.run(&["stats", "--json"]).json();
    assert_eq!(v["runs_logged"], 0, "the request log is per host: {v}");
    assert_eq!(
        stats_row(&v, "providers", "provider", "openrouter")["requests_today"],
        1
    );
    let out = b.run(&["stats", "--reset", "--shared"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(redis.dump().is_empty());
    let v = a.run(&["stats", "--json"]).json();
    assert_eq!(v["providers"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["runs_logged"], 1, "this host's log is kept: {v}");
    let out = Env::bare().run(&["stats", "--reset", "--shared"]);
    assert_eq!(out.code, 2, "no shared memory configured: {out}");
    assert!(
        out.stderr.contains("FREEROUTE_REDIS_URL is not set"),
        "{out}"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with the `openssl` tool.
fn tls_files(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl tool (.ci/run installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ca = [
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=freeroute test CA",
    ];
    run(&[
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ][..],
        &ca[..],
    ]
    .concat());
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let csr = [
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    run(&[&["req", "-newkey", "rsa:2048", "-nodes"][..], &csr[..]].concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[test]
#[ignore = "needs redis-server: .ci/run installs it and runs these with --ignored"]
fn a_rediss_url_shares_over_tls_and_an_untrusted_certificate_is_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    tls_files(dir.path());
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.pem", "--requirepass", PASSWORD])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "no TLS redis");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = server(|r| fake::answer(&r.model(), &["ok"]));
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{port}/0");
    let ca = dir.path().join("ca.pem");
    let env = host(&s, &url, 100).var("SSL_CERT_FILE", ca.to_str().unwrap());
    let out = env.run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 0),
        "{out}"
    );
    let stats = env.run(&["stats", "--json"]).json();
    assert_eq!(stats["memory"]["shared"], true, "{stats}");
    assert_eq!(
        stats_row(&stats, "providers", "provider", "openrouter")["requests_today"],
        1
    );
    // Without the CA, the certificate is not trusted: this host's memory, one note.
    let untrusted = host(&s, &url, 100);
    let out = untrusted.run(&["q"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), notes(&out)),
        (0, "ok\n", 1),
        "{out}"
    );
    assert!(!out.stderr.contains(PASSWORD), "{out}");
}

/// A request counts in its model's load on every host when it is reserved, not when its
/// run ends (issue 18: parallel runs see each other's requests in flight); its outcome does
/// not count it again; a load Redis holds that is not a number counts from zero.
#[test]
#[ignore = "needs redis-server: .ci/run installs it and runs these with --ignored"]
fn a_request_in_flight_counts_in_its_model_load_on_every_host() {
    let redis = Redis::start();
    let s = server(|r| {
        let mut steps = vec![
            fake::Step::Send(": OPENROUTER PROCESSING\n\n".into()),
            fake::Step::Sleep(Duration::from_secs(5)),
        ];
        steps.extend(fake::answer_steps(&r.model(), &["late ", "answer"]));
        fake::Reply::stream(steps)
    });
    let a = host(&s, &redis.url(), 100);
    let b = host(&s, &redis.url(), 100);
    let load = |env: &Env| {
        let v = env.run(&["stats", "--json"]).json();
        stats_row(&v, "models", "model", MID)["recent_requests"]
            .as_f64()
            .unwrap()
    };
    let run = spawn_run(&a, &["-q", "--timeout", "60", "-m", MID, "q"]);
    s.wait_for_chats(1);
    // It fades with a time constant of a minute: about 0.92 after the 5 s of the answer.
    let during = load(&b);
    assert!((0.85..=1.0).contains(&during), "in flight: {during}");
    let out = finish(run);
    assert_eq!(out.code, 0, "{out}");
    let after = load(&b);
    assert!((0.85..=1.0).contains(&after), "counted once: {after}");

    let field = format!("openrouter/{MID}");
    let _: () = redis::cmd("HSET")
        .arg("freeroute:v1:loads")
        .arg(&field)
        .arg("not a load")
        .query(&mut redis.conn())
        .unwrap();
    let out = b.run(&["--json", "--timeout", "60", "-m", MID, "q"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(notes(&out), 0, "{out}");
    let held: String = redis::cmd("HGET")
        .arg("freeroute:v1:loads")
        .arg(&field)
        .query(&mut redis.conn())
        .unwrap();
    assert!(held.starts_with("1.000:"), "counted from zero: {held}");
}
