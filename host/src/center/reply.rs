//! What a successful call returns, and how a reply delivery becomes one.

use super::CallError;
use crate::shared::wire::{self, batch};
use lapin::message::Delivery;

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The reply body: the function's result.
    pub body: Vec<u8>,
    /// What computed it.
    pub origin: Origin,
}

/// What answered a call, as far as the node says (a Python node says
/// nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The function's name (`x-function`).
    pub function: Option<String>,
    /// The exact module version (`x-module-digest`, `sha256:<hex>`).
    pub module: Option<String>,
}

/// A successful reply, and whether it is a batch's.
pub(super) struct Answered {
    pub(super) reply: Reply,
    pub(super) is_batch: bool,
}

/// The reply, or the error reply the node sent instead.
pub(super) fn into_reply(delivery: Delivery) -> Result<Answered, CallError> {
    let is_batch = batch::is_batch(&delivery.properties);
    let origin = Origin {
        function: wire::header_text(&delivery.properties, wire::FUNCTION_HEADER),
        module: wire::header_text(&delivery.properties, wire::MODULE_HEADER),
    };
    match wire::header_text(&delivery.properties, wire::ERROR_HEADER) {
        None => Ok(Answered {
            reply: Reply {
                body: delivery.data,
                origin,
            },
            is_batch,
        }),
        Some(kind) => Err(CallError::Remote {
            kind: kind.as_str().into(),
            message: String::from_utf8_lossy(&delivery.data).into_owned(),
            origin,
        }),
    }
}
