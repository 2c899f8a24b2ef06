//! Signals to one cancellation: the first SIGTERM or SIGINT starts a graceful stop; a second one
//! exits at once (nothing is lost: unacked messages go back to the queue and are recognised as
//! duplicates if they had committed).

use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Spawns the signal listener; `token` is cancelled on the first signal.
pub fn listen(token: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    Ok(tokio::spawn(async move {
        if let Some(sig) = signals.next().await {
            info!(
                signal = sig,
                "stopping: no new work is taken; jobs in flight finish"
            );
            token.cancel();
        }
        if let Some(sig) = signals.next().await {
            error!(
                signal = sig,
                "second signal: exiting now; unacked messages return to the queue"
            );
            std::process::exit(128 + sig);
        }
    }))
}
