//! SIGHUP, where the platform has it.

#[cfg(unix)]
pub(super) type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(super) type Hangup = Option<()>;

/// The process's SIGHUP, if it can be caught.
pub(super) fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Completes at the next SIGHUP; never, where there is none.
pub(super) async fn next(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        #[cfg(unix)]
        Some(signal) => signal.recv().await,
        _ => std::future::pending().await,
    }
}
