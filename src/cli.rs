//! The command line of DESIGN §1 as clap types. This module only describes and parses
//! arguments: it reads no files and no environment beyond what clap itself does, and
//! nothing past `request.rs` imports it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Shell completions offer `names` (clap_complete reads a parser's possible values), but
/// any value is accepted: a provider the user adds in the config has a name of its own, and
/// a tool choice may name a function. `--help` does not list them (`hide_possible_values`).
#[derive(Clone)]
struct Offers(fn() -> Vec<&'static str>);

impl clap::builder::TypedValueParser for Offers {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            (self.0)()
                .into_iter()
                .map(clap::builder::PossibleValue::new),
        ))
    }
}

/// The names of the servers found on the usual loopback ports (`discover::name_for`).
const FOUND_SERVERS: [&str; 4] = ["ollama", "llamacpp", "lmstudio", "vllm"];

/// What `-p <TAB>` offers: the built-in providers and the usual local servers.
fn provider_names() -> Vec<&'static str> {
    crate::presets::PRESETS
        .iter()
        .map(|p| p.name)
        .chain(FOUND_SERVERS)
        .collect()
}

/// What `--tool-choice <TAB>` offers (a tool's name is accepted too).
fn tool_choices() -> Vec<&'static str> {
    vec!["auto", "none", "required"]
}

/// Answer a prompt with a free LLM, falling back across free models and providers.
#[derive(Debug, Parser)]
#[command(
    name = "freeroute",
    version,
    about,
    after_long_help = crate::manual::after_help(),
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub ask: AskArgs,

    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options every action takes.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Config file (default: $XDG_CONFIG_HOME/freeroute/config.toml)
    #[arg(long, value_name = "PATH", env = "FREEROUTE_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Print the routing trace on stderr
    #[arg(short = 'v', long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// No spinner, no notes on stderr (errors are still printed)
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
}

/// Which models may be used and how they are ordered; shared by the default action and
/// `models`.
#[derive(Debug, Args, Clone, Default)]
pub struct RouteArgs {
    /// Try exactly these models, in this order (repeatable)
    #[arg(short = 'm', long = "model", value_name = "ID")]
    pub models: Vec<String>,

    /// Only use these providers (repeatable)
    ///
    /// A built-in one (openrouter, groq, …), a found local server (ollama, llamacpp, …) or
    /// one of the config
    #[arg(short = 'p', long = "provider", value_name = "NAME", value_parser = Offers(provider_names), hide_possible_values = true)]
    pub providers: Vec<String>,

    /// Drop models whose id matches GLOB (`*` wildcard, repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Rank models whose id matches GLOB first (`*` wildcard, repeatable)
    #[arg(long, value_name = "GLOB")]
    pub prefer: Vec<String>,

    /// Permit models that are not free (never the default)
    #[arg(long)]
    pub allow_paid: bool,

    /// Refetch the model catalogs now
    #[arg(long, conflicts_with = "offline")]
    pub refresh: bool,

    /// Never touch the network for catalogs (use the cached copies)
    #[arg(long)]
    pub offline: bool,
}

/// The default action: answer one prompt.
#[derive(Debug, Args, Clone, Default)]
pub struct AskArgs {
    /// The prompt; words are joined by spaces. Piped stdin is read too and goes first
    #[arg(value_name = "PROMPT")]
    pub prompt: Vec<String>,

    #[command(flatten)]
    pub opts: AskOptions,
}

impl std::ops::Deref for AskArgs {
    type Target = AskOptions;
    fn deref(&self) -> &AskOptions {
        &self.opts
    }
}

impl std::ops::DerefMut for AskArgs {
    fn deref_mut(&mut self) -> &mut AskOptions {
        &mut self.opts
    }
}

/// The options of the default action, which `batch` applies to every item.
#[derive(Debug, Args, Clone, Default)]
pub struct AskOptions {
    #[command(flatten)]
    pub route: RouteArgs,

    /// System prompt
    #[arg(short = 's', long, value_name = "TEXT")]
    pub system: Option<String>,

    /// Attach an image of at most 20 MiB: a file, an http(s) URL, or - for image bytes on stdin (repeatable)
    #[arg(short = 'i', long = "image", value_name = "PATH|URL|-")]
    pub images: Vec<String>,

    /// Require image input
    #[arg(long)]
    pub vision: bool,

