//! `compute`: serve compute functions, from a module file, a directory or
//! the registry; and the registry's commands (`compute deploy`, ...).

use super::{
    broker::BrokerArgs,
    registry::RegistryCommand,
    sandbox::{CacheArgs, LimitArgs},
};
use crate::{
    node::{self, NodeConfig, Source, ack_mode::AckMode},
    registry::{self, signing::Trust},
    shared::{
        amqp,
        queues::{self, QueueType},
        trace::Tracer,
    },
};
use anyhow::Context as _;
use clap::Parser;
use std::{path::PathBuf, process::ExitCode, time::Duration};

/// What `compute` does instead of serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a module on inputs in the node's sandbox, with the node's
    /// limits and no broker, and print what a center would.
    Call(super::call::CallArgs),
    #[command(flatten)]
    Registry(RegistryCommand),
}

/// A compute node: answers RabbitMQ requests with a WebAssembly function.
#[derive(Debug, Parser)]
#[command(
    name = "compute",
    version,
    args_conflicts_with_subcommands = true,
    after_help = AFTER_HELP
)]
pub struct ComputeArgs {
    /// A command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The compute module (a WebAssembly component) to serve; a relative
    /// PATH is relative to the current directory. The file is watched: a
    /// new version written there (best by renaming a finished file over
    /// it) is swapped in without a restart, and SIGHUP reads it at once.
    #[arg(long, value_name = "PATH", default_value = "modules/increase.wasm")]
    pub module: PathBuf,

    /// The queue to take requests from.
    #[arg(long, value_name = "NAME", default_value = queues::DEFAULT_QUEUE)]
    pub queue: String,

    /// Serve every `*.wasm` in DIR instead of one module, each on queue
    /// `<queue-prefix>.<name>` (name = file stem). Files added, replaced
    /// or removed later are served, swapped or stopped without a restart.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["module", "queue"])]
    pub modules: Option<PathBuf>,

    /// Serve every function of the registry stream NAME (default
    /// `compute.modules`), each on `<queue-prefix>.<name>`: what `compute
    /// deploy` publishes, promotes, rolls back and removes, read from the
    /// stream's start and then followed live.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = registry::DEFAULT_STREAM, conflicts_with_all = ["module", "queue", "modules"])]
    pub registry: Option<String>,

    /// A public key (`compute keygen` writes one as FILE.pub) whose
    /// signed versions the node serves from the registry. Repeatable.
    #[arg(long, value_name = "FILE", requires = "registry")]
    pub trusted_key: Vec<PathBuf>,

    /// The broker and vhost the registry is on, when not the node's own
    /// (`--amqp-url`): a vhost of its own keeps callers and nodes from
    /// writing to the stream, which they could through the default
    /// exchange in a shared vhost. The `--tls-*` files apply to it too.
    /// Also from `COMPUTE_REGISTRY_URL`.
    #[arg(
        long,
        value_name = "URL",
        env = "COMPUTE_REGISTRY_URL",
        requires = "registry",
        hide_env_values = true
    )]
    pub registry_url: Option<amqp::Redacted>,

    /// Serve unsigned registry versions: anyone who can publish to the
    /// registry then runs code on this node.
    #[arg(long, requires = "registry", conflicts_with = "trusted_key")]
    pub allow_unsigned: bool,

    /// How the queues are declared: `classic`, durable on one broker node
    /// (a queue that exists already, a Python peer's say, is used as it
    /// is); `quorum`, durable and replicated across a RabbitMQ cluster,
    /// with a delivery limit and a dead-letter queue; or `transient`, not
    /// durable, exactly as the Python examples declare it (refused by
    /// RabbitMQ 4.3 and later unless their operator permits it).
    #[arg(long, value_name = "TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,

    /// With `--queue-type quorum`: a request delivered this many times
    /// more (its node died each time) goes to the dead-letter queue
    /// [default: 5].
    #[arg(long, value_name = "N")]
    pub delivery_limit: Option<u32>,

    /// With `--queue-type quorum`: where requests past the delivery limit
    /// go (declared too); default `<queue>.dead` for each queue.
    #[arg(long, value_name = "NAME")]
    pub dead_letter_queue: Option<String>,

    /// When to ack a request: `on-confirm`, once the broker confirmed its
    /// reply, or `on-publish`, once the reply is written. Default:
    /// `on-confirm` for quorum queues, `on-publish` for classic ones (the
    /// book's "Ack modes", in docs/src/wire-format.md, says what each guarantees).
    #[arg(long, value_name = "MODE", value_enum)]
    pub ack_mode: Option<AckMode>,

    /// The prefix of the queues of `--modules` and `--registry`.
    #[arg(long, value_name = "PREFIX", default_value = queues::DEFAULT_PREFIX)]
    pub queue_prefix: String,

    #[command(flatten)]
    pub broker: BrokerArgs,

    /// At start, how long to keep trying a broker that does not answer, in
    /// seconds, waiting longer after each try; without it the node tries
    /// until the broker answers. A refused login fails at once.
    #[arg(long, value_name = "SECS", value_parser = super::parse_seconds)]
    pub connect_timeout: Option<Duration>,

    /// Requests of each function taken from the broker at once; also the
    /// requests computed at once, across every function.
    #[arg(long, value_name = "N", default_value_t = node::DEFAULT_PREFETCH, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,

    /// What one request may use in the guest.
    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// Serve Prometheus metrics on this address (`GET /metrics`), for
    /// example `127.0.0.1:9464` or `localhost:9464`.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_address)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// How logs are written to stderr: `text`, or `json`, one object per
    /// line.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = super::LogFormat::Text)]
    pub log_format: super::LogFormat,
}

