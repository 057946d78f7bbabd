//! Completions and the man page are generated from the clap definition and committed; this
//! test fails with a diff when they are stale. `FREEROUTE_BLESS=1 cargo test` rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use freeroute::cli::Cli;
use freeroute::manual;
use roff::{Roff, bold, roman};

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
    // One page per subcommand, so that the main page's SUBCOMMANDS refer to pages that
    // exist; `help` is clap's own and gets none.
    let cmd = Cli::command().disable_help_subcommand(true);
    let mut subcommands = Vec::new();
    for sub in cmd.get_subcommands() {
        // A subcommand's page is named and titled `freeroute-NAME`, its synopsis `freeroute
        // NAME`, as clap_mangen::generate_to does.
        let name = format!("freeroute-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(&name)
            .bin_name(format!("freeroute {}", sub.get_name()));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).render(&mut buf).unwrap();
        buf.extend(see_also(&["freeroute(1)"]));
        subcommands.push(name.clone());
        check(&root().join(format!("man/{name}.1")), &buf, &mut stale);
    }
    check(&root().join("man/freeroute.1"), &main_page(cmd), &mut stale);
    // A page left behind by a subcommand that is gone is stale too.
    for entry in std::fs::read_dir(root().join("man")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let known = file == "freeroute.1" || subcommands.iter().any(|s| file == format!("{s}.1"));
        if !known {
            stale.push(format!("man/{file} has no subcommand"));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nRun `FREEROUTE_BLESS=1 cargo test --test it generated` and commit the result.",
        stale.join("\n")
    );
}

/// The main page: clap_mangen's sections (without its EXTRA, which would hold the
/// `--help` epilogue), then EXAMPLES, EXIT STATUS, ENVIRONMENT and FILES from
/// `freeroute::manual`, and SEE ALSO naming only pages that are generated here.
fn main_page(cmd: clap::Command) -> Vec<u8> {
    let mut cmd = cmd;
    cmd.build();
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| format!("freeroute-{}(1)", s.get_name()))
        .collect();
    let man = clap_mangen::Man::new(cmd);
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    man.render_subcommands_section(&mut out).unwrap();
    let mut r = Roff::new();
    r.control("SH", ["EXAMPLES"]);
    for block in manual::EXAMPLES.split("\n\n") {
        let mut lines = block.lines();
        if let Some(heading) = lines.next() {
            r.control("PP", [])
                .text([bold(heading.trim_end_matches(':'))]);
        }
        r.control("nf", []).control("RS", ["4"]);
        for line in lines {
            r.text([roman(line.trim_start())]);
        }
        r.control("RE", []).control("fi", []);
    }
    r.control("PP", [])
        .text([roman(manual::FIRST_STEP.replace('\n', " "))]);
    r.control("SH", ["EXIT STATUS"]);
    for e in manual::EXIT_STATUS {
        r.control("TP", []).text([bold(e.code.to_string())]);
        r.text([roman(e.long)]);
    }
    r.control("SH", ["ENVIRONMENT"]);
    for (name, what) in manual::environment() {
        r.control("TP", []).text([bold(name)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["FILES"]);
    for (path, what) in manual::FILES {
        r.control("TP", []).text([bold(*path)]);
        r.text([roman(*what)]);
    }
    r.to_writer(&mut out).unwrap();
    let subs: Vec<&str> = subs.iter().map(String::as_str).collect();
    out.extend(see_also(&subs));
    man.render_version_section(&mut out).unwrap();
    out
}

fn see_also(pages: &[&str]) -> Vec<u8> {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"])
        .text([roman(pages.join(", "))]);
    r.render().into_bytes()
}
