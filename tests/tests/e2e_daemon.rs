//! Tier 3: the daemon's life on a simulated node: hot reload under load,
//! an invalid file dropped into the config directory, a crash and restart
//! under an L4 client, and a clean SIGTERM.
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use strait_tests::demo::{self, assert_checks, mesh, Check, Expect, Mesh};

fn samples() -> PathBuf {
    demo::bookinfo_samples()
}

fn start(p: &strait_tests::privileged::Privileged, index: u8, platform: PathBuf) -> Mesh {
    let s = samples();
    let opts = demo::test_options(
        platform,
        vec![s.join("destination-rules.yaml"), s.join("all-v1.yaml")],
        index,
    )
    .unwrap();
    Mesh::start(p, opts).unwrap()
}

#[test]
fn hot_reload_under_load_drops_no_request_and_splits_within_a_second() {
    let name = "hot_reload_under_load_drops_no_request_and_splits_within_a_second";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mesh = start(&p, 211, samples().join("platform.yaml"));
    let vip = mesh
        .node()
        .service("default", "productpage")
        .unwrap()
        .cluster_ip
        .unwrap();
    let mut client = mesh
        .client_command()
        .unwrap()
        .args([
            "--url",
            &format!("http://{vip}:9080/productpage"),
            "--duration-ms",
            "4000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = client.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
            .join("\n")
    });
    std::thread::sleep(Duration::from_millis(1200));
    let t_switch = std::time::Instant::now();
    let took = mesh
        .set_config("all-v1.yaml", &[&samples().join("reviews-50-v1-v3.yaml")])
        .unwrap();
    assert!(
        took < Duration::from_secs(1),
        "the new config took {took:?} to serve"
    );
    let switch_ms = 1200 + t_switch.elapsed().as_millis() as u64;
    client.wait().unwrap();
    let out = mesh::parse_samples(&reader.join().unwrap()).unwrap();
    assert!(out.len() > 50, "only {} requests in 4 s", out.len());
    let failed: Vec<_> = out.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} requests failed during the reload, e.g. {:?}",
        failed.len(),
        failed[0]
    );
    let before: Vec<_> = out.iter().filter(|s| s.t_ms + 50 < 1200).collect();
    let after: Vec<_> = out.iter().filter(|s| s.t_ms > switch_ms + 1000).collect();
    assert!(
        before.iter().all(|s| s.reviews_version() == Some("v1")),
        "v3 served before the switch"
    );
    let n = after.len() as f64;
    let v3 = after
        .iter()
        .filter(|s| s.reviews_version() == Some("v3"))
        .count() as f64;
    let v1 = after
        .iter()
        .filter(|s| s.reviews_version() == Some("v1"))
        .count() as f64;
    assert!(n >= 20.0, "only {n} requests after the switch");
    assert_eq!(v1 + v3, n, "versions other than v1/v3 after the switch");
    let tol = 5.0 * (n * 0.25).sqrt();
    assert!(
        (v3 - n / 2.0).abs() <= tol,
        "v3 {v3} of {n} a second after the switch (expected {} ± {tol:.1})",
        n / 2.0
    );
}

#[test]
fn an_invalid_file_is_reported_and_routing_is_unchanged() {
    let name = "an_invalid_file_is_reported_and_routing_is_unchanged";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mesh = start(&p, 212, samples().join("platform.yaml"));
    mesh.set_config("all-v1.yaml", &[&samples().join("reviews-jason-v2.yaml")])
        .unwrap();
    let jason = Some("jason");
    let checks = [
        Check {
            user: jason,
            n: 10,
            expect: Expect::Version("v2"),
        },
        Check {
            user: None,
            n: 10,
            expect: Expect::Version("v1"),
        },
    ];
    assert_checks(&mesh, "before", &checks);
    // A VirtualService sending everyone to an invalid subset name.
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews-bad\n  namespace: default\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v1.0\n";
    std::fs::write(mesh.config_dir().join("bad.yaml"), bad).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !mesh.log().contains("subset name is invalid: v1.0")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = mesh.log();
    let line = log
        .lines()
        .find(|l| l.contains("subset name is invalid: v1.0"))
        .unwrap_or_else(|| panic!("no error logged:\n{log}"));
    assert!(
        line.contains("bad.yaml"),
        "error does not name the file: {line}"
    );
    assert!(
        line.contains("VirtualService/default/reviews-bad"),
        "error does not name the resource: {line}"
    );
    assert!(
        line.contains("spec.http[0].route[0].destination.subset"),
        "error does not name the field: {line}"
    );
    assert_checks(&mesh, "after the invalid file", &checks);
}

#[test]
fn l4_clients_keep_connecting_while_the_daemon_restarts_and_sigterm_exits_0() {
    let name = "l4_clients_keep_connecting_while_the_daemon_restarts_and_sigterm_exits_0";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    // bookinfo plus a TCP Service in front of ratings, balanced by the
    // kernel on its own; no CA (the kernel fast path is kept only for
    // plaintext destinations).
    let (mut mesh, vip) = demo::start_with_kernel_balanced_ratings(&p, 213).unwrap();
    let client = mesh
        .client_command()
        .unwrap()
        .args([
            "--url",
            &format!("http://{vip}:9080/ratings/0"),
            "--duration-ms",
            "3000",
            "--interval-ms",
            "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    mesh.kill_daemon();
    std::thread::sleep(Duration::from_millis(1000));
    mesh.start_daemon().unwrap();
    let out = client.wait_with_output().unwrap();
    let samples = mesh::parse_samples(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert!(samples.len() > 100, "only {} requests", samples.len());
    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} L4 requests failed across the restart: {:?}",
        failed.len(),
        samples.len(),
        failed[0]
    );
    assert!(samples.iter().all(|s| s.body["service"] == "ratings"));
    let status = mesh.stop_daemon().unwrap();
    assert!(
        status.success(),
        "strait run exited with {status} on SIGTERM"
    );
}
