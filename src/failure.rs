//! How a command fails, and the exit code that says so: 2 for what the operator must fix before
//! anything can run (settings, the key, the protocols, a refused command line), 1 for everything
//! that went wrong while running.

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The operator's to fix: nothing was attempted. Exit code 2.
    #[error("{0}")]
    Setup(String),
    /// Something failed while running. Exit code 1.
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl Failure {
    pub fn setup(message: impl Into<String>) -> Failure {
        Failure::Setup(message.into())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Setup(_) => 2,
            Failure::Runtime(_) => 1,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::Setup(e.to_string())
    }
}

/// Turns any error of a running command into a runtime failure: `result.map_err(runtime)?`.
pub fn runtime(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Runtime(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_problems_exit_2_and_runtime_problems_exit_1() {
        assert_eq!(Failure::setup("no key").exit_code(), 2);
        assert_eq!(
            Failure::from(ConfigError::Invalid("workers".into())).exit_code(),
            2
        );
        assert_eq!(runtime(anyhow::anyhow!("broker gone")).exit_code(), 1);
    }
}
