//! Completions and the man page are generated from the clap definition and committed; this
//! test fails with a diff when they are stale. `FREEROUTE_BLESS=1 cargo test` rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use freeroute::cli::Cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(path: &Path, fresh: &[u8], stale: &mut Vec<String>) {
    if std::env::var_os("FREEROUTE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, fresh).unwrap();
        return;
    }
    match std::fs::read(path) {
        Ok(old) if old == fresh => {}
        Ok(_) => stale.push(format!("{} is stale", path.display())),
        Err(_) => stale.push(format!("{} is missing", path.display())),
    }
}

#[test]
fn completions_and_man_page_are_fresh() {
    let mut stale = Vec::new();
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "freeroute", &mut buf);
        let name = match shell {
            Shell::Bash => "freeroute.bash",
            Shell::Zsh => "_freeroute",
            Shell::Fish => "freeroute.fish",
            Shell::Elvish => "freeroute.elv",
            _ => "_freeroute.ps1",
        };
        check(&root().join("completions").join(name), &buf, &mut stale);
    }
    let mut man = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut man)
        .unwrap();
    check(&root().join("man/freeroute.1"), &man, &mut stale);
    assert!(
        stale.is_empty(),
        "{}\nRun `FREEROUTE_BLESS=1 cargo test --test it generated` and commit the result.",
        stale.join("\n")
    );
}
