//! What a user reads when a node cannot start: one line that says what is
//! wrong and what to do, exit status 2, and no raw lines of the AMQP
//! client before it.

use lapin::{options::QueueDeclareOptions, types::FieldTable};
use std::time::Duration;
use testkit::{
    ModuleDir, QueueGuard, amqp_url, compute_command, delete_queue, eventually, increase_module,
    run_to_end, unique_queue,
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
/// directory, and a queue that exists with other settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_says_why_in_one_line() {
    let here = ModuleDir::empty();
    let module = increase_module();
    let module = module.to_str().unwrap();
    let durable = unique_queue("durable");
    let _deleted_however_this_ends = QueueGuard::new([durable.clone()]);
    let url = amqp_url();
    {
        let connection = compute_host::amqp::connect(&url).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(durable.as_str().into(), options, FieldTable::default())
            .await
            .unwrap();
        let _ = connection.close(200, "OK".into()).await;
    }
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
            vec!["--module", module, "--queue", &durable, "--amqp-url", &url],
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
