//! Tier 3: Istio's TCP metrics for connections the kernel balances on its
//! own (mode L4: no proxy sees them). The daemon reads the sockops
//! program's counters and `/stats/prometheus` shows
//! `istio_tcp_connections_opened_total`, `..._closed_total`,
//! `istio_tcp_sent_bytes_total` and `istio_tcp_received_bytes_total` with
//! `reporter="source"` and the client, service and backend labels.
use std::process::Stdio;
use std::time::{Duration, Instant};

use strait_tests::demo::{self, mesh};

/// The value of the first line of `text` starting with `metric{` that
/// contains every label in `labels`.
fn value(text: &str, metric: &str, labels: &[&str]) -> Option<u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn kernel_balanced_connections_are_reported_as_istio_tcp_metrics() {
    let name = "kernel_balanced_connections_are_reported_as_istio_tcp_metrics";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    // bookinfo plus a TCP Service in front of ratings, balanced by the
    // kernel on its own; no CA (with mesh mTLS, services whose endpoints are
    // meshed pods go through the proxy, and this test is about connections
    // the kernel balances).
    let (mut mesh, vip) = demo::start_with_kernel_balanced_ratings(&p, 231).unwrap();
    let out = mesh
        .client_command()
        .unwrap()
        .args([
            "--url",
            &format!("http://{vip}:9080/ratings/0"),
            "--duration-ms",
            "1000",
            "--interval-ms",
            "20",
        ])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let samples = mesh::parse_samples(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let ok = samples.iter().filter(|s| s.status == 200).count();
    assert!(ok >= 10, "only {ok} of {} requests answered", samples.len());

    // One connection per request; every one closed by now. The daemon
    // reads the kernel's counters every 2 s.
    let labels = [
        "reporter=\"source\"",
        "source_workload=\"client\"",
        "destination_service=\"ratings-tcp.default.svc.cluster.local\"",
        "destination_service_name=\"ratings-tcp\"",
        "destination_app=\"ratings\"",
        "request_protocol=\"tcp\"",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = mesh.admin_text("/stats/prometheus").unwrap();
        let closed = value(&text, "istio_tcp_connections_closed_total", &labels);
        if closed.is_some_and(|c| c as usize >= ok) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let get = |m: &str| {
        value(&text, m, &labels).unwrap_or_else(|| panic!("no {m} with {labels:?} in\n{text}"))
    };
    let opened = get("istio_tcp_connections_opened_total");
    let closed = get("istio_tcp_connections_closed_total");
    assert!(opened as usize >= ok, "opened {opened} < {ok} answered");
    assert!(closed as usize >= ok, "closed {closed} < {ok} answered");
    assert!(closed <= opened, "closed {closed} > opened {opened}");
    // Each request is a GET of ~100 bytes; each answer a JSON body with
    // headers, more than 50 bytes.
    let received = get("istio_tcp_received_bytes_total");
    let sent = get("istio_tcp_sent_bytes_total");
    assert!(
        received >= 50 * ok as u64,
        "request bytes {received} for {ok}"
    );
    assert!(sent >= 50 * ok as u64, "response bytes {sent} for {ok}");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && labels.iter().all(|x| l.contains(x))
        })
        .unwrap();
    // The simulated pods carry no pod-template-hash: the pod name.
    assert!(
        line.contains("destination_workload=\"ratings-v1-"),
        "{line}"
    );
    assert!(line.contains("destination_version=\"v1\""), "{line}");
    let status = mesh.stop_daemon().unwrap();
    assert!(status.success(), "strait run exited with {status}");
}
