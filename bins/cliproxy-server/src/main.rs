//! `cliproxy-server`: the command line. Parsing, exit codes and dispatch only; each
//! subcommand lives in its own module and the gateway itself in `cliproxy-gateway`.

mod audit_cmd;
mod check;
mod cli;
mod commands;
mod demo_tls;
mod logging;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: the gateway allocates and frees many small
/// objects per request, often on another thread than the one that allocated them (the audit
/// and log threads), where glibc's malloc spent a sixth of the request path's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
