//! Waiting for a condition, never for a fixed time.

use std::{future::Future, time::Duration};

/// How often a condition is looked at again.
const RETRY: Duration = Duration::from_millis(20);

/// Waits until `check` gives `Some`, trying again every 20 ms, and fails
/// the test, saying `what` did not happen, after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(limit, check)
        .await
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

/// Waits until `check` gives `Some`, trying again every 20 ms: `None`
/// after `limit`, for a caller with more to say than [`eventually`].
pub async fn within<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(RETRY).await;
    }
}
