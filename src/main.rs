//! The `edc-ingest` binary: parses the command line and hands it to `cli::start`, which runs one
//! command. Exit codes: 0 success, 1 runtime failure, 2 configuration error or a command line
//! refused.

#![forbid(unsafe_code)]

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::start(cli::Cli::parse())
}
