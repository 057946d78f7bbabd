//! Parse, run, exit with the code `error.rs` picks. No logic here.

use clap::Parser;

fn main() {
    let cli = freeroute::cli::Cli::parse();
    std::process::exit(freeroute::app::run(cli));
}
