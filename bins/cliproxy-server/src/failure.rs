//! [`Failure`]: how every subcommand ends when it fails, with the exit code the process ends
//! with, so that `main` stays a dispatcher. A leaf: it imports none of the commands.

use cliproxy_gateway::ConfigError;

/// Exit code for a runtime failure.
pub(crate) const EXIT_RUNTIME: u8 = 1;
/// Exit code for a configuration error (EX_CONFIG from sysexits.h).
pub(crate) const EXIT_CONFIG: u8 = 78;

/// An error and the exit code it ends the process with.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: anyhow::Error,
    pub(crate) exit_code: u8,
}

impl Failure {
    pub(crate) fn config(error: impl Into<anyhow::Error>) -> Self {
        Self { error: error.into(), exit_code: EXIT_CONFIG }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        // Configuration problems found while building keep their own exit code.
        let exit_code = match error.downcast_ref::<cliproxy_gateway::Error>() {
            Some(cliproxy_gateway::Error::Config(_)) => EXIT_CONFIG,
            _ if error.is::<ConfigError>() => EXIT_CONFIG,
            _ if error.downcast_ref::<cliproxy_vault::Error>().is_some_and(|e| e.is_config()) => {
                EXIT_CONFIG
            }
            _ => EXIT_RUNTIME,
        };
        Self { error, exit_code }
    }
}

impl From<cliproxy_gateway::Error> for Failure {
    fn from(error: cliproxy_gateway::Error) -> Self {
        anyhow::Error::from(error).into()
    }
}
