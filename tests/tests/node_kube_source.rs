//! Namespace test of the Kubernetes source: `strait run --kubeconfig` on a
//! simulated node, its API server a fake one (tests/src/fake_apiserver.rs)
//! serving the node's Namespaces, Services, Pods and EndpointSlices inside
//! the node's namespace. The daemon becomes ready from the API server's
//! objects, and watch events — a namespace label flip, a Service deleted
//! and added back — change what it serves without a restart.
use std::net::TcpListener;
use std::path::Path;

use serde_json::{json, Value};
use strait_tests::fake_apiserver::FakeApiServer;
use strait_tests::node::hello::{hello_node, probe_until, HelloNode};
use strait_tests::node::Daemon;

/// Every document of the node's config files.
fn docs(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(d).unwrap();
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

#[test]
fn strait_run_kubeconfig_serves_the_api_servers_objects_and_follows_watch_events() {
    let name = "strait_run_kubeconfig_serves_the_api_servers_objects_and_follows_watch_events";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let HelloNode {
        node,
        vip,
        greeting,
    } = hello_node(&p, 62);

    // The API server: the node's objects, served inside the node.
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    let api = FakeApiServer::new();
    let objects = docs(&config);
    for o in &objects {
        api.apply(o.clone());
    }
    let std_listener = node
        .run_in(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std_listener.set_nonblocking(true).unwrap();
    let served = api.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
            served.serve(l).await
        });
    });
    let kubeconfig = node.tmp_dir().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: nobody}}\ncurrent-context: fake\nusers:\n- name: nobody\n  user: {{}}\n"
        ),
    )
    .unwrap();

    let mut daemon = Daemon::on_kube(&node, &kubeconfig)
        .args(["--admin", "127.0.0.1:15000", "--no-access-log"])
        .spawn()
        .unwrap();
    let hello = |l: &str| l == greeting;

    let line = probe_until(&node, vip, hello);
    assert_eq!(
        line,
        greeting,
        "not serving the API server's objects:\n{}",
        daemon.log_tail(30)
    );
    assert!(
        daemon.log().contains("API server in sync"),
        "{}",
        daemon.log_tail(30)
    );

    // A namespace label flip through a watch event: capture off, then on.
    let ns = |labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": labels}});
    api.apply(ns(json!({})));
    let line = probe_until(&node, vip, |l| !hello(l));
    assert!(
        line.starts_with("error"),
        "still captured: {line}\n{}",
        daemon.log_tail(30)
    );
    api.apply(ns(json!({"istio.io/dataplane-mode": "ambient"})));
    assert_eq!(
        probe_until(&node, vip, hello),
        greeting,
        "{}",
        daemon.log_tail(30)
    );

    // The Service deleted: its VIP goes from the kernel; added back: it returns.
    let svc = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "server")
        .unwrap()
        .clone();
    api.delete(&svc);
    let line = probe_until(&node, vip, |l| !hello(l));
    assert!(
        line.starts_with("error"),
        "deleted Service still served: {line}"
    );
    api.apply(svc);
    assert_eq!(
        probe_until(&node, vip, hello),
        greeting,
        "{}",
        daemon.log_tail(30)
    );

    assert!(daemon.running(), "{}", daemon.log_tail(30));
    let text = daemon.log();
    assert_eq!(text.matches("strait is serving").count(), 1, "restarted");
}
