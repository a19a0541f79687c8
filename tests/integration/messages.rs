//! What a user reads when a node cannot start: one line that says what is
//! wrong and what to do, exit status 2, and no raw lines of the AMQP
//! client before it.

use std::time::Duration;
use testkit::{
    ModuleDir, QueueGuard, ServerProcess, amqp_url, compute_command, declare_queue, delete_queue,
    eventually, increase_module, refuses_transient_queues, run_to_end, unique_queue,
};

/// Runs `compute ARGS...` in `dir`; returns its exit code and stderr.
async fn compute_fails(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = run_to_end(
        compute_command().current_dir(dir).args(args),
        Duration::from_secs(30),
    )
    .await;
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Each way a start goes wrong gets one line, naming the cause and the
/// way out: a host name that does not resolve, a wrong password, a
/// missing module directory, the default module looked for in the wrong
/// directory, and a queue that exists with other settings than the
/// node was told to declare (a classic queue where it wants a quorum
/// one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_says_why_in_one_line() {
    let here = ModuleDir::empty();
    let module = increase_module();
    let module = module.to_str().unwrap();
    let durable = unique_queue("durable");
    let _deleted_however_this_ends = QueueGuard::new([durable.clone(), format!("{durable}.dead")]);
    declare_queue(&durable).await;
    let url = amqp_url();
    // A URL with a user of its own cannot be given a wrong password here.
    let wrong_password =
        (!url.contains('@')).then(|| url.replacen("://", "://guest:not-the-password@", 1));
    let mut cases = vec![
        (
            vec![
                "--module",
                module,
                "--amqp-url",
                "amqp://no-such-host.invalid:5672",
                "--connect-timeout",
                "0.5",
            ],
            vec![
                "cannot resolve the host name \"no-such-host.invalid\"",
                "check the host in the URL",
            ],
        ),
        (
            vec!["--modules", "/no/such/dir", "--amqp-url", &url],
            vec!["cannot serve the modules in /no/such/dir: No such file or directory"],
        ),
        (
            vec!["--amqp-url", &url],
            vec![
                "no file modules/increase.wasm (relative to the current directory",
                "give --module PATH",
            ],
        ),
        (
            vec![
                "--module",
                module,
                "--compile-cache",
                "/proc/no-such-cache",
                "--amqp-url",
                &url,
            ],
            vec![
                "cannot use /proc/no-such-cache as the compile cache",
                "--no-compile-cache",
            ],
        ),
        (
            vec![
                "--module",
                module,
                "--queue",
                &durable,
                "--queue-type",
                "quorum",
                "--amqp-url",
                &url,
            ],
            vec![
                "PRECONDITION_FAILED",
                "delete it with `rabbitmqctl delete_queue NAME`",
            ],
        ),
    ];
    if let Some(url) = &wrong_password {
        cases.push((
            vec!["--module", module, "--amqp-url", url],
            vec![
                "ACCESS_REFUSED",
                "check the URL, the user name and the password",
            ],
        ));
    }
    for (args, says) in cases {
        let (code, stderr) = compute_fails(&here.path, &args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        // The one line that ends the run; before it, at most the node's
        // own note that it tries again, never the client library's lines.
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("compute: "), "{args:?}: {stderr}");
        assert!(stderr.lines().count() <= 2, "{args:?}: {stderr}");
        assert!(!stderr.contains("lapin"), "{args:?}: {stderr}");
        for words in says {
            assert!(last.contains(words), "{args:?}: {stderr}");
        }
        assert!(!stderr.contains("not-the-password"), "{stderr}");
    }
}

/// A node told to declare the Python examples' transient queue, where
/// the broker refuses one (RabbitMQ 4.3 and later as upstream ships
/// them), says in one line what the broker refused and the two ways out,
/// and exits 2: no "lost the session", no reconnecting. Where the broker
/// permits it (3.x), the node serves on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_queue_the_broker_refuses_is_said_once() {
    let here = ModuleDir::empty();
    let queue = unique_queue("transient");
    let _deleted_however_this_ends = QueueGuard::new([queue.clone()]);
    let module = increase_module();
    let args = [
        "--module",
        module.to_str().unwrap(),
        "--queue",
        &queue,
        "--queue-type",
        "transient",
        "--amqp-url",
        &amqp_url(),
    ];
    if !refuses_transient_queues().await {
        let node = ServerProcess::compute(compute_command().args(args)).await;
        let center = testkit::center(&queue, Duration::from_secs(10)).await;
        assert_eq!(center.call("41").await.unwrap().body, b"42");
        center.close().await;
        drop(node);
        return;
    }
    let (code, stderr) = compute_fails(&here.path, &args).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for words in [
        "compute: cannot consume queue",
        "RabbitMQ refused to declare it",
        "transient_nonexcl_queues",
        "use --queue-type classic",
        "deprecated_features.permit.transient_nonexcl_queues = true",
    ] {
        assert!(stderr.contains(words), "{words:?} in {stderr}");
    }
}

/// A node whose log reader has gone (`compute ... 2>&1 | head -1`, the
/// pipe closed) still stops cleanly on SIGTERM, exit status 0: a log
/// line it cannot write is dropped, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_reader_is_gone_still_stops_cleanly() {
    let queue = unique_queue("closed-stderr");
    let mut node = compute_command()
        .args(["--queue", &queue, "--amqp-url", &amqp_url()])
        .arg("--module")
        .arg(increase_module())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("compute starts");
    drop(node.stderr.take());
    let caller = testkit::center(&queue, Duration::from_secs(10)).await;
    eventually(
        "the node consumes its queue",
        Duration::from_secs(30),
        || async { (caller.consumer_count().await.ok()? == Some(1)).then_some(()) },
    )
    .await;
    assert_eq!(caller.call("1").await.unwrap().body, b"2");
    caller.close().await;

    let pid = node.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait())
        .await
        .expect("the node stops")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    delete_queue(&queue).await;
}
