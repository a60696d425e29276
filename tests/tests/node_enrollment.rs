//! Namespace test of enrollment: on a simulated node under `strait run`,
//! a pod's connections are captured (here: a Service VIP is balanced by the
//! kernel) only while the pod is meshed — its namespace labelled
//! `istio.io/dataplane-mode=ambient` or `istio-injection=enabled`, the pod
//! not opted out with `istio.io/dataplane-mode=none`. Label changes take
//! effect without restarting the daemon.

use strait_tests::node::hello::{hello_node, probe_until, HelloNode};
use strait_tests::node::Daemon;

const ADMIN: &str = "127.0.0.1:15000";

#[test]
fn label_changes_turn_a_pods_capture_on_and_off_without_a_restart() {
    let Some(p) = strait_tests::privileged::require(
        "label_changes_turn_a_pods_capture_on_and_off_without_a_restart",
    ) else {
        return;
    };
    let HelloNode {
        mut node,
        vip,
        greeting,
    } = hello_node(&p, 61);

    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    let mut daemon = Daemon::on(&node, &config)
        .args(["--admin", ADMIN, "--no-access-log"])
        .spawn()
        .unwrap();
    let hello = |l: &str| l == greeting;

    // 1. The namespace is labelled ambient: the VIP is balanced in the
    //    kernel to the server pod.
    let line = probe_until(&node, vip, hello);
    assert_eq!(
        line,
        greeting,
        "meshed pod not captured:\n{}",
        daemon.log_tail(30)
    );

    // 2. The namespace label goes: the client is no longer captured, and
    //    nothing on this node turns the VIP into a pod (no kube-proxy).
    node.set_namespace_labels("default", &[]);
    node.write_config(&config).unwrap();
    let line = probe_until(&node, vip, |l| !hello(l));
    assert!(
        line.starts_with("error"),
        "a pod of an unlabelled namespace is still captured: {line}\n{}",
        daemon.log_tail(30)
    );

    // 3. istio-injection=enabled enrolls it again.
    node.set_namespace_labels("default", &[("istio-injection", "enabled")]);
    node.write_config(&config).unwrap();
    let line = probe_until(&node, vip, hello);
    assert_eq!(
        line,
        greeting,
        "re-enrolled pod not captured:\n{}",
        daemon.log_tail(30)
    );

    // 4. The pod opts out with istio.io/dataplane-mode=none...
    assert!(node.set_pod_label("default", "client", "istio.io/dataplane-mode", Some("none")));
    node.write_config(&config).unwrap();
    let line = probe_until(&node, vip, |l| !hello(l));
    assert!(
        line.starts_with("error"),
        "opted-out pod still captured: {line}"
    );
    // ...and back in.
    assert!(node.set_pod_label("default", "client", "istio.io/dataplane-mode", None));
    node.write_config(&config).unwrap();
    let line = probe_until(&node, vip, hello);
    assert_eq!(line, greeting, "pod back in the mesh not captured");

    assert!(
        daemon.running(),
        "the daemon exited:\n{}",
        daemon.log_tail(30)
    );
    let text = daemon.log();
    assert_eq!(
        text.matches("strait is serving").count(),
        1,
        "the daemon restarted"
    );
}