impl ComputeArgs {
    /// The node configuration these arguments describe.
    ///
    /// # Errors
    ///
    /// When a trusted key cannot be read, or `--registry` is given with
    /// neither `--trusted-key` nor `--allow-unsigned`.
    pub fn config(&self) -> anyhow::Result<NodeConfig> {
        let source = match (&self.registry, &self.modules) {
            (Some(stream), _) => Source::Registry {
                stream: stream.clone(),
                queue_prefix: self.queue_prefix.clone(),
                trust: self.trust()?,
                url: self.registry_url.as_ref().map(|url| url.0.clone()),
            },
            (None, Some(dir)) => Source::Dir {
                path: dir.clone(),
                queue_prefix: self.queue_prefix.clone(),
            },
            (None, None) => Source::Module {
                path: self.module.clone(),
                queue: self.queue.clone(),
            },
        };
        Ok(NodeConfig {
            source,
            amqp_url: self.broker.urls(),
            tls: self.broker.tls(),
            prefetch: self.prefetch,
            limits: self.limits.limits(),
            metrics_addr: self.metrics_addr,
            connect_timeout: self.connect_timeout,
            queue_type: self.queue_type()?,
            ack_mode: self.ack_mode,
            compile_cache: self.cache.settings(),
            // Read from the environment by `run`, which starts its
            // export on the runtime.
            tracer: Tracer::off(),
        })
    }

    fn queue_type(&self) -> anyhow::Result<QueueType> {
        if !self.queue_type.is_quorum() {
            anyhow::ensure!(
                self.delivery_limit.is_none() && self.dead_letter_queue.is_none(),
                "--delivery-limit and --dead-letter-queue are for quorum queues: add --queue-type quorum"
            );
            return Ok(self.queue_type.clone());
        }
        Ok(QueueType::Quorum {
            delivery_limit: self
                .delivery_limit
                .unwrap_or(queues::DEFAULT_DELIVERY_LIMIT),
            dead_letter_queue: self.dead_letter_queue.clone(),
        })
    }

    fn trust(&self) -> anyhow::Result<Trust> {
        if self.allow_unsigned {
            tracing::warn!(
                "--allow-unsigned: anyone who can publish to the registry runs code on this node"
            );
            return Ok(Trust::Anyone);
        }
        anyhow::ensure!(
            !self.trusted_key.is_empty(),
            "--registry serves only versions signed by a key it trusts: give --trusted-key FILE (see `compute keygen`), or --allow-unsigned to serve anything published to the registry"
        );
        Trust::keys(&self.trusted_key).context("cannot read a trusted key")
    }
}

/// What `compute --help` ends with.
const AFTER_HELP: &str = "\
Logs go to stderr; RUST_LOG sets what is logged, for example
RUST_LOG=compute_host=debug for a line per request.

