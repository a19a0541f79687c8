//! The broker the tests talk to, and the queues they leave behind none of.

use compute_host::{Center, CenterOptions, shared::amqp};
use lapin::{
    Connection,
    options::{QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use std::time::Duration;
use uuid::Uuid;

/// The broker the tests talk to (`AMQP_URL`, or the local default).
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| amqp::DEFAULT_URL.to_owned())
}

/// A queue name no other test uses.
pub fn unique_queue(test: &str) -> String {
    format!("test.{test}.{}", Uuid::new_v4())
}

/// A center for `queue` with a per-call `timeout`.
pub async fn center(queue: &str, timeout: Duration) -> Center {
    let options = CenterOptions {
        queue: queue.to_owned(),
        timeout,
        ..CenterOptions::default()
    };
    Center::connect_with(&amqp_url(), options)
        .await
        .expect("center connects")
}

/// Declares `queue` as a node would, with nobody consuming it.
pub async fn declare_queue(queue: &str) {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "OK".into()).await;
}

/// Whether the broker refuses a queue that is neither durable nor
/// exclusive, the Python examples' own declaration: RabbitMQ 4.3 and
/// later do as upstream ships them (the deprecated feature
/// `transient_nonexcl_queues`), 3.x does not.
pub async fn refuses_transient_queues() -> bool {
    let queue = unique_queue("probe-transient");
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    let refused = match declared {
        Ok(_) => false,
        Err(err) => {
            assert!(
                matches!(err.kind(), lapin::ErrorKind::ProtocolError(_)),
                "the broker did not answer the probe: {err}"
            );
            true
        }
    };
    let _ = connection.close(200, "OK".into()).await;
    delete_queue(&queue).await;
    refused
}

/// How many messages wait in `queue`, not yet delivered to a consumer.
pub async fn ready_messages(queue: &str) -> u32 {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "OK".into()).await;
    declared.message_count()
}

/// Deletes a test queue so runs leave nothing behind on the broker.
pub async fn delete_queue(queue: &str) {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "OK".into()).await;
}

pub(crate) async fn connect() -> Connection {
    amqp::connect(&amqp_url()).await.expect("broker reachable")
}

/// Deletes its queues when dropped, so a test that fails (panics) leaves
/// nothing behind on the broker either.
#[derive(Default)]
pub struct QueueGuard {
    queues: Vec<String>,
}

impl QueueGuard {
    /// A guard for `queues`.
    pub fn new(queues: impl IntoIterator<Item = String>) -> Self {
        QueueGuard {
            queues: queues.into_iter().collect(),
        }
    }

    /// Deletes `queue` too when dropped.
    pub fn add(&mut self, queue: impl Into<String>) {
        self.queues.push(queue.into());
    }
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        delete_now(std::mem::take(&mut self.queues));
    }
}

/// Deletes `queues` from a drop: `Drop` cannot await and may run on a
/// runtime thread while a test unwinds, so a thread with a runtime of its
/// own does it, and the drop waits for it.
pub(crate) fn delete_now(queues: Vec<String>) {
    if queues.is_empty() {
        return;
    }
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for deleting queues");
        runtime.block_on(async {
            for queue in &queues {
                delete_queue(queue).await;
            }
        });
    })
    .join();
}
