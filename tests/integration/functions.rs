//! `compute --modules DIR`: several functions in one node, each on its own
//! queue, added, replaced and removed while the node runs.

use crate::support::{ServerProcess, amqp_url, built_module, center, delete_queue};
use compute_host::{
    Center, NodeConfig,
    node::{self, StartError},
};
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

/// While a center calls `increase` without pause, a function is added,
/// another replaced and another removed: each change shows within
/// seconds, and the calls to `increase` all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_come_and_go_while_another_is_called() {
    let dir = std::env::temp_dir().join(format!("compute-functions-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["increase", "double"] {
        std::fs::copy(built_module(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
    let prefix = format!("test.functions.{}", Uuid::new_v4());
    let (stop, node) = serve(&dir, &prefix);
    let queue = |name: &str| format!("{prefix}.{name}");
    let increase = center(&queue("increase"), Duration::from_secs(30)).await;
    let double = center(&queue("double"), Duration::from_secs(30)).await;
    let square = center(&queue("square"), Duration::from_secs(30)).await;
    answers(&increase, "1", "2").await;
    answers(&double, "7", "14").await;

    // Calls to increase go on through every change below.
    let calling = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = tokio::spawn({
        let (calling, ok, failed, increase) = (
            calling.clone(),
            ok.clone(),
            failed.clone(),
            increase.clone(),
        );
        async move {
            let mut n = 0_i64;
            while calling.load(Ordering::Relaxed) {
                match increase.call(n.to_string()).await {
                    Ok(reply) if reply.body == (n + 1).to_string().as_bytes() => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }
    });

    // Added: a new file is a new function on its own queue.
    publish(&dir, "square", &built_module("square"));
    answers(&square, "7", "49").await;
    // Replaced: double now triples.
    publish(&dir, "double", &built_module("triple"));
    answers(&double, "7", "21").await;
    // Removed: its consumer goes away cleanly.
    std::fs::remove_file(dir.join("square.wasm")).unwrap();
    consumers_drop_to_zero(&square).await;

    calling.store(false, Ordering::Relaxed);
    load.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("increase during the changes: {ok} ok, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0);

    let _ = stop.send(());
    node.await.unwrap().unwrap();
    for center in [increase, double, square] {
        center.close().await;
    }
    for name in ["increase", "double", "square"] {
        delete_queue(&queue(name)).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A file that is not a usable module is not served (and its queue not
/// declared); once a usable module replaces it, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_module_is_served_once_it_is_mended() {
    let dir = std::env::temp_dir().join(format!("compute-functions-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mended.wasm"), b"not a module").unwrap();
    let prefix = format!("test.functions.{}", Uuid::new_v4());
    let (stop, node) = serve(&dir, &prefix);
    let queue = format!("{prefix}.mended");
    let mended = center(&queue, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mended.consumer_count().await.unwrap(),
        None,
        "nothing serves the broken file"
    );

    publish(&dir, "mended", &built_module("double"));
    answers(&mended, "4", "8").await;

    let _ = stop.send(());
    node.await.unwrap().unwrap();
    mended.close().await;
    delete_queue(&queue).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A broken module mended in place, keeping the same modification time
/// (as `cp -p` or an archive would), is seen by its content and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_mended_with_the_same_mtime_is_served() {
    let dir = std::env::temp_dir().join(format!("compute-functions-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("same.wasm");
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let write_with_old_mtime = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(an_hour_ago).unwrap();
    };
    write_with_old_mtime(b"not a module");
    let prefix = format!("test.functions.{}", Uuid::new_v4());
    let (stop, node) = serve(&dir, &prefix);
    let queue = format!("{prefix}.same");
    let same = center(&queue, Duration::from_secs(30)).await;
    // Nothing observable says the broken file was tried; give it a scan.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(same.consumer_count().await.unwrap(), None);

    write_with_old_mtime(&std::fs::read(built_module("double")).unwrap());
    answers(&same, "4", "8").await;

    let _ = stop.send(());
    node.await.unwrap().unwrap();
    same.close().await;
    delete_queue(&queue).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The module directory replaced by two renames (gone for a moment, then
/// a new directory in its place): the running function goes on serving,
/// and the new directory's functions are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_replaced_by_two_renames_stops_nothing() {
    let base = std::env::temp_dir().join(format!("compute-functions-{}", Uuid::new_v4()));
    let (live, next, old) = (base.join("live"), base.join("next"), base.join("old"));
    for dir in [&live, &next] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(built_module("increase"), dir.join("increase.wasm")).unwrap();
    }
    std::fs::copy(built_module("square"), next.join("square.wasm")).unwrap();
    let prefix = format!("test.functions.{}", Uuid::new_v4());
    let (stop, node) = serve(&live, &prefix);
    let queue = |name: &str| format!("{prefix}.{name}");
    let increase = center(&queue("increase"), Duration::from_secs(30)).await;
    let square = center(&queue("square"), Duration::from_secs(30)).await;
    answers(&increase, "1", "2").await;

    std::fs::rename(&live, &old).unwrap();
    answers(&increase, "2", "3").await;
    std::fs::rename(&next, &live).unwrap();
    answers(&square, "7", "49").await;
    answers(&increase, "3", "4").await;
    assert!(!node.is_finished(), "the node stopped");

    let _ = stop.send(());
    node.await.unwrap().unwrap();
    for (center, name) in [(increase, "increase"), (square, "square")] {
        center.close().await;
        delete_queue(&queue(name)).await;
    }
    let _ = std::fs::remove_dir_all(base);
}

/// Runs a node serving `dir` with queue prefix `prefix`, until the sender
/// is used or dropped.
fn serve(dir: &Path, prefix: &str) -> (oneshot::Sender<()>, JoinHandle<Result<(), StartError>>) {
    let config = NodeConfig {
        amqp_url: amqp_url(),
        ..NodeConfig::dir(dir, prefix)
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let node = tokio::spawn(node::run(config, async move {
        let _ = stopped.await;
    }));
    (stop, node)
}

/// Writes `module` as `dir/name.wasm` the safe way: a hidden temporary
/// name, then a rename.
fn publish(dir: &Path, name: &str, module: &PathBuf) {
    let temporary = dir.join(format!(".{name}.wasm.new"));
    std::fs::copy(module, &temporary).unwrap();
    std::fs::rename(temporary, dir.join(format!("{name}.wasm"))).unwrap();
}

/// Calls `input` until the reply is `output` (for at most 10 s): a new or
/// replaced function takes a moment to be noticed.
async fn answers(center: &Center, input: &str, output: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = center.call(input).await;
        if matches!(&reply, Ok(reply) if reply.body == output.as_bytes()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{input} never gave {output}; last {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until nobody consumes the center's queue (for at most 10 s).
async fn consumers_drop_to_zero(center: &Center) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while center.consumer_count().await.unwrap() != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed function still consumes its queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node serving twenty functions holds one connection to the broker and
/// one epoch thread, and every function answers on its own queue, each
/// with its own name in the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_functions_share_one_connection_and_one_engine() {
    const FUNCTIONS: usize = 20;
    let dir = std::env::temp_dir().join(format!("compute-many-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..FUNCTIONS {
        std::fs::copy(built_module("increase"), dir.join(format!("f{i}.wasm"))).unwrap();
    }
    let prefix = format!("test.many.{}", Uuid::new_v4());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_compute-under-test"));
    command
        .args(["--queue-prefix", &prefix, "--amqp-url", &amqp_url()])
        .arg("--modules")
        .arg(&dir);
    let node = ServerProcess::start(&mut command, "waiting for requests").await;

    for i in 0..FUNCTIONS {
        let center = center(&format!("{prefix}.f{i}"), Duration::from_secs(10)).await;
        let reply = center.call("41").await.expect("every function answers");
        assert_eq!(reply.body, b"42");
        assert_eq!(
            reply.origin.function.as_deref(),
            Some(format!("f{i}").as_str())
        );
        center.close().await;
    }
    let threads = std::fs::read_dir(format!("/proc/{}/task", node.pid())).unwrap();
    let epoch_tickers = threads
        .flatten()
        .filter(|thread| {
            std::fs::read_to_string(thread.path().join("comm"))
                .is_ok_and(|name| name.trim() == "epoch-ticker")
        })
        .count();
    assert_eq!(epoch_tickers, 1, "{}", node.log());
    assert_eq!(broker_connections(node.pid()), 1, "{}", node.log());

    drop(node);
    for i in 0..FUNCTIONS {
        delete_queue(&format!("{prefix}.f{i}")).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// How many TCP connections process `pid` has open to the broker's port.
fn broker_connections(pid: u32) -> usize {
    let port = amqp_url()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next()?.parse::<u16>().ok())
        .unwrap_or(5672);
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(inode)) = (fields.get(2), fields.get(9)) else {
                continue;
            };
            let remote_port = remote
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if remote_port == Some(port) && sockets.iter().any(|socket| socket == inode) {
                count += 1;
            }
        }
    }
    count
}
