//! A node answering deployers' status requests, on a task of its own:
//! a deployer takes answers only until they stop coming (30 ms after the
//! last), so a node must answer at once, even while it compiles a
//! version the stream just brought.

use crate::{
    node::functions::Served,
    registry::{
        self,
        report::{FunctionStatus, Identity, NodeStatus, STATUS_TYPE},
    },
    shared::{amqp, lock::lock},
};
use futures_util::StreamExt as _;
use lapin::{BasicProperties, Channel, Consumer, options::BasicPublishOptions};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

/// What a node says of itself, and where.
#[derive(Clone)]
pub(crate) struct Answerer {
    /// The registry's stream, whose events exchange carries the answers.
    pub(crate) stream: String,
    /// The channel the events exchange was declared on.
    pub(crate) channel: Channel,
    pub(crate) served: Served,
    pub(crate) identity: Identity,
}

impl Answerer {
    /// Answers every request `requests` brings until it ends or the
    /// handle is dropped, telling `asked` after each.
    pub(crate) fn answer_all(
        self,
        mut requests: Consumer,
        asked: Arc<Notify>,
    ) -> AbortOnDropHandle<()> {
        AbortOnDropHandle::new(tokio::spawn(async move {
            while let Some(Ok(request)) = requests.next().await {
                self.answer(&request.properties).await;
                asked.notify_one();
            }
        }))
    }

    /// Answers a status request with what this node serves, on the
    /// events exchange (see [`STATUS_TYPE`] for why not to its
    /// `reply_to`).
    async fn answer(&self, request: &BasicProperties) {
        let Some(request) = request.correlation_id().clone() else {
            return;
        };
        let functions = lock(&self.served)
            .values()
            .map(|function| FunctionStatus {
                name: function.name().to_owned(),
                queue: function.queue().to_owned(),
                current: function.live().current().digest().to_owned(),
                staged: function.live().staged(),
                in_flight: function.live().in_flight(),
                served: function.live().served(),
            })
            .collect();
        let status = NodeStatus {
            node: self.identity.node.clone(),
            host: self.identity.host.clone(),
            uptime_s: self.identity.started.elapsed().as_secs(),
            functions,
        };
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(STATUS_TYPE.into())
            .with_correlation_id(request);
        let body = serde_json::to_vec(&status).unwrap_or_default();
        let publish = self.channel.basic_publish(
            registry::events_exchange(&self.stream).into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        );
        let _ = tokio::time::timeout(amqp::ANSWER_TIMEOUT, publish).await;
    }
}
