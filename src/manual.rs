//! The words of `--help`'s closing text and of the man page's own sections (EXAMPLES, EXIT
//! STATUS, ENVIRONMENT, FILES): text only, no behaviour. `cli.rs` puts the examples and the
//! exit codes under `--help`; the `generated` test (tests/it/generated.rs) renders every
//! section into `man/freeroute.1`. The key variables come from the preset table; a unit test
//! checks the exit codes against `error.rs`, which owns them.

use crate::presets::PRESETS;

/// Command lines a user copies, grouped under their headings.
pub const EXAMPLES: &str = "\
Examples:
  freeroute \"Explain the difference between TCP and UDP in two sentences\"
  git diff | freeroute \"write a one-line commit message for this diff\"
  freeroute --json \"Name three prime numbers\" | jq -r .content
  freeroute --json -q \"ping\" | jq '{model, ms: .timing.total_ms}'
  freeroute -m meta-llama/llama-3.3-70b-instruct:free -s \"Answer in French\" \"hello\"
  freeroute --dry-run -v \"a long question\"     # show the plan, send nothing
  freeroute models --json | jq -r '.[].model'

Translation and OCR:
  freeroute --translate --to German < notes.md > notes.de.md
  freeroute --ocr -i screenshot.png > screenshot.txt
  curl -s https://example.com/shot.png | freeroute --ocr -i -
  freeroute --ocr --translate --to English -i sign.jpg

Tools, schemas, conversations, batches:
  freeroute --tools tools.json \"Weather in Paris?\" | jq -r .arguments.city
  freeroute --schema '{\"type\":\"object\"}' \"extract the fields\" < letter.txt | jq .
  freeroute -c \"and why?\"
  freeroute batch prompts.jsonl -o answers.jsonl

Cron (all-or-nothing output, a deadline, no spinner):
  0 7 * * * freeroute -q --timeout 60 \"Summarise today's agenda\" < agenda.txt > summary.txt";

/// What a new user needs before the first run.
pub const FIRST_STEP: &str = "\
Set OPENROUTER_API_KEY (a free key from https://openrouter.ai/keys), or add a provider
to the config file (freeroute config init).";

/// One exit code: a few words for `--help`, a sentence for the man page.
pub struct ExitStatus {
    pub code: i32,
    pub short: &'static str,
    pub long: &'static str,
}

/// DESIGN §4's exit codes, in order.
pub const EXIT_STATUS: &[ExitStatus] = &[
    ExitStatus {
        code: 0,
        short: "answered",
        long: "Answered (a reader that went away, as in `| head`, counts as answered). \
               `batch`: every item succeeded.",
    },
    ExitStatus {
        code: 1,
        short: "internal error",
        long: "Internal error, or standard output could not be written (a full disk).",
    },
    ExitStatus {
        code: 2,
        short: "usage or input error",
        long: "Usage or input error: a bad flag, an unreadable image, an invalid tools or \
               schema file. `batch`: some input lines could not be read.",
    },
    ExitStatus {
        code: 3,
        short: "no eligible model",
        long: "No eligible model for the requested capabilities and filters.",
    },
    ExitStatus {
        code: 4,
        short: "every attempt failed",
        long: "Every attempt failed, or the stream broke after output began. `batch`: an \
               item failed or was left undone.",
    },
    ExitStatus {
        code: 5,
        short: "deadline passed",
        long: "The deadline (--timeout) passed without an answer.",
    },
    ExitStatus {
        code: 6,
        short: "configuration or key error",
        long: "Configuration or credentials error: a bad config file, no provider with a key \
               and none that answers without one, or every provider tried refused its key.",
    },
    ExitStatus {
        code: 130,
        short: "interrupted",
        long: "Interrupted (Ctrl-C).",
    },
];

/// `--help`'s closing text: the examples, the first step, the exit codes (a line broken
/// only between two codes).
pub fn after_help() -> String {
    let mut codes = String::from("Exit codes:");
    let mut line = codes.len();
    for (i, e) in EXIT_STATUS.iter().enumerate() {
        let last = i + 1 == EXIT_STATUS.len();
        let item = format!("{} {}{}", e.code, e.short, if last { "." } else { "," });
        if line + 1 + item.len() > 92 {
            codes.push('\n');
            line = 0;
        } else {
            codes.push(' ');
            line += 1;
        }
        codes.push_str(&item);
        line += item.len();
    }
    format!("{EXAMPLES}\n\n{FIRST_STEP}\n\n{codes}")
}

