//! Where a node's functions come from. A source only says "function F now
//! has these bytes", "F cannot be read just now" or "F is gone"; compiling,
//! checking, swapping and serving are the same for every source (see
//! [`crate::node::functions`]).
//!
//! # Layout
//!
//! - `file`: one module file (`--module`), watched for new versions.
//! - `dir`: every module in a directory (`--modules`), watched for files
//!   that come, change and go.
//! - `registry`: the registry's stream (`--registry`), followed from its
//!   first offset; status requests are answered beside it.
//! - `signal`: SIGHUP, which makes the file source look at once.

pub(crate) mod dir;
pub(crate) mod file;
pub(crate) mod registry;
mod signal;

use crate::shared::sandbox::LimitsFile;
use tokio::sync::{mpsc, oneshot};

/// News about one function, from a source.
#[derive(Debug)]
pub(crate) struct Update {
    /// The function's name.
    pub(crate) function: String,
    /// What became of it.
    pub(crate) offer: Offer,
    /// Learns what the node made of it, for a source that reports.
    pub(crate) verdict: Option<oneshot::Sender<Verdict>>,
}

impl Update {
    pub(crate) fn new(function: String, offer: Offer) -> Self {
        Update {
            function,
            offer,
            verdict: None,
        }
    }
}

/// What the node made of an update: `Err` says why it serves nothing new.
pub(crate) type Verdict = Result<(), String>;

/// What a source says about a function.
#[derive(Debug)]
pub(crate) enum Offer {
    /// The function now has these bytes.
    Bytes(NewBytes),
    /// The function's module cannot be read just now (its file was
    /// deleted, say); the current version goes on serving.
    Unreadable { from: String, error: std::io::Error },
    /// The function is no longer to be served.
    Gone,
}

/// New bytes of a function, and where they come from.
#[derive(Debug)]
pub(crate) struct NewBytes {
    pub(crate) bytes: Vec<u8>,
    /// The limits file beside the module, if it has one: none means the
    /// node's limits.
    pub(crate) limits: Option<LimitsFile>,
    /// Where they were read, for the log.
    pub(crate) from: String,
    /// False while the bytes may be a write still in progress: a failure
    /// to load them is then only logged at debug level, and the source
    /// offers them again once they settle.
    pub(crate) settled: bool,
    /// Held for requests that pin them, not made current.
    pub(crate) stage: bool,
}

/// Where sources send their updates.
pub(crate) type Updates = mpsc::Sender<Update>;

/// Updates waiting to be applied before a source waits for room: each may
/// hold a whole module.
pub(crate) const QUEUED_UPDATES: usize = 16;
