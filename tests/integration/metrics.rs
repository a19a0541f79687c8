//! `compute --metrics-addr`: Prometheus metrics that match what happened.

use compute_host::{NodeConfig, shared::sandbox::digest};
use lapin::BasicProperties;
use std::time::Duration;
use testkit::{
    ModuleDir, RawClient, RunningNode, built_module, center, increase_module, unique_queue,
    wait_for_metric,
};

/// After known calls (100 answers, 3 bad requests, 1 request without
/// `reply_to`, then one batch of 5 inputs, one of them bad) the counters
/// say exactly that: the batch is one request and five inputs. After a
/// swap and a broken version, the module metrics say that too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_node_did() {
    let dir = ModuleDir::with_working_copy(&increase_module());
    let node = RunningNode::start_with(NodeConfig {
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..NodeConfig::module(dir.working_copy(), unique_queue("metrics"))
    })
    .await;
    let address = node.metrics_addr.expect("metrics are served");
    let center = center(&node.queue, Duration::from_secs(30)).await;

    for n in 0..100 {
        center.call(n.to_string()).await.unwrap();
    }
    for _ in 0..3 {
        center.call("x").await.unwrap_err();
    }
    let results = center.call_batch(&["1", "2", "3", "4", "x"]).await.unwrap();
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 4);
    let client = RawClient::connect().await;
    client
        .publish(&node.queue, b"1", BasicProperties::default())
        .await;
    let metrics = wait_for_metric(
        address,
        r#"compute_requests_total{function="work",outcome="no-reply-to"} 1"#,
    )
    .await;

    let increase = digest(&std::fs::read(increase_module()).unwrap());
    for expected in [
        r#"compute_requests_total{function="work",outcome="ok"} 101"#.to_owned(),
        r#"compute_requests_total{function="work",outcome="bad-request"} 3"#.to_owned(),
        r#"compute_inputs_total{function="work",outcome="ok"} 104"#.to_owned(),
        r#"compute_inputs_total{function="work",outcome="bad-request"} 4"#.to_owned(),
        r#"compute_guest_call_seconds_count{function="work"} 108"#.to_owned(),
        r#"compute_request_seconds_count{function="work"} 104"#.to_owned(),
        "compute_in_flight_requests 0".to_owned(),
        r#"compute_module_swaps_total{function="work"} 0"#.to_owned(),
        format!(r#"compute_module_info{{function="work",digest="{increase}"}} 1"#),
    ] {
        assert!(
            metrics.lines().any(|line| line == expected),
            "no {expected:?} in\n{metrics}"
        );
    }

    let double = std::fs::read(built_module("double")).unwrap();
    dir.publish(&double);
    wait_for_metric(address, r#"compute_module_swaps_total{function="work"} 1"#).await;
    dir.publish(b"not a module");
    let metrics = wait_for_metric(
        address,
        r#"compute_module_reload_failures_total{function="work"} 1"#,
    )
    .await;
    let double = digest(&double);
    let info = format!(r#"compute_module_info{{function="work",digest="{double}"}} 1"#);
    assert!(
        metrics.lines().any(|line| line == info),
        "no {info:?} in\n{metrics}"
    );

    center.close().await;
    node.stop().await;
}
