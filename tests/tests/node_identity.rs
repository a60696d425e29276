//! Workload identity on a simulated node: `strait run --ca-dir` (the CA
//! embedded in the daemon) issues a certificate per service account with a
//! meshed pod on the node (an opted-out pod gets none), `/certs` and `strait ca inspect` show them, pods
//! arriving and leaving add and drop identities, and no key material ever
//! reaches the logs, the config dump, the metrics or `/certs`.
use std::path::Path;
use std::time::{Duration, Instant};

use strait_tests::node::{Daemon, Node, PodSpec};

const ADMIN: &str = "127.0.0.1:15000";

fn admin(node: &Node, path: &str) -> String {
    let out = node
        .command("curl")
        .unwrap()
        .args(["-sS", "-m", "5", &format!("http://{ADMIN}{path}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn identities(node: &Node) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&admin(node, "/certs")).unwrap_or_default();
    let mut ids: Vec<String> = v["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["identity"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

fn wait_identities(node: &Node, want: &[&str], log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = identities(node);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "identities {got:?}, want {want:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn embedded_ca_issues_node_identities_and_never_shows_keys() {
    let name = "embedded_ca_issues_node_identities_and_never_shows_keys";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-id", 77).unwrap();
    let mut reviews = PodSpec::new("reviews-v1", &[("app", "reviews")]);
    reviews.service_account = "bookinfo-reviews".into();
    node.add_pod(reviews).unwrap();
    node.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    let ca_dir = node.tmp_dir().join("ca");
    // `cargo test` builds the workspace binaries beside the test executable.
    let strait_path = strait_tests::demo::mesh::sibling("strait").unwrap();
    let strait = strait_path.as_path();
    // SIGTERM on drop: the daemon drains and exits.
    let daemon = Daemon::on(&node, &config)
        .args(["--admin", ADMIN, "--drain-ms", "500", "--ca-dir"])
        .arg(&ca_dir)
        .env("RUST_LOG", "debug")
        .sigterm_on_drop()
        .spawn()
        .unwrap();
    let log_path = daemon.log_path().to_path_buf();
    wait_identities(
        &node,
        &[
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            "spiffe://cluster.local/ns/default/sa/default",
        ],
        &log_path,
    );
    // The trust bundle is the root generated into --ca-dir.
    let certs: serde_json::Value = serde_json::from_str(&admin(&node, "/certs")).unwrap();
    let root = std::fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap();
    let root_der = strait::identity::certs::parse_pem_certs(&root).unwrap();
    let root_info = strait::identity::CertInfo::from_der(&root_der[0]).unwrap();
    assert_eq!(
        certs["trust_bundle"][0]["serial"],
        root_info.serial.as_str()
    );
    assert_eq!(
        certs["certificates"][0]["issuer_chain"][0]["serial"],
        root_info.serial.as_str()
    );

    // A pod arriving on the node adds its identity; leaving drops it.
    let late = node.pod("default", "client").unwrap().ip.octets();
    let late_ip = format!("{}.{}.{}.250", late[0], late[1], late[2]);
    std::fs::write(
            config.join("late-pod.yaml"),
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: late, namespace: shop, labels: {{app: late}}}}\nspec:\n  serviceAccountName: cart\n  nodeName: node-id\n  containers: [{{name: app, image: app}}]\nstatus: {{phase: Running, podIP: {late_ip}}}\n"),
        )
        .unwrap();
    // A pod on this node that opted out of the mesh gets nothing.
    let out_ip = format!("{}.{}.{}.251", late[0], late[1], late[2]);
    std::fs::write(
            config.join("opted-out.yaml"),
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: mysql-0, namespace: default, labels: {{app: mysql, istio.io/dataplane-mode: none}}}}\nspec:\n  serviceAccountName: mysql\n  nodeName: node-id\n  containers: [{{name: app, image: app}}]\nstatus: {{phase: Running, podIP: {out_ip}}}\n"),
        )
        .unwrap();
    // And a pod on another node gets nothing here.
    std::fs::write(
            config.join("other-node.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: far, namespace: shop, labels: {app: far}}\nspec:\n  serviceAccountName: far\n  nodeName: node-elsewhere\n  containers: [{name: app, image: app}]\nstatus: {phase: Running, podIP: 10.99.0.9}\n",
        )
        .unwrap();
    let three = [
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
        "spiffe://cluster.local/ns/default/sa/default",
        "spiffe://cluster.local/ns/shop/sa/cart",
    ];
    wait_identities(&node, &three, &log_path);
    std::fs::remove_file(config.join("late-pod.yaml")).unwrap();
    wait_identities(&node, &three[..2], &log_path);

    // `strait ca inspect` inside the node.
    let out = node
        .command(strait)
        .unwrap()
        .args(["ca", "inspect", "--admin", ADMIN])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.starts_with("RESOURCE NAME"), "{table}");
    assert!(
        table.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews  Cert Chain"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("ROOTCA")), "{table}");

    // Metrics: the CA's counters and the node's expiry gauge.
    let metrics = admin(&node, "/stats/prometheus");
    assert!(metrics.contains("istio_agent_cert_expiry_seconds{resource_name=\"spiffe://cluster.local/ns/default/sa/default\"}"), "{metrics}");
    let issued: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("citadel_server_success_cert_issuance_count "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!(issued >= 3, "{metrics}");

    // No key material anywhere a user can look.
    let key = std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap();
    let key_line = key.lines().nth(1).unwrap().to_string();
    let outputs = [
        ("/certs", admin(&node, "/certs")),
        ("/config_dump", admin(&node, "/config_dump")),
        ("/stats/prometheus", metrics),
        ("ca inspect", table.to_string()),
    ];
    for (what, text) in &outputs {
        assert!(!text.contains("PRIVATE KEY"), "{what} shows a private key");
        assert!(!text.contains(&key_line), "{what} shows CA key bytes");
    }
    // The log once the daemon has drained and exited.
    drop(daemon);
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        log_text.contains("workload certificate installed"),
        "{log_text}"
    );
    assert!(
        !log_text.contains("PRIVATE KEY"),
        "the log shows a private key"
    );
    let key = std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap();
    assert!(
        !log_text.contains(key.lines().nth(1).unwrap()),
        "the log shows CA key bytes"
    );
}
