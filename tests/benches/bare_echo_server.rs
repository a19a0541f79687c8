//! The baseline of `cargo bench --bench rpc`: the plainest lapin RPC server
//! that does what our node does, minus WebAssembly and minus safety. It
//! replies n + 1 to each request, a task per delivery, prefetch 256, and
//! acks right after publishing, without waiting for a publisher confirm.
//!
//! `bare-echo-server QUEUE [AMQP_URL] [--reply-headers] [--mandatory]
//! [--work-us=N]`; prints `ready` to stderr once consuming. With
//! `--reply-headers` its replies carry our node's `x-function` and
//! `x-module-digest`; with `--mandatory` they are published `mandatory`,
//! as our node's are: what each costs the broker and the client, apart
//! from our code. With `--work-us=N` it spins N µs on each request before
//! it replies, on the runtime's worker, where our node runs its guest, to
//! ask how the broker's own cost per call moves with a server's cost per
//! call (not used by the bench; run by hand).

use compute_host::shared::wire;
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
    const USAGE: &str =
        "usage: bare-echo-server QUEUE [AMQP_URL] [--reply-headers] [--mandatory] [--work-us=N]";
    let (flags, args): (Vec<String>, Vec<String>) = std::env::args()
        .skip(1)
        .partition(|arg| arg.starts_with("--"));
    if let Some(unknown) = flags.iter().find(|flag| {
        !matches!(flag.as_str(), "--reply-headers" | "--mandatory")
            && !flag.starts_with("--work-us=")
    }) {
        anyhow::bail!("unknown flag {unknown}; {USAGE}");
    }
    let reply_headers = flags.iter().any(|flag| flag == "--reply-headers");
    let mandatory = flags.iter().any(|flag| flag == "--mandatory");
    let work = flags
        .iter()
        .find_map(|flag| flag.strip_prefix("--work-us="))
        .map(|micros| micros.parse().expect("--work-us=N takes whole µs"))
        .map_or(std::time::Duration::ZERO, std::time::Duration::from_micros);
    let mut args = args.into_iter();
    let queue = args.next().expect(USAGE);
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://127.0.0.1:5672/%2f".into());
    // The length of a real module digest, `sha256:` and 64 hex digits.
    let digest = compute_host::shared::sandbox::digest(b"");

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
        let digest = digest.clone();
        tokio::spawn(async move {
            let spinning = std::time::Instant::now();
            while spinning.elapsed() < work {
                std::hint::spin_loop();
            }
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
            let properties = if reply_headers {
                wire::reply_properties(&delivery.properties, "increase", &digest, None, None)
            } else {
                BasicProperties::default().with_correlation_id(correlation_id.clone())
            };
            let options = BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            };
            let _ = channel
                .basic_publish(
                    "".into(),
                    reply_to.clone(),
                    options,
                    (n + 1).to_string().as_bytes(),
                    properties,
                )
                .await;
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        });
    }
    Ok(())
}
