//! The TLS broker of `scripts/tls-broker.sh`: its addresses, its
//! certificates, and `rabbitmqctl` on it.

use std::{collections::HashMap, path::PathBuf, process::Command};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tls-broker.sh");

/// What `scripts/tls-broker.sh status` says of the running broker.
pub struct TlsBroker {
    /// Its `amqps://` URL, by the name its certificate holds (as guest).
    pub url: String,
    /// Its plain `amqp://` URL (as guest).
    pub plain_url: String,
    /// The folder of the certificates made for this run.
    certs: PathBuf,
    /// The common name of `client.pem`: the user it logs in as.
    pub client_name: String,
}

impl TlsBroker {
    /// The running broker; fails the test when there is none.
    pub fn get() -> TlsBroker {
        let status = Command::new(SCRIPT).arg("status").output().unwrap();
        let values: HashMap<String, String> = String::from_utf8_lossy(&status.stdout)
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once('=')?;
                Some((key.to_owned(), value.to_owned()))
            })
            .collect();
        let value = |key: &str| {
            values
                .get(key)
                .cloned()
                .unwrap_or_else(|| panic!("no TLS broker runs: scripts/tls-broker.sh start"))
        };
        TlsBroker {
            url: value("url"),
            plain_url: value("plain_url"),
            certs: value("certs").into(),
            client_name: value("client_name"),
        }
    }

    /// A certificate or key file of this run: `ca.pem`, `client.key`...
    pub fn file(&self, name: &str) -> PathBuf {
        self.certs.join(name)
    }

    /// The file's path as an argument or a URL parameter.
    pub fn path(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }
}

/// `rabbitmqctl ARGS...` on the TLS broker; its output.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = run_rabbitmqctl(args);
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `rabbitmqctl ARGS...` when cleaning up: a failure is printed, not a
/// panic, since a test that failed may be unwinding.
pub fn rabbitmqctl_to_clean_up(args: &[&str]) {
    let output = run_rabbitmqctl(args);
    if !output.status.success() {
        eprintln!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn run_rabbitmqctl(args: &[&str]) -> std::process::Output {
    Command::new(SCRIPT)
        .arg("ctl")
        .args(args)
        .output()
        .expect("scripts/tls-broker.sh runs")
}
