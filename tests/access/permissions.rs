//! Least privilege: the users of the book's "Users and permissions",
//! made by running its own `rabbitmqctl` lines (in vhosts and with names
//! of this test's own, removed afterwards), each doing its job and
//! refused the rest.

use crate::broker::{TlsBroker, rabbitmqctl, rabbitmqctl_to_clean_up};
use compute_host::shared::amqp;
use lapin::{
    BasicProperties, ErrorKind,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use std::{collections::HashMap, path::Path, process::Output, time::Duration};
use testkit::{
    ModuleDir, ServerProcess, built_module, center_command, compute_command, run_to_end,
};

const CHAPTER: &str = include_str!("../../docs/src/security.md");

/// The first line of the book's block of users.
const BLOCK: &str = "# Users for a node, a caller and a deployer";

/// The vhosts, users and passwords of one run, by the names the book
/// gives them; removed when dropped, however the test ends.
struct Users {
    names: HashMap<&'static str, String>,
    passwords: HashMap<&'static str, String>,
}

impl Users {
    /// Runs the book's lines, with this run's names.
    fn make() -> Users {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let names: HashMap<&'static str, String> = [
            "compute",
            "compute-registry",
            "compute-node",
            "compute-caller",
            "compute-deployer",
        ]
        .into_iter()
        .map(|name| (name, format!("{name}-{run}")))
        .collect();
        let passwords: HashMap<&'static str, String> =
            ["$NODE_PASSWORD", "$CALLER_PASSWORD", "$DEPLOYER_PASSWORD"]
                .into_iter()
                .map(|variable| (variable, uuid::Uuid::new_v4().to_string()))
                .collect();
        let users = Users { names, passwords };
        let lines = book_lines();
        assert!(lines.len() >= 8, "the book's block of users: {lines:?}");
        for line in lines {
            let words: Vec<String> = shell_words(&line)
                .into_iter()
                .skip(1)
                .map(|word| users.substitute(word))
                .collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            rabbitmqctl(&words);
        }
        users
    }

    /// A word of the book's lines, as this run has it.
    fn substitute(&self, word: String) -> String {
        if let Some(name) = self.names.get(word.as_str()) {
            return name.clone();
        }
        self.passwords.get(word.as_str()).cloned().unwrap_or(word)
    }

    /// The URL for `user` (a name of the book's) on `vhost`, on the broker's
    /// plain listener.
    fn url(&self, broker: &TlsBroker, user: &str, vhost: &str) -> String {
        let password = match user {
            "compute-node" => &self.passwords["$NODE_PASSWORD"],
            "compute-caller" => &self.passwords["$CALLER_PASSWORD"],
            _ => &self.passwords["$DEPLOYER_PASSWORD"],
        };
        let host = broker
            .plain_url
            .split_once('@')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(host, _)| host)
            .expect("the plain URL has a host");
        format!(
            "amqp://{}:{password}@{host}/{}",
            self.names[user], self.names[vhost]
        )
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for user in ["compute-node", "compute-caller", "compute-deployer"] {
            rabbitmqctl_to_clean_up(&["delete_user", &self.names[user]]);
        }
        for vhost in ["compute", "compute-registry"] {
            rabbitmqctl_to_clean_up(&["delete_vhost", &self.names[vhost]]);
        }
    }
}

/// The `rabbitmqctl` lines of the book's block of users.
fn book_lines() -> Vec<String> {
    CHAPTER
        .lines()
        .skip_while(|line| !line.starts_with(BLOCK))
        .take_while(|line| !line.starts_with("```"))
        .filter(|line| line.starts_with("rabbitmqctl "))
        .map(str::to_owned)
        .collect()
}

