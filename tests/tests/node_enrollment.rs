//! Namespace test of enrollment: on a simulated node under `strait run`,
//! a pod's connections are captured (here: a Service VIP is balanced by the
//! kernel) only while the pod is meshed — its namespace labelled
//! `istio.io/dataplane-mode=ambient` or `istio-injection=enabled`, the pod
//! not opted out with `istio.io/dataplane-mode=none`. Label changes take
//! effect without restarting the daemon.
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use strait_tests::node::{Node, PodSpec, ServiceDef, ServicePort};

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");
const ADMIN: &str = "127.0.0.1:15000";

/// Kills the daemon on drop (before the node goes).
struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One connection from `pod` to `addr`: the server's greeting or `error …`.
fn probe_from(node: &Node, pod: &str, addr: SocketAddr) -> String {
    let out = node
        .pod("default", pod)
        .expect("pod")
        .command(PROBE)
        .unwrap()
        .args(["tcp", &addr.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Probes until `want(line)` holds (30 s at most, the machine may be
/// loaded); returns the last line.
fn probe_until(node: &Node, addr: SocketAddr, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = probe_from(node, "client", addr);
        if want(&line) || Instant::now() > deadline {
            return line;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn label_changes_turn_a_pods_capture_on_and_off_without_a_restart() {
    let Some(p) = strait_tests::privileged::require(
        "label_changes_turn_a_pods_capture_on_and_off_without_a_restart",
    ) else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 61).unwrap();
    node.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    node.add_pod(PodSpec::new("server", &[("app", "server")]))
        .unwrap();
    let vip = node
        .add_service(ServiceDef {
            name: "server".into(),
            namespace: "default".into(),
            selector: [("app".to_string(), "server".to_string())].into(),
            ports: vec![ServicePort {
                name: Some("tcp-hello".into()),
                port: 7000,
                target_port: None,
                protocol: "TCP".into(),
                app_protocol: None,
            }],
            cluster_ip: None,
            headless: false,
        })
        .unwrap()
        .cluster_ip
        .unwrap();
    let vip = SocketAddr::from((vip, 7000));
    let client_ip = node.pod("default", "client").unwrap().ip;
    let server = node.pod("default", "server").unwrap();
    let listener = server
        .run_in(|| TcpListener::bind((server.ip, 7000)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let peer = s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = writeln!(s, "hello from server to {peer}");
        }
    });

    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    let log = node.tmp_dir().join("strait.log");
    let out = std::fs::File::create(&log).unwrap();
    let daemon = node
        .strait_run(
            &strait_tests::demo::mesh::sibling("strait").unwrap(),
            &config,
        )
        .unwrap()
        .args(["--admin", ADMIN, "--no-access-log"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(daemon);
    let greeting = format!("hello from server to {client_ip}");
    let hello = |l: &str| l == greeting;

    // 1. The namespace is labelled ambient: the VIP is balanced in the
    //    kernel to the server pod.
    let line = probe_until(&node, vip, hello);
    assert_eq!(
        line,
        greeting,
        "meshed pod not captured:\n{}",
        log_tail(&log)
    );

    // 2. The namespace label goes: the client is no longer captured, and
    //    nothing on this node turns the VIP into a pod (no kube-proxy).
    node.set_namespace_labels("default", &[]);
    node.write_config(&config).unwrap();
    let line = probe_until(&node, vip, |l| !hello(l));
    assert!(
        line.starts_with("error"),
        "a pod of an unlabelled namespace is still captured: {line}\n{}",
        log_tail(&log)
    );

    // 3. istio-injection=enabled enrolls it again.
    node.set_namespace_labels("default", &[("istio-injection", "enabled")]);
    node.write_config(&config).unwrap();
    let line = probe_until(&node, vip, hello);
    assert_eq!(
        line,
        greeting,
        "re-enrolled pod not captured:\n{}",
        log_tail(&log)
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
        daemon.0.try_wait().unwrap().is_none(),
        "the daemon exited:\n{}",
        log_tail(&log)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("strait is serving").count(),
        1,
        "the daemon restarted"
    );
}