Exit status: 0 after a clean stop (Ctrl-C or SIGTERM: the requests in
flight are answered first), 2 when the node cannot start (a broker that
does not answer is tried again until --connect-timeout, if given).

Examples:
  compute --module modules/increase.wasm
  compute --modules modules/ --metrics-addr 127.0.0.1:9464
  compute --registry --trusted-key deployer.pub";

/// An address to listen on, `HOST:PORT`, the host a name or an IP.
fn parse_listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    let expected = || {
        format!(
            "expected HOST:PORT to listen on, such as 127.0.0.1:9464 or localhost:9464; got {text:?}"
        )
    };
    text.to_socket_addrs()
        .map_err(|err| format!("{}: {err}", expected()))?
        .next()
        .ok_or_else(expected)
}

/// Serves until Ctrl-C or SIGTERM, then drains and exits.
pub async fn run(args: ComputeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(Command::Call(call)) => return super::call::run(call).await,
        Some(Command::Registry(command)) => return super::registry::run(command).await,
        None => {}
    }
    let mut config = args.config()?;
    config.tracer = Tracer::from_env("compute")?;
    if let Source::Module { path, .. } = &config.source
        && path.is_relative()
        && !path.exists()
    {
        let here = std::env::current_dir().unwrap_or_default();
        anyhow::bail!(
            "no file {} (relative to the current directory, {}); give --module PATH",
            path.display(),
            here.display()
        );
    }
    node::run(config, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        ComputeArgs::command().debug_assert();
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let args = ComputeArgs::try_parse_from(["compute", "--amqp-url", "amqp://u:secret@h/%2f"])
            .unwrap();
        for debug in [format!("{args:?}"), format!("{:?}", args.config().unwrap())] {
            assert!(!debug.contains("secret"), "{debug}");
            assert!(debug.contains("amqp://u:***@h/%2f"), "{debug}");
        }
    }

    #[test]
    fn a_metrics_address_may_name_its_host() {
        let parse = |text: &str| {
            ComputeArgs::try_parse_from(["compute", "--metrics-addr", text])
                .map(|args| args.metrics_addr)
        };
        let local = parse("localhost:9464").unwrap().unwrap();
        assert!(local.ip().is_loopback() && local.port() == 9464, "{local}");
        assert_eq!(
            parse("0.0.0.0:9464").unwrap(),
            Some("0.0.0.0:9464".parse().unwrap())
        );
        let err = parse("9464").unwrap_err().to_string();
        assert!(err.contains("expected HOST:PORT"), "{err}");
    }

    #[test]
    fn quorum_settings_need_a_quorum_queue() {
        let config = |args: &[&str]| {
            let argv = ["compute"].iter().chain(args).copied();
            ComputeArgs::try_parse_from(argv)
                .unwrap()
                .config()
                .map(|config| config.queue_type)
        };
        assert_eq!(config(&[]).unwrap(), QueueType::Classic);
        assert_eq!(
            config(&["--queue-type", "transient"]).unwrap(),
            QueueType::Transient
        );
        assert_eq!(
            config(&["--queue-type", "quorum"]).unwrap(),
            QueueType::Quorum {
                delivery_limit: queues::DEFAULT_DELIVERY_LIMIT,
                dead_letter_queue: None
            }
        );
        assert_eq!(
            config(&[
                "--queue-type",
                "quorum",
                "--delivery-limit",
                "2",
                "--dead-letter-queue",
                "dead"
            ])
            .unwrap(),
            QueueType::Quorum {
                delivery_limit: 2,
                dead_letter_queue: Some("dead".into())
            }
        );
        for args in [
            &["--delivery-limit", "2"][..],
            &["--queue-type", "transient", "--dead-letter-queue", "dead"],
        ] {
            let err = config(args).unwrap_err().to_string();
            assert!(err.contains("add --queue-type quorum"), "{err}");
        }
    }

    #[test]
    fn the_default_queue_is_the_python_examples_queue() {
        let args = ComputeArgs::try_parse_from(["compute"]).unwrap();
        assert_eq!(args.queue, queues::DEFAULT_QUEUE);
        assert_eq!(args.config().unwrap().limits.memory, 64 << 20);
    }
}
