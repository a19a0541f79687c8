//! Which broker to connect to and how: the arguments `compute`, `center`
//! and the registry commands share.

use crate::shared::amqp::{self, TlsOptions};
use clap::Args;
use std::path::PathBuf;

/// The broker and the TLS files for it.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The broker to connect to. Repeat it (or separate URLs with commas)
    /// for the nodes of a cluster: the first that answers, in random
    /// order, and any of them after a lost connection. `amqps://`
    /// connects over TLS and verifies the broker's certificate and host
    /// name; the query parameters of RabbitMQ's URI spec apply
    /// (`cacertfile`, `certfile`, `keyfile`, `verify`,
    /// `server_name_indication`, `auth_mechanism=external`).
    #[arg(long, value_name = "URL", env = "AMQP_URL", value_delimiter = ',', default_value = amqp::DEFAULT_URL, hide_env_values = true)]
    pub amqp_url: Vec<amqp::Redacted>,
    /// The CA certificates (PEM) that the broker's certificate must chain
    /// to, in place of the system's, for `amqps://` URLs.
    #[arg(long, value_name = "FILE", env = "AMQP_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a broker that asks for one;
    /// with `auth_mechanism=external` in the URL, the broker logs in the
    /// user it names.
    #[arg(long, value_name = "FILE", env = "AMQP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM, unencrypted).
    #[arg(long, value_name = "FILE", env = "AMQP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl BrokerArgs {
    /// The URLs, as the comma-separated list [`amqp::connect_with`] takes.
    pub fn urls(&self) -> String {
        amqp::Redacted::list(&self.amqp_url)
    }

    /// The TLS files given.
    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        }
    }
}
