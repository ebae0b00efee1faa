//! What a server process does at its edges, the same way in the node and
//! the coordinator: logging to stderr, and the stop signals.
//!
//! Invariants:
//! - the first SIGTERM or SIGINT turns the stop flag on (a graceful drain);
//!   the second exits at once with [`EXIT_CODE_FORCED`], whatever the drain
//!   is waiting for;
//! - logs go to stderr, filtered by `RUST_LOG` (default `info`), coloured
//!   only on a terminal.

use tokio::sync::watch;

/// The exit status after a second stop signal (128 + SIGINT, as shells do).
pub const EXIT_CODE_FORCED: i32 = 130;

/// Sets up `tracing` for a server binary; call once, first thing in `main`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Turns `stop` on at the first stop signal and exits the process with
/// [`EXIT_CODE_FORCED`] at the second, logging `forced_note` (what the
/// forced exit leaves behind). Run it as a task for the process's life.
pub async fn watch_signals(stop: watch::Sender<bool>, forced_note: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("stop signal: shutting down gracefully (send it again to exit at once)");
    let _ = stop.send(true);
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second stop signal: exiting now; {forced_note}");
    std::process::exit(EXIT_CODE_FORCED);
}

/// Resolves once `flag` is true (at once if it already is), or when its
/// sender is gone.
pub async fn wait_true(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}
