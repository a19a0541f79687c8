//! The baseline of `cargo bench --bench rpc`: the plainest lapin RPC server
//! that does what our node does, minus WebAssembly and minus safety. It
//! replies n + 1 to each request, a task per delivery, prefetch 256, and
//! acks right after publishing, without waiting for a publisher confirm.
//!
//! `bare-echo-server QUEUE [AMQP_URL]`; prints `ready` to stderr once
//! consuming.

use futures_util::StreamExt as _;
use lapin::{
    BasicProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let queue = args
        .next()
        .expect("usage: bare-echo-server QUEUE [AMQP_URL]");
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://127.0.0.1:5672/%2f".into());

    // Through the node's own connect, so that an `amqps://` URL uses the
    // same TLS stack and the CA its query names.
    let connection = compute_host::shared::amqp::connect(&url).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(
            queue.as_str().into(),
            // Durable, as our node declares it: RabbitMQ 4.3 and later
            // refuse a queue that is neither durable nor exclusive.
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let mut requests = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    eprintln!("ready");

    while let Some(delivery) = requests.next().await {
        let delivery = delivery?;
        let channel = channel.clone();
        tokio::spawn(async move {
            let n: i64 = std::str::from_utf8(&delivery.data)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0);
            let (Some(reply_to), Some(correlation_id)) = (
                delivery.properties.reply_to(),
                delivery.properties.correlation_id(),
            ) else {
                return;
            };
            let properties = BasicProperties::default().with_correlation_id(correlation_id.clone());
            let _ = channel
                .basic_publish(
                    "".into(),
                    reply_to.clone(),
                    BasicPublishOptions::default(),
                    (n + 1).to_string().as_bytes(),
                    properties,
                )
                .await;
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        });
    }
    Ok(())
}
