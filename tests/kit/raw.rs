//! A bare AMQP client, the way a peer in another language talks to a node.

use crate::broker::connect;
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
};
use std::time::Duration;

/// A bare AMQP client, the way a peer in another language would talk to
/// the node: no [`Center`](compute_host::Center) in the way of what is on the wire.
pub struct RawClient {
    _connection: Connection,
    pub channel: Channel,
    pub reply_queue: String,
    replies: Consumer,
}

impl RawClient {
    pub async fn connect() -> Self {
        let connection = connect().await;
        let channel = connection.create_channel().await.unwrap();
        let reply_queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .name()
            .to_string();
        let replies =
            compute_host::shared::amqp::consume_no_ack(&channel, reply_queue.as_str().into())
                .await
                .unwrap();
        RawClient {
            _connection: connection,
            channel,
            reply_queue,
            replies,
        }
    }

    /// Publishes `body` to `queue` with `properties` as they are.
    pub async fn publish(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Sends one request the way the Python examples do, with this
    /// client's reply queue and an optional correlation id, and waits for
    /// the next reply.
    pub async fn request(
        &mut self,
        queue: &str,
        body: &[u8],
        correlation_id: Option<&str>,
    ) -> Delivery {
        let mut properties =
            BasicProperties::default().with_reply_to(self.reply_queue.as_str().into());
        if let Some(id) = correlation_id {
            properties = properties.with_correlation_id(id.into());
        }
        self.publish(queue, body, properties).await;
        self.next_reply().await
    }

    /// The next message on the reply queue.
    pub async fn next_reply(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(10), self.replies.next())
            .await
            .expect("a reply within 10 s")
            .expect("reply stream open")
            .expect("reply delivered")
    }
}