    /// Transcribe all text in the image(s) verbatim, nothing else
    #[arg(long)]
    pub ocr: bool,

    /// Translate the input; prints only the translation
    #[arg(long)]
    pub translate: bool,

    /// Target language of --translate [default: config translate_to, else English]
    #[arg(long, value_name = "LANG", requires = "translate")]
    pub to: Option<String>,

    /// Source language of --translate (detected when not given)
    #[arg(long, value_name = "LANG", requires = "translate")]
    pub from: Option<String>,

    /// OpenAI-style tool definitions (a JSON array, or an object with `tools`)
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,

    /// With --tools: auto, none, required, or a tool's name
    #[arg(long, value_name = "CHOICE", requires = "tools", value_parser = Offers(tool_choices), hide_possible_values = true)]
    pub tool_choice: Option<String>,

    /// Require a JSON answer matching this JSON Schema (a file, or inline JSON)
    #[arg(long, value_name = "FILE|JSON")]
    pub schema: Option<String>,

    /// Send a whole conversation (JSON array of messages); words become the last user message
    #[arg(long, value_name = "FILE|-", conflicts_with = "cont")]
    pub messages: Option<String>,

    /// Continue the last answered conversation
    #[arg(short = 'c', long = "continue", id = "cont")]
    pub cont: bool,

    /// Print one JSON result object instead of plain text
    #[arg(long)]
    pub json: bool,

    /// Print tokens as they arrive (default when stdout is a terminal)
    #[arg(long, conflicts_with = "no_stream")]
    pub stream: bool,

    /// Print the answer only once it is complete (default when stdout is not a terminal)
    #[arg(long)]
    pub no_stream: bool,

    /// Most tokens to generate
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,

    /// Sampling temperature
    #[arg(long, value_name = "X")]
    pub temperature: Option<f32>,

    /// Deadline for the whole run, in seconds [default: 120]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Most candidates to try [default: 8]
    #[arg(long, value_name = "N")]
    pub attempts: Option<u32>,

    /// Send to the N best candidates at once; the first to produce a token wins [default: 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub race: Option<u32>,

    /// When the running attempt has no first token after MS, start the next candidate beside it
    #[arg(long, value_name = "MS")]
    pub hedge_after: Option<u64>,

    /// Route but send nothing: print the plan and why each model was kept or dropped
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer many prompts: JSONL (or plain lines) in, JSONL out
    Batch(Box<BatchArgs>),
    /// List eligible free models in the order they would be tried
    Models(ModelsArgs),
    /// What the router remembers: health, latency, cool-downs, quotas
    Stats(StatsArgs),
    /// Where the config lives, the merged view, or a commented starter file
    Config(ConfigArgs),
    /// Serve the OpenAI and Anthropic APIs locally, routed like a single run
    Serve(Box<ServeArgs>),
}

