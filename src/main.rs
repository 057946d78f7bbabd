//! Parse, run, exit with the code `error.rs` picks. No logic here.

use clap::Parser;

fn main() {
    let code = match freeroute::cli::Cli::try_parse() {
        Ok(cli) => freeroute::app::run(cli),
        Err(err) => freeroute::app::bad_command_line(&err),
    };
    std::process::exit(code);
}