/// A shell line's words: single quotes keep everything, double quotes
/// keep the variable whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), c) if c == open => quote = None,
            (None, ' ') => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (_, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `compute deploy MODULE --function increase` as the deployer.
async fn deploy(url: &str, module: &Path, key: &Path) -> Output {
    let mut deploy = compute_command();
    deploy
        .arg("deploy")
        .arg(module)
        .args(["--function", "increase", "--amqp-url", url, "--sign-key"])
        .arg(key)
        .args(["--wait", "20"]);
    run_to_end(&mut deploy, Duration::from_secs(60)).await
}

/// `center --function increase INPUT` as the caller: panics unless it
/// prints `expected`.
async fn assert_call(url: &str, input: &str, expected: &str) {
    let mut center = center_command();
    center.args([
        "--function",
        "increase",
        "--amqp-url",
        url,
        "--timeout",
        "10",
        input,
    ]);
    let called = run_to_end(&mut center, Duration::from_secs(30)).await;
    assert_eq!(
        String::from_utf8_lossy(&called.stdout),
        expected,
        "{}",
        text(&called)
    );
}

/// The reply code a channel or connection was closed with.
fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// With the book's users: a deployer deploys to a node in the registry's
/// vhost; the node serves it in the requests' vhost; a caller calls it.
/// The node cannot write to the stream, the caller can neither consume a
/// compute queue nor reach the registry, and a node or center refused
/// says which right it lacks in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs scripts/tls-broker.sh start; scripts/test.sh runs it"]
async fn each_role_does_its_job_and_no_more() {
    let broker = TlsBroker::get();
    let users = Users::make();
    let node_url = users.url(&broker, "compute-node", "compute");
    let node_registry_url = users.url(&broker, "compute-node", "compute-registry");
    let caller_url = users.url(&broker, "compute-caller", "compute");
    let deployer_url = users.url(&broker, "compute-deployer", "compute-registry");
    let keys = ModuleDir::empty();
    let key = keys.join("deployer.key");
    let made = run_to_end(
        compute_command().arg("keygen").arg(&key),
        Duration::from_secs(30),
    )
    .await;
    assert!(made.status.success(), "{}", text(&made));

    // The deployer creates the registry with a first version.
    let first = deploy(&deployer_url, &built_module("increase"), &key).await;
    assert!(
        first.status.success(),
        "the deployer deploys: {}",
        text(&first)
    );

    let mut node = compute_command();
    node.args([
        "--registry",
        "--amqp-url",
        &node_url,
        "--registry-url",
        &node_registry_url,
    ])
    .arg("--trusted-key")
    .arg(key.with_extension("key.pub"));
    let node = ServerProcess::compute(&mut node).await;
    assert_call(&caller_url, "41", "increase(41) = 42\n").await;

    let second = deploy(&deployer_url, &built_module("double"), &key).await;
    let said = text(&second);
    assert!(
        second.status.success() && said.contains("to 1/1 nodes"),
        "the node reports: {said}"
    );
    assert_call(&caller_url, "41", "increase(41) = 82\n").await;

    // The node's user may not write to the stream.
    let connection = amqp::connect(&node_registry_url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let published = async {
        channel
            .basic_publish(
                "".into(),
                "compute.modules".into(),
                BasicPublishOptions::default(),
                b"forged",
                BasicProperties::default(),
            )
            .await?
            .await
    };
    let refused = published
        .await
        .expect_err("the node's user may not publish to the stream");
    println!("node publishing to the stream: {refused}");
    assert_eq!(reply_code(&refused), Some(403), "{refused}");
    assert!(refused.to_string().contains("amq.default"), "{refused}");
    let _ = connection.close(200, "OK".into()).await;

    // The caller may not consume a compute queue, nor reach the registry.
    let connection = amqp::connect(&caller_url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let consumed = channel
        .basic_consume(
            "compute.increase".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("the caller may not consume a compute queue");
    println!("caller consuming compute.increase: {consumed}");
    assert_eq!(reply_code(&consumed), Some(403), "{consumed}");
    let _ = connection.close(200, "OK".into()).await;
    let caller_in_registry = users.url(&broker, "compute-caller", "compute-registry");
    let outside = amqp::connect(&caller_in_registry)
        .await
        .expect_err("the caller has no right in the registry's vhost");
    println!("caller connecting to the registry's vhost: {outside}");
    assert!(outside.to_string().contains("access to vhost"), "{outside}");

    // Refused at start: one line saying which right, exit 2.
    let mut as_caller = compute_command();
    as_caller
        .args([
            "--queue",
            "compute.increase",
            "--amqp-url",
            &caller_url,
            "--module",
        ])
        .arg(built_module("increase"));
    let refused = run_to_end(&mut as_caller, Duration::from_secs(30)).await;
    let said = String::from_utf8_lossy(&refused.stderr);
    println!("a node as the caller's user: {said}");
    assert_eq!(refused.status.code(), Some(2), "{said}");
    // RabbitMQ 3.x lets anyone look at a queue and refuses the consume
    // (read); 4.x refuses the look itself, to a user with no permission
    // on the queue.
    let lacks_read = said.contains("RabbitMQ refused to consume it: ACCESS_REFUSED")
        && said.contains("lacks the `read` permission on this queue");
    let lacks_any = said.contains("RabbitMQ refused to look at it: ACCESS_REFUSED")
        && said.contains("has no permission on this queue");
    assert!(lacks_read || lacks_any, "{said}");
    assert_eq!(
        said.lines()
            .filter(|line| line.starts_with("compute:"))
            .count(),
        1,
        "{said}"
    );
    let mut as_node = center_command();
    as_node.args([
        "--function",
        "increase",
        "--amqp-url",
        &node_url,
        "--connect-timeout",
        "5",
        "1",
    ]);
    let refused = run_to_end(&mut as_node, Duration::from_secs(30)).await;
    let said = String::from_utf8_lossy(&refused.stderr);
    println!("a center as the node's user: {said}");
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains("ACCESS_REFUSED")
            && said.contains("needs the `configure` permission on its reply queue"),
        "{said}"
    );
    drop(node);
}
