//! One cancellation token, fired by ctrl-c or SIGTERM, handed explicitly to
//! the server and every consumer.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Fires the token on the first ctrl-c or SIGTERM. If the process has not
/// exited `grace` later (a dependency that never answers can stall a
/// drain), it exits with status 1: orchestrators need a bounded stop, and
/// at-least-once delivery makes an abrupt exit safe.
pub fn on_signals(grace: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("failed to install the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutdown requested; finishing in-flight work"
        );
        fire.cancel();
        // A plain thread: it must fire even if the runtime is wedged.
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            tracing::error!(
                grace_secs = grace.as_secs(),
                "shutdown did not finish in time; exiting"
            );
            std::process::exit(1);
        });
    });
    token
}