/// `freeroute serve` (DESIGN §8): the options of the default action that make sense for a
/// server are the defaults of every request.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:4020]; off loopback it needs --token-env
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,

    /// Environment variable holding the token clients must send (Bearer or x-api-key)
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,

    /// Requests answered at once; four times as many may wait [default: 64]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_concurrency: Option<u32>,

    /// Format of the request log on stderr
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub route: RouteArgs,

    /// Deadline of each request, in seconds [default: 120]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Most candidates each request tries [default: 8]
    #[arg(long, value_name = "N")]
    pub attempts: Option<u32>,

    /// When the running attempt has no first token after MS, start the next candidate beside it
    #[arg(long, value_name = "MS")]
    pub hedge_after: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per request
    Text,
    /// One JSON object per request
    Json,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Input: JSON objects ({"id", "prompt", "system", "image", "translate", "to", "schema",
    /// "max_tokens"}) or plain text lines, one per line; - or nothing for stdin
    #[arg(value_name = "FILE|-")]
    pub input: Option<String>,

    /// Write results here (appended as items finish; ids already answered are skipped)
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// Items in flight at once [default: 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: Option<u32>,

    /// Write results in input order (default: as they finish)
    #[arg(long)]
    pub ordered: bool,

    #[command(flatten)]
    pub opts: AskOptions,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,

    /// Forget everything remembered on this host (state, request log and conversations)
    #[arg(long)]
    pub reset: bool,

    /// With --reset: forget the memory shared in Redis instead (every host's)
    #[arg(long, requires = "reset")]
    pub shared: bool,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub route: RouteArgs,

    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[arg(value_enum)]
    pub action: ConfigAction,

    /// With `init`: overwrite an existing file
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigAction {
    /// Print the config file's path
    Path,
    /// Print the merged configuration (keys are never shown)
    Show,
    /// Write a commented starter config file
    Init,
}

/// A one-word prompt that is a subcommand's name mistyped (`freeroute model`) is a usage
/// slip, not a question: exit 2 saying which command was meant. Words after `--` are
/// always a prompt.
pub fn subcommand_typo(prompt: &[String]) -> crate::error::Result<()> {
    use clap::CommandFactory;
    let [word] = prompt else {
        return Ok(());
    };
    let after_dashes = std::env::args_os().skip(1).any(|a| a == "--");
    if after_dashes || word.chars().count() < 4 || word.contains(char::is_whitespace) {
        return Ok(());
    }
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    let close = names
        .iter()
        .map(|n| (crate::output::explain::edit_distance(word, n), n))
        .filter(|(d, _)| *d <= 2)
        .min();
    match close {
        Some((_, name)) => Err(crate::error::Error::usage(format!(
            "`{word}` is not a subcommand: did you mean `freeroute {name}`?"
        ))
        .with_hint(format!("To send it as a prompt: `freeroute -- {word}`"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_found_servers_are_named_as_discovery_names_them() {
        let named: Vec<String> = crate::discover::DEFAULT_PORTS
            .iter()
            .map(|&p| crate::discover::name_for(p))
            .collect();
        assert_eq!(named, FOUND_SERVERS);
    }

    #[test]
    fn completed_values_are_offered_but_any_is_taken() {
        let cli = Cli::try_parse_from(["freeroute", "-p", "my-gateway", "q"]).unwrap();
        assert_eq!(cli.ask.route.providers, vec!["my-gateway"]);
        let cli = Cli::try_parse_from([
            "freeroute",
            "--tools",
            "t.json",
            "--tool-choice",
            "get_weather",
            "q",
        ])
        .unwrap();
        assert_eq!(cli.ask.tool_choice.as_deref(), Some("get_weather"));
    }

    #[test]
    fn words_after_double_dash_are_a_prompt() {
        let cli = Cli::try_parse_from(["freeroute", "--", "models"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.ask.prompt, vec!["models"]);
    }

    #[test]
    fn subcommand_is_recognised() {
        let cli = Cli::try_parse_from(["freeroute", "models", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Models(ModelsArgs { json: true, .. }))
        ));
    }

    #[test]
    fn prompt_words_and_repeatable_flags() {
        let cli = Cli::try_parse_from([
            "freeroute",
            "-m",
            "a",
            "-m",
            "b",
            "--exclude",
            "x*",
            "hello",
            "world",
        ])
        .unwrap();
        assert_eq!(cli.ask.route.models, vec!["a", "b"]);
        assert_eq!(cli.ask.route.exclude, vec!["x*"]);
        assert_eq!(cli.ask.prompt, vec!["hello", "world"]);
    }

    #[test]
    fn flags_after_the_prompt_are_flags() {
        let cli = Cli::try_parse_from(["freeroute", "hello", "--json", "-m", "x"]).unwrap();
        assert!(cli.ask.json);
        assert_eq!(cli.ask.route.models, vec!["x"]);
        assert_eq!(cli.ask.prompt, vec!["hello"]);
        let cli = Cli::try_parse_from(["freeroute", "--", "what", "is", "-5"]).unwrap();
        assert_eq!(cli.ask.prompt, vec!["what", "is", "-5"]);
    }

    #[test]
    fn stream_flags_conflict() {
        assert!(Cli::try_parse_from(["freeroute", "--stream", "--no-stream", "x"]).is_err());
        assert!(Cli::try_parse_from(["freeroute", "--refresh", "--offline", "x"]).is_err());
    }

    #[test]
    fn global_flags_work_before_and_after_subcommand() {
        let cli =
            Cli::try_parse_from(["freeroute", "--config", "x.toml", "config", "init"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Config(_))));
        let cli = Cli::try_parse_from(["freeroute", "-q", "models"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Models(_))));
        let cli = Cli::try_parse_from(["freeroute", "hello", "models"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.ask.prompt, vec!["hello", "models"]);
        let cli = Cli::try_parse_from(["freeroute", "config", "path", "-v"]).unwrap();
        assert!(cli.global.verbose);
    }
}