/// The files freeroute reads and writes, with what each holds.
pub const FILES: &[(&str, &str)] = &[
    (
        "$XDG_CONFIG_HOME/freeroute/config.toml",
        "The config file (default ~/.config/freeroute/config.toml); --config or \
         FREEROUTE_CONFIG name another. `freeroute config init` writes a commented one; none \
         is needed when OPENROUTER_API_KEY is set.",
    ),
    (
        "$XDG_STATE_HOME/freeroute/state.json",
        "What the router remembers (default under ~/.local/state/freeroute/): success and \
         failure counts that fade with time, latency, cool-downs, capability misses, quota \
         windows. Updated under state.lock, written atomically; `freeroute stats` shows it, \
         `freeroute stats --reset` deletes it with the two files below.",
    ),
    (
        "$XDG_STATE_HOME/freeroute/requests.jsonl",
        "The request log: one JSON line per run (no prompt text unless log_prompts = true), \
         capped in size.",
    ),
    (
        "$XDG_STATE_HOME/freeroute/conversations.json",
        "The last answered conversation, for --continue.",
    ),
    (
        "$XDG_CACHE_HOME/freeroute/models-PROVIDER.json",
        "Each provider's model list (default under ~/.cache/freeroute/), kept catalog_ttl \
         seconds (3600); --refresh refetches, --offline uses it only.",
    ),
    (
        "$XDG_CACHE_HOME/freeroute/discovery.json",
        "Which loopback ports answered the last probe for local servers, kept 30 s.",
    ),
];

/// The environment variables freeroute reads, with what each does: the providers' key
/// variables from the preset table, then freeroute's own and the standard ones.
pub fn environment() -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for p in PRESETS {
        if let Some(key) = p.key_env {
            let with = p
                .account_env
                .map_or(String::new(), |a| format!(" (with {a})"));
            vars.push((
                key.to_string(),
                format!(
                    "Turns on the {} provider{with}; get a key at {}.",
                    p.name, p.signup
                ),
            ));
        }
        if let Some(account) = p.account_env {
            vars.push((
                account.to_string(),
                format!("The account the {} provider's URL names.", p.name),
            ));
        }
        if let Some(key) = p.optional_key_env {
            vars.push((
                key.to_string(),
                format!(
                    "An optional key for the keyless {} service (it answers without one).",
                    p.name
                ),
            ));
        }
    }
    let own: &[(&str, &str)] = &[
        (
            "any variable an api_key_env names",
            "The key of a provider of the config; such a provider is on only when it is set.",
        ),
        ("FREEROUTE_CONFIG", "The config file, as --config."),
        (
            "FREEROUTE_DISCOVER",
            "0 (or false, no, off) turns off the probing of loopback ports for local servers, \
             as [defaults] discover = false.",
        ),
        (
            "FREEROUTE_KEYLESS",
            "0 never uses the keyless services, 1 always puts them in the plan (ranked \
             last); unset, [defaults] keyless decides (\"auto\": only when nothing else has \
             a model).",
        ),
        (
            "FREEROUTE_SEED",
            "A fixed seed for the ranking's jitter (tests, simulations).",
        ),
        (
            "FREEROUTE_NOW_MS, FREEROUTE_CLOCK_RATE, FREEROUTE_WINDOW_MS",
            "Pin the memory's clock, run it faster, shorten the per-minute quota window \
             (tests and simulations only).",
        ),
        (
            "NO_COLOR",
            "Set to anything but the empty string: no colour on stderr (no-color.org).",
        ),
        (
            "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY",
            "Honoured for https providers. A plain-http provider (a loopback server) is \
             never reached through a proxy, which would see its key in the clear.",
        ),
        (
            "SSL_CERT_FILE, SSL_CERT_DIR",
            "A bundle and a folder of certificate authorities trusted besides the \
             system's and the built-in ones (Mozilla's set), as curl does; for a private \
             CA, [network] ca_file in the config does the same.",
        ),
        (
            "XDG_CONFIG_HOME, XDG_STATE_HOME, XDG_CACHE_HOME",
            "Where the files below live.",
        ),
    ];
    vars.extend(own.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind::*;

    #[test]
    fn every_exit_code_is_documented() {
        let documented: Vec<i32> = EXIT_STATUS.iter().map(|e| e.code).collect();
        let mut codes = vec![0];
        codes.extend(
            [
                Internal,
                Usage,
                NoEligibleModel,
                AllFailed,
                Deadline,
                Config,
                Interrupted,
            ]
            .map(|k| k.exit_code()),
        );
        assert_eq!(documented, codes);
    }

    #[test]
    fn every_key_variable_is_named() {
        let names: Vec<String> = environment().into_iter().map(|(k, _)| k).collect();
        for v in [
            "OPENROUTER_API_KEY",
            "GROQ_API_KEY",
            "CLOUDFLARE_ACCOUNT_ID",
            "LLM7_API_KEY",
        ] {
            assert!(names.iter().any(|n| n == v), "{v}: {names:?}");
        }
    }

    #[test]
    fn help_lines_are_wrapped() {
        assert!(after_help().lines().all(|l| l.chars().count() <= 100));
        assert!(after_help().contains("1 internal error"));
    }
}
