//! `amqps://` end to end: a node and a center over TLS, each
//! certificate failure said in one line, client-certificate logins.
//!
//! The broker and its certificates are new for each run
//! (`scripts/tls-broker.sh start`), and its data goes when it stops, so
//! the queues made here are not deleted one by one.

use crate::broker::{TlsBroker, rabbitmqctl, rabbitmqctl_to_clean_up};
use compute_host::{Center, CenterOptions, shared::amqp::TlsOptions};
use std::time::Duration;
use testkit::{
    ServerProcess, center_command, compute_command, increase_module, run_to_end, unique_queue,
};

/// The CA of the run, for every client here.
fn trusting(broker: &TlsBroker) -> TlsOptions {
    TlsOptions {
        ca: Some(broker.file("ca.pem")),
        ..TlsOptions::default()
    }
}

/// A node serving increase on `queue`, connected with `args`.
async fn node(queue: &str, args: &[&str]) -> ServerProcess {
    let mut command = compute_command();
    command
        .args(["--queue", queue, "--module"])
        .arg(increase_module())
        .args(args);
    ServerProcess::compute(&mut command).await
}

/// A node serving increase on `queue`, trusting the run's CA.
async fn trusting_node(broker: &TlsBroker, queue: &str) -> ServerProcess {
    let ca = broker.path("ca.pem");
    node(queue, &["--amqp-url", &broker.url, "--tls-ca", &ca]).await
}

/// `center ARGS... 1` run to its end: its exit code and its stderr.
async fn center_cli(args: &[&str]) -> (i32, String) {
    let output = run_to_end(
        center_command()
            .args(args)
            .args(["--connect-timeout", "5", "1"]),
        Duration::from_secs(30),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

/// A node given the CA with `--tls-ca` and a center given it through the
/// library serve a call over TLS, and the broker lists both connections
/// as TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scripts/tls-broker.sh start; scripts/test.sh runs it"]
async fn a_node_and_a_center_compute_over_tls() {
    let broker = TlsBroker::get();
    let queue = unique_queue("tls");
    let _node = trusting_node(&broker, &queue).await;
    let options = CenterOptions {
        queue: queue.clone(),
        tls: trusting(&broker),
        ..CenterOptions::default()
    };
    let center = Center::connect_with(&broker.url, options).await.unwrap();
    let reply = center.call(b"41").await.unwrap();
    assert_eq!(reply.body, b"42");

    let connections = rabbitmqctl(&[
        "list_connections",
        "--no-table-headers",
        "ssl",
        "ssl_protocol",
    ]);
    let rows: Vec<&str> = connections
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    println!("rabbitmqctl list_connections ssl ssl_protocol:\n{connections}");
    assert!(
        rows.len() >= 2,
        "the node and the center are connected: {connections}"
    );
    assert!(
        rows.iter().all(|row| row.starts_with("true")),
        "every connection is TLS: {connections}"
    );
    center.close().await;
}

/// The CA, the host name and the client certificate each fail in one
/// line that says which and what to do, with exit status 2, before any
/// call; the CA given in the URL's own query works like `--tls-ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scripts/tls-broker.sh start; scripts/test.sh runs it"]
async fn each_certificate_failure_says_which_in_one_line() {
    let broker = TlsBroker::get();
    let queue = unique_queue("tls.failures");
    let _node = trusting_node(&broker, &queue).await;
    let q = ["--queue", queue.as_str()];
    let (ca, other_ca) = (broker.path("ca.pem"), broker.path("other-ca.pem"));
    let (other_cert, other_key) = (
        broker.path("other-client.pem"),
        broker.path("other-client.key"),
    );
    let by_address = broker.url.replace("localhost", "127.0.0.1");
    let plain_port = broker.plain_url.replace("amqp://", "amqps://");
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "the system's CAs",
            vec!["--amqp-url", &broker.url],
            "not signed by a CA this client trusts (the system's CAs)",
        ),
        (
            "another CA",
            vec!["--amqp-url", &broker.url, "--tls-ca", &other_ca],
            "not signed by a CA this client trusts (the CAs in",
        ),
        (
            "the address, not the certificate's name",
            vec!["--amqp-url", &by_address, "--tls-ca", &ca],
            "is not for \"127.0.0.1\" but for localhost",
        ),
        (
            "a client certificate of another CA",
            vec![
                "--amqp-url",
                &broker.url,
                "--tls-ca",
                &ca,
                "--tls-cert",
                &other_cert,
                "--tls-key",
                &other_key,
            ],
            // The broker's alert, or, when the client only sees the
            // connection reset after it, the likely cause.
            "client's certificate",
        ),
        (
            "amqps:// to the plain port",
            vec!["--amqp-url", &plain_port, "--tls-ca", &ca],
            "the broker does not answer in TLS",
        ),
    ];
    for (case, args, expected) in cases {
        let (code, stderr) = center_cli(&[&q[..], &args[..]].concat()).await;
        println!("{case}: {stderr}");
        assert_eq!(code, 2, "{case}: {stderr}");
        assert!(stderr.contains(expected), "{case}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("center: cannot reach RabbitMQ"),
            "{case}: {stderr}"
        );
    }

    let in_query = format!("{}?cacertfile={}", broker.url, ca);
    let (code, stderr) = center_cli(&["--queue", &queue, "--amqp-url", &in_query]).await;
    assert_eq!(code, 0, "cacertfile= in the URL: {stderr}");
    let unverified = format!("{by_address}?verify=verify_none");
    let (code, stderr) = center_cli(&["--queue", &queue, "--amqp-url", &unverified]).await;
    assert_eq!(code, 0, "verify=verify_none: {stderr}");
    assert_eq!(
        stderr
            .matches("without verifying the broker's certificate")
            .count(),
        1,
        "verify_none is warned about once: {stderr}"
    );

    let mut refused = compute_command();
    refused
        .args(["--queue", &queue, "--amqp-url", &broker.url, "--tls-ca"])
        .arg(broker.file("other-ca.pem"))
        .arg("--module")
        .arg(increase_module());
    let output = run_to_end(&mut refused, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not signed by a CA this client trusts"),
        "{stderr}"
    );
}

