//! Namespace test of incremental reloads (issue 21): under `strait run` on
//! a simulated node, moving a Service's endpoint from one pod to another by
//! rewriting its file moves the kernel-balanced traffic to the new pod,
//! and the daemon applies it incrementally (its `config reloaded` line:
//! `incremental=true`, one kernel service rewritten, no route or policy
//! table built); a change of another kind is compiled in full and still
//! applied.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use std::time::{Duration, Instant};

use strait_tests::node::echo::{self, Then};
use strait_tests::node::{Daemon, Node, PodSpec};

const ADMIN: &str = "127.0.0.1:15000";
const VIP: &str = "10.97.0.1";

/// Probes from pod `client` until `want(line)` holds (60 s at most: the
/// machine may be loaded); returns the last line.
fn probe_until(node: &Node, addr: SocketAddr, want: impl Fn(&str) -> bool) -> String {
    let client = node.pod("default", "client").unwrap();
    client.probe_until(addr, Duration::from_secs(60), want)
}

fn service_yaml(ep: std::net::Ipv4Addr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: hello, namespace: default}}\nspec: {{clusterIP: {VIP}, ports: [{{name: tcp-hello, port: 7000}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: hello-1, namespace: default, labels: {{kubernetes.io/service-name: hello}}}}\naddressType: IPv4\nports: [{{name: tcp-hello, port: 7000}}]\nendpoints: [{{addresses: [\"{ep}\"]}}]\n"
    )
}

/// The fields of the daemon's `config reloaded` lines.
fn reloads(log: &Path) -> Vec<BTreeMap<String, String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("config reloaded"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Waits for the `n`th `config reloaded` line (60 s at most).
fn reload_n(log: &Path, n: usize) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = reloads(log);
        if r.len() >= n {
            return r[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no reload {n} in the daemon's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_endpoint_moved_on_disk_is_applied_incrementally_and_traffic_follows() {
    let Some(p) = strait_tests::privileged::require(
        "an_endpoint_moved_on_disk_is_applied_incrementally_and_traffic_follows",
    ) else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-inc", 64).unwrap();
    node.set_namespace_labels("backends", &[]);
    node.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    for name in ["a", "b"] {
        let mut spec = PodSpec::new(name, &[("app", name)]);
        spec.namespace = "backends".into();
        node.add_pod(spec).unwrap();
    }
    let ip = |n: &str| node.pod("backends", n).unwrap().ip;
    for name in ["a", "b"] {
        let pod = node.pod("backends", name).unwrap();
        let l = echo::listen(&pod.netns, (pod.ip, 7000)).unwrap();
        let greeting = format!("hello from {name}");
        echo::tcp(l, move |_| greeting.clone(), Then::Close);
    }
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    // Services that do not change, so the mesh is not just the one.
    for i in 0..50 {
        std::fs::write(
            config.join(format!("other-{i}.yaml")),
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: other-{i}, namespace: default}}\nspec: {{clusterIP: 10.97.1.{i}, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: other-{i}-1, namespace: default, labels: {{kubernetes.io/service-name: other-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 80}}]\nendpoints: [{{addresses: [\"10.98.0.{i}\"]}}]\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(config.join("hello.yaml"), service_yaml(ip("a"))).unwrap();
    let mut daemon = Daemon::on(&node, &config)
        .args(["--admin", ADMIN, "--no-access-log", "--log-level", "info"])
        .spawn()
        .unwrap();
    let vip: SocketAddr = format!("{VIP}:7000").parse().unwrap();
    assert_eq!(
        probe_until(&node, vip, |l| l == "hello from a"),
        "hello from a"
    );

    // The endpoint moves to b: traffic follows, applied incrementally.
    std::fs::write(config.join("hello.yaml"), service_yaml(ip("b"))).unwrap();
    assert_eq!(
        probe_until(&node, vip, |l| l == "hello from b"),
        "hello from b",
        "{}",
        daemon.log()
    );
    let r = reload_n(daemon.log_path(), 1);
    assert_eq!(
        r.get("incremental").map(String::as_str),
        Some("true"),
        "{r:?}"
    );
    assert_eq!(
        r.get("kernel_services_changed").map(String::as_str),
        Some("1")
    );
    assert_eq!(r.get("clusters_rebuilt").map(String::as_str), Some("1"));
    assert_eq!(r.get("route_tables_built").map(String::as_str), Some("0"));
    assert_eq!(r.get("policy_tables_built").map(String::as_str), Some("0"));

    // Another kind (a VirtualService on an unrelated service): compiled in
    // full and applied; the endpoint stays where it is.
    std::fs::write(
        config.join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other-1, namespace: default}\nspec:\n  hosts: [other-1]\n  http:\n  - route: [{destination: {host: other-1}}]\n    timeout: 3s\n",
    )
    .unwrap();
    let r = reload_n(daemon.log_path(), 2);
    assert_eq!(
        r.get("incremental").map(String::as_str),
        Some("false"),
        "{r:?}"
    );
    // And back to a, incrementally again.
    std::fs::write(config.join("hello.yaml"), service_yaml(ip("a"))).unwrap();
    assert_eq!(
        probe_until(&node, vip, |l| l == "hello from a"),
        "hello from a"
    );
    let r = reload_n(daemon.log_path(), 3);
    assert_eq!(
        r.get("incremental").map(String::as_str),
        Some("true"),
        "{r:?}"
    );
    assert!(daemon.running(), "the daemon exited:\n{}", daemon.log());
}
