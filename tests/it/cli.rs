//! Configuration and credentials errors, `config path|show|init`, help; no colour on a
//! stderr that is no terminal.

use crate::ask::server;
use crate::fake::{self, FakeServer};
use crate::harness::Env;

#[test]
fn no_key_anywhere_is_exit_6_with_where_to_get_one() {
    let out = Env::bare().run(&["hello"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("OPENROUTER_API_KEY"), "{out}");
    assert!(out.stderr.contains("https://openrouter.ai/keys"), "{out}");
}

#[test]
fn no_key_with_json_prints_a_config_failure() {
    let out = Env::bare().run(&["--json", "hello"]);
    assert_eq!(out.code, 6, "{out}");
    let v = out.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "config");
    assert_eq!(v["attempts"], serde_json::json!([]));
}

#[test]
fn bad_config_names_file_line_and_key() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    let env = Env::new(&s).config("\n[defaults]\ntimeout = \"soon\"\n");
    let out = env.run(&["hello"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("config.toml"), "{out}");
    assert!(out.stderr.contains("line 5"), "{out}");
    assert!(out.stderr.contains("defaults.timeout"), "{out}");
    assert!(s.chats().is_empty());
}

#[test]
fn unknown_config_key_and_missing_explicit_file() {
    let env = Env::bare().config("[defaults]\ntimeuot = 3\n");
    let out = env.run(&["hello"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("timeuot"), "{out}");
    let out = Env::bare().run(&["--config", "/nonexistent/freeroute.toml", "hello"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("/nonexistent/freeroute.toml"), "{out}");
}

#[test]
fn config_file_from_environment_variable() {
    let s = server(|r| fake::answer(&r.model(), &["via env config"])).expect_chats(1);
    let env = Env::bare().var("OPENROUTER_API_KEY", "k");
    let alt = env.path("alt.toml");
    std::fs::write(
        &alt,
        format!(
            "[providers.openrouter]\nbase_url = \"{}\"\n",
            s.url("/api/v1")
        ),
    )
    .unwrap();
    let out = env.run_with_env(
        &["-m", crate::ask::BIG, "q"],
        &[("FREEROUTE_CONFIG", alt.to_str().unwrap())],
    );
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "via env config\n");
}

#[test]
fn config_path_init_and_show() {
    let env = Env::bare().var("OPENROUTER_API_KEY", "sk-secret-value");
    let path = env.path("config/freeroute/config.toml");
    let out = env.run(&["config", "path"]);
    assert_eq!(out.stdout.trim(), path.to_str().unwrap());
    // The harness writes an empty config: init refuses to overwrite without --force.
    let out = env.run(&["config", "init"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--force"), "{out}");
    let custom = env.path("fresh/config.toml");
    let out = env.run(&["--config", custom.to_str().unwrap(), "config", "init"]);
    assert_eq!(out.code, 0, "{out}");
    let text = std::fs::read_to_string(&custom).unwrap();
    assert!(text.contains("[defaults]") && text.contains("OPENROUTER_API_KEY"));
    let out = env.run(&["config", "show"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("[providers.openrouter]  # on"), "{out}");
    assert!(out.stdout.contains("OPENROUTER_API_KEY\"  # set"), "{out}");
    assert!(!out.stdout.contains("sk-secret-value"), "{out}");
}

#[test]
fn help_has_worked_examples() {
    let out = Env::bare().run(&["--help"]);
    assert_eq!(out.code, 0);
    for needle in [
        "git diff | freeroute",
        "jq",
        "Cron",
        "Exit codes",
        "--translate --to",
        "--ocr -i",
    ] {
        assert!(out.stdout.contains(needle), "missing {needle}: {out}");
    }
}

#[test]
fn bad_flag_is_exit_2() {
    let out = Env::bare().run(&["--no-such-flag", "x"]);
    assert_eq!(out.code, 2, "{out}");
}

#[test]
fn a_bad_flag_with_json_is_one_usage_object_on_stdout() {
    let s = server(|r| fake::answer(&r.model(), &["x"]));
    for args in [
        &["--json", "--race", "99", "hello"][..],
        &["hello", "--jsno", "--json"][..],
    ] {
        let out = Env::new(&s).run(args);
        assert_eq!(out.code, 2, "{out}");
        let v = out.json();
        assert_eq!(v["ok"], false, "{out}");
        assert_eq!(v["error"]["kind"], "usage", "{out}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("--race") || message.contains("--jsno"),
            "{out}"
        );
        assert!(out.stderr.starts_with("error: "), "{out}");
    }
    // Without --json, stdout stays empty; after `--`, "--json" is prompt text, not a flag.
    let out = Env::new(&s).run(&["--race", "99", "hello"]);
    assert_eq!((out.code, out.stdout.as_str()), (2, ""), "{out}");
    let out = Env::new(&s).run(&["--bogus", "--", "--json"]);
    assert_eq!((out.code, out.stdout.as_str()), (2, ""), "{out}");
    assert!(s.chats().is_empty());
}

#[test]
fn stderr_that_is_no_terminal_gets_no_colour_even_without_no_color() {
    // Every model list refused: a note, an error and its hint, each painted on a terminal.
    let s = FakeServer::start(|_| fake::error_json(401, "No auth credentials found"));
    let env = Env::new(&s).allow_color();
    let out = env.run(&["-v", "hello"]);
    assert_eq!(out.code, 6, "{out}");
    for word in ["[freeroute]", "note:", "error:", "hint:"] {
        assert!(out.stderr.contains(word), "no {word:?}: {out}");
    }
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
    // The command line's own errors too.
    let out = env.run(&["--no-such-flag", "hello"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("error:"), "{out}");
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
}