/// With `auth_mechanism=external`, the broker logs in the user its
/// client certificate names, with no password anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scripts/tls-broker.sh start; scripts/test.sh runs it"]
async fn a_client_certificate_logs_in_without_a_password() {
    let broker = TlsBroker::get();
    let user = broker.client_name.as_str();
    rabbitmqctl(&["add_user", user, &uuid::Uuid::new_v4().to_string()]);
    let _user = RemovedUser(user.to_owned());
    rabbitmqctl(&["clear_password", user]);
    rabbitmqctl(&["set_permissions", "-p", "/", user, ".*", ".*", ".*"]);
    let queue = unique_queue("tls.external");
    let passwordless = broker
        .url
        .replace("guest:guest@", "")
        .replace("/%2f", "/%2f?auth_mechanism=external");
    let (ca, cert, key) = (
        broker.path("ca.pem"),
        broker.path("client.pem"),
        broker.path("client.key"),
    );
    let certificate = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    let _node = node(
        &queue,
        &[&["--amqp-url", &passwordless][..], &certificate[..]].concat(),
    )
    .await;

    let options = CenterOptions {
        queue: queue.clone(),
        tls: TlsOptions {
            ca: Some(broker.file("ca.pem")),
            cert: Some(broker.file("client.pem")),
            key: Some(broker.file("client.key")),
        },
        ..CenterOptions::default()
    };
    let center = Center::connect_with(&passwordless, options).await.unwrap();
    assert_eq!(center.call(b"1").await.unwrap().body, b"2");
    let connections = rabbitmqctl(&[
        "list_connections",
        "--no-table-headers",
        "user",
        "auth_mechanism",
        "ssl",
    ]);
    println!("rabbitmqctl list_connections user auth_mechanism ssl:\n{connections}");
    let logins = connections
        .lines()
        .filter(|line| *line == format!("{user}\tEXTERNAL\ttrue"))
        .count();
    assert_eq!(
        logins, 2,
        "the node and the center log in by certificate: {connections}"
    );
    center.close().await;

    let (code, stderr) = center_cli(&[
        "--queue",
        &queue,
        "--amqp-url",
        &passwordless,
        "--tls-ca",
        &ca,
    ])
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("auth_mechanism=external logs in with a client certificate"),
        "{stderr}"
    );
}

/// Deletes a broker user however the test ends.
struct RemovedUser(String);

impl Drop for RemovedUser {
    fn drop(&mut self) {
        rabbitmqctl_to_clean_up(&["delete_user", &self.0]);
    }
}
