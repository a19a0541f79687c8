//! A TCP forwarder to the test broker that a test starts late and stops
//! when it likes: a broker that is not there yet, or goes away, for one
//! node, while the broker every other test uses runs on.

use crate::{broker::amqp_url, metrics::free_loopback_address};
use lapin::uri::AMQPUri;
use std::net::SocketAddr;
use tokio::{
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// A broker address that answers only while the proxy runs.
pub struct BrokerProxy {
    port: u16,
    broker: SocketAddr,
    uri: AMQPUri,
    running: Option<JoinHandle<()>>,
}

impl BrokerProxy {
    /// A free port for the proxy, on which nothing listens until
    /// [`start`](Self::start).
    pub fn reserve() -> Self {
        let port = free_loopback_address().port();
        let uri: AMQPUri = amqp_url().parse().expect("the test broker's URL");
        let broker = std::net::ToSocketAddrs::to_socket_addrs(&(
            uri.authority.host.as_str(),
            uri.authority.port,
        ))
        .expect("the broker's address")
        .next()
        .expect("the broker's address");
        BrokerProxy {
            port,
            broker,
            uri,
            running: None,
        }
    }

    /// The test broker's URL with the proxy's address.
    pub fn url(&self) -> String {
        let user = &self.uri.authority.userinfo;
        let vhost = match self.uri.vhost.as_str() {
            "/" => "%2f",
            vhost => vhost,
        };
        format!(
            "amqp://{}:{}@127.0.0.1:{}/{vhost}",
            user.username, user.password, self.port
        )
    }

    /// Listens and forwards every connection to the broker.
    pub async fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy's port is still free");
        let broker = self.broker;
        self.running = Some(tokio::spawn(async move {
            // Dropped with the task: stopping the proxy ends every
            // connection through it, as a broker that goes away would.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(broker).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and cuts every connection through the proxy.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
            let _ = running.await;
        }
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }
}
