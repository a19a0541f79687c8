//! Locking a mutex that a panic may have poisoned.
//!
//! Every mutex in this crate guards data that each critical section leaves
//! consistent (an insert, a remove, a counter), and no code panics while
//! holding one; so a poisoned lock still holds good data, and taking it
//! is better than spreading one panic to every request.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
