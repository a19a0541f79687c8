//! What nodes tell deployers: a report for each version they were given
//! (serving it, or why not), and their status when asked.

use serde::{Deserialize, Serialize};

/// The message type (AMQP `type`) of a [`Report`] on the events
/// exchange.
pub const REPORT_TYPE: &str = "compute.report";

/// The message type of a [`NodeStatus`] on the events exchange. A node
/// answers a status request there, with the request's correlation id,
/// rather than to its `reply_to`: publishing to a reply-to address goes
/// through the default exchange, and a user who may write to that may
/// write to every queue of the vhost, the stream included.
pub const STATUS_TYPE: &str = "compute.status";

/// What a node made of one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node's id, new at each start.
    pub node: String,
    /// The host it runs on.
    pub host: String,
    pub function: String,
    pub digest: String,
    /// `current` or `staged`.
    pub role: String,
    /// `serving` or `rejected`.
    pub outcome: String,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A node's answer to `compute status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub host: String,
    pub uptime_s: u64,
    pub functions: Vec<FunctionStatus>,
}

/// One function of a node, in its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStatus {
    pub name: String,
    pub queue: String,
    pub current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
    pub in_flight: u64,
    pub served: u64,
}

/// Who a node is, for its reports and status.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) node: String,
    pub(crate) host: String,
    pub(crate) started: std::time::Instant,
}

impl Identity {
    pub(crate) fn new() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        let id = uuid::Uuid::new_v4().simple().to_string();
        Identity {
            node: format!("{host}-{}", &id[..8]),
            host,
            started: std::time::Instant::now(),
        }
    }
}
