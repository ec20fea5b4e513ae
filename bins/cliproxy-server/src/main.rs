//! `cliproxy-server`: the command line. Parsing, exit codes and dispatch only; each
//! subcommand lives in its own module, the configuration and the composition in the
//! library (`lib.rs`), and the gateway itself in `cliproxy-gateway`.

mod audit_cmd;
mod check;
mod cli;
mod commands;
mod config_load;
mod demo_tls;
mod failure;
mod keys_cmd;
mod logging;
mod state_open;
mod usage_cmd;

use std::process::ExitCode;

use clap::Parser;
use cliproxy_server::{compose, config};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("cliproxy-server: {:#}", failure.error);
            ExitCode::from(failure.exit_code)
        }
    }
}
