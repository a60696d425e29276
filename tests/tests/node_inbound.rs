//! Inbound capture in the pods' network namespaces (the in-pod
//! `sk_lookup` program and the plaintext inbound listener 15006), on by
//! default. Most tests run a daemon with the embedded CA (`--ca-dir`, and
//! the deprecated no-op `--inbound-capture` that scripts still pass), so
//! mTLS is on and PeerAuthentication is enforced by the kernel; one runs
//! it with no flag and no CA, and then with `--no-inbound-capture`:
//!
//! - `STRICT`: a plain-text client (a process on the node, a pod outside
//!   the mesh) gets its connection refused and the server sees nothing;
//!   `portLevelMtls` DISABLE lets one port through; PERMISSIVE lets it in;
//!   changes apply without a restart.
//! - An AuthorizationPolicy on the pod now protects connections made
//!   straight to the pod IP: HTTP gets `403 RBAC: access denied`, a denied
//!   TCP port is closed before the server sees anything, allowed traffic
//!   is delivered from 127.0.0.6 exactly once (no capture loop); removing
//!   the policy or taking the pod out of the mesh restores direct delivery.
//! - Without any flag and without a CA, a DENY policy is enforced for
//!   clients straight to the pod IP, while the node proxy's own deliveries
//!   of requests it checked (through a Service) are not checked again with
//!   the node's address; `--no-inbound-capture` warns that nothing checks
//!   them.
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strait_tests::node::echo::{self, Seen, Then};
use strait_tests::node::{http, Daemon, Guard, Node, Pod, PodSpec, ServiceDef, ServicePort};

const ADMIN: &str = "127.0.0.1:15000";

/// An HTTP server on `port` in the pod (the test's own socket): answers
/// `200 ok <path>` and closes.
fn http_server(pod: &Pod, port: u16) -> Seen {
    let l = echo::listen(&pod.netns, (Ipv4Addr::UNSPECIFIED, port)).unwrap();
    echo::http(l, |_, path| format!("ok {path}"))
}

/// A server-first TCP server on `port` in the pod: writes `hello <port>`
/// and records what the client sent until it closes.
fn tcp_server(pod: &Pod, port: u16) -> Seen {
    let l = echo::listen(&pod.netns, (Ipv4Addr::UNSPECIFIED, port)).unwrap();
    echo::tcp(
        l,
        move |_| format!("hello {port}"),
        Then::ReadToEnd(Duration::from_secs(2)),
    )
}

fn probe() -> PathBuf {
    strait_tests::demo::mesh::sibling("strait-probe").unwrap()
}

/// `strait-probe tcp ADDR` from the node (outside the pods cgroup) or from
/// a pod: the server's first line, or `error <kind>`.
fn tcp_from(cmd: std::process::Command, addr: SocketAddr) -> String {
    let mut cmd = cmd;
    let out = cmd.args(["tcp", &addr.to_string()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `curl` from the node or a pod: (status, body); status 0 when no HTTP
/// answer came.
fn curl(cmd: std::process::Command, url: &str) -> (u16, String) {
    http::curl(cmd, &[url])
}

/// `strait run` with the embedded CA and the deprecated
/// `--inbound-capture` flag.
fn start(node: &Node, config: &Path) -> Daemon {
    let ca = node.tmp_dir().join("ca");
    let ca = ca.to_str().unwrap();
    start_with(
        node,
        config,
        &["--inbound-capture", "--ca-dir", ca],
        "strait.log",
    )
}

/// `strait run` with `args`, its log in `log_name` (in the node's
/// directory).
fn start_with(node: &Node, config: &Path, args: &[&str], log_name: &str) -> Daemon {
    let d = Daemon::on(node, config).quick("info,strait=debug");
    d.args(args).log_name(log_name).spawn().unwrap()
}

/// Polls `f` until it returns true (generous: the machine is shared).
fn eventually(what: &str, f: impl FnMut() -> bool, d: &Daemon) {
    d.eventually(what, Duration::from_secs(60), Duration::from_millis(200), f);
}

/// A node with a meshed `server` pod (a pause process keeps its network
/// namespace findable, as Kubernetes' pause container does) and an
/// `outsider` pod in a namespace outside the mesh.
fn node(p: &strait_tests::privileged::Privileged, name: &str, index: u8) -> (Node, Guard) {
    let mut node = Node::new(&p.cgroup2, name, index).unwrap();
    node.add_pod(PodSpec::new("server", &[("app", "server")]))
        .unwrap();
    let mut outsider = PodSpec::new("outsider", &[("app", "outsider")]);
    outsider.namespace = "outside".into();
    node.add_pod(outsider).unwrap();
    node.set_namespace_labels("outside", &[]);
    let pause = node.pod("default", "server").unwrap().pause().unwrap();
    (node, pause)
}

fn write(config: &Path, file: &str, yaml: &str) {
    std::fs::write(config.join(file), yaml).unwrap();
}

const STRICT_8080_DISABLE_9090: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: server, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9090: {mode: DISABLE}
";

#[test]
fn strict_peer_authentication_refuses_plaintext_in_the_kernel() {
    let name = "strict_peer_authentication_refuses_plaintext_in_the_kernel";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let (node, _pause) = node(&p, "node-inb-a", 91);
    let server = node.pod("default", "server").unwrap().clone();
    let outsider = node.pod("outside", "outsider").unwrap().clone();
    let http = http_server(&server, 8080);
    let tcp = tcp_server(&server, 9090);
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    write(&config, "pa.yaml", STRICT_8080_DISABLE_9090);
    let d = start(&node, &config);
    d.wait_log(
        &format!(
            "inbound capture attached in the pod's network namespace pod={}",
            server.ip
        ),
        1,
    );
    d.wait_log("--inbound-capture is deprecated and has no effect", 1);
    let a8080 = SocketAddr::from((server.ip, 8080));
    let a9090 = SocketAddr::from((server.ip, 9090));
    let from_node = || node.command(probe()).unwrap();
    let from_outsider = || outsider.command(probe()).unwrap();

    // STRICT port: refused by the kernel, from the node and from a pod
    // outside the mesh; the server never accepts.
    assert_eq!(tcp_from(from_node(), a8080), "error ConnectionRefused");
    assert_eq!(tcp_from(from_outsider(), a8080), "error ConnectionRefused");
    let (code, _) = curl(node.command("curl").unwrap(), &format!("http://{a8080}/"));
    assert_eq!(code, 0, "no HTTP answer under STRICT");
    assert!(
        http.lock().unwrap().is_empty(),
        "the STRICT port's server saw {:?}",
        http.lock().unwrap()
    );
    // portLevelMtls DISABLE: that port takes plain text, straight to the pod.
    assert_eq!(tcp_from(from_node(), a9090), "hello 9090");
    assert_eq!(tcp_from(from_outsider(), a9090), "hello 9090");
    assert_eq!(tcp.lock().unwrap().len(), 2);

    // PERMISSIVE, without a restart: plain text reaches the pod directly
    // (no policy: the kernel leaves it alone, the peer is the client).
    write(
        &config,
        "pa.yaml",
        &STRICT_8080_DISABLE_9090.replace("STRICT", "PERMISSIVE"),
    );
    eventually(
        "PERMISSIVE lets plain text in",
        || curl(node.command("curl").unwrap(), &format!("http://{a8080}/p")).0 == 200,
        &d,
    );
    let seen = http.lock().unwrap().clone();
    assert_eq!(
        seen.last().unwrap().0.ip(),
        node.gateway(),
        "delivered directly: {seen:?}"
    );
    let (code, _) = curl(
        outsider.command("curl").unwrap(),
        &format!("http://{a8080}/q"),
    );
    assert_eq!(code, 200, "PERMISSIVE from a pod outside the mesh");

    // STRICT again: refused again.
    write(&config, "pa.yaml", STRICT_8080_DISABLE_9090);
    eventually(
        "STRICT refuses again",
        || tcp_from(from_node(), a8080) == "error ConnectionRefused",
        &d,
    );
    // A pod leaving the mesh is left alone.
    let before = http.lock().unwrap().len();
    let mut node = node;
    node.set_namespace_labels("default", &[]);
    node.write_config(&config).unwrap();
    d.wait_log("inbound capture removed", 1);
    let (code, body) = curl(
        node.command("curl").unwrap(),
        &format!("http://{a8080}/out"),
    );
    assert_eq!((code, body.as_str()), (200, "ok /out"), "{}", d.log());
    assert_eq!(http.lock().unwrap().len(), before + 1);
}

const DENY_ADMIN_AND_9090: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-9090, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {ports: [\"9090\"]}}]
";

#[test]
fn authorization_policy_protects_connections_straight_to_the_pod_ip() {
    let name = "authorization_policy_protects_connections_straight_to_the_pod_ip";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let (node, _pause) = node(&p, "node-inb-b", 92);
    let server = node.pod("default", "server").unwrap().clone();
    let outsider = node.pod("outside", "outsider").unwrap().clone();
    let http = http_server(&server, 8080);
    let tcp = tcp_server(&server, 9090);
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    write(&config, "ap.yaml", DENY_ADMIN_AND_9090);
    let d = start(&node, &config);
    d.wait_log(
        &format!(
            "inbound capture attached in the pod's network namespace pod={}",
            server.ip
        ),
        1,
    );
    let a8080 = SocketAddr::from((server.ip, 8080));
    let a9090 = SocketAddr::from((server.ip, 9090));
    let curl_node = |path: &str| {
        curl(
            node.command("curl").unwrap(),
            &format!("http://{a8080}{path}"),
        )
    };
    let curl_outsider = |path: &str| {
        curl(
            outsider.command("curl").unwrap(),
            &format!("http://{a8080}{path}"),
        )
    };

    // HTTP: the denied path gets Envoy's RBAC reply and never reaches the
    // server; an allowed path is served, from 127.0.0.6, exactly once.
    assert_eq!(
        curl_node("/admin"),
        (403, "RBAC: access denied".to_string())
    );
    assert_eq!(
        curl_outsider("/admin"),
        (403, "RBAC: access denied".to_string())
    );
    assert!(
        http.lock().unwrap().is_empty(),
        "{:?}",
        http.lock().unwrap()
    );
    assert_eq!(curl_node("/ok"), (200, "ok /ok".to_string()), "{}", d.log());
    assert_eq!(curl_outsider("/ok"), (200, "ok /ok".to_string()));
    {
        let seen = http.lock().unwrap();
        assert_eq!(
            seen.len(),
            2,
            "each allowed request once, no capture loop: {seen:?}"
        );
        for (peer, line) in seen.iter() {
            assert_eq!(peer.ip(), Ipv4Addr::new(127, 0, 0, 6), "{line}");
            assert!(line.starts_with("GET /ok "), "{line}");
        }
    }
    // TCP: the denied port is closed before the server hears of it.
    assert_ne!(
        tcp_from(node.command(probe()).unwrap(), a9090),
        "hello 9090"
    );
    assert_ne!(
        tcp_from(outsider.command(probe()).unwrap(), a9090),
        "hello 9090"
    );
    assert!(tcp.lock().unwrap().is_empty(), "{:?}", tcp.lock().unwrap());
    // Destination-side telemetry.
    let (_, metrics) = curl(
        node.command("curl").unwrap(),
        &format!("http://{ADMIN}/stats/prometheus"),
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("response_code=\"403\"")),
        "{metrics}"
    );

    // Policy removed, no restart: the kernel leaves the pod alone again.
    std::fs::remove_file(config.join("ap.yaml")).unwrap();
    eventually(
        "the policy's removal applies",
        || curl_node("/admin").0 == 200,
        &d,
    );
    assert_eq!(
        tcp_from(node.command(probe()).unwrap(), a9090),
        "hello 9090"
    );
    let seen = http.lock().unwrap().clone();
    assert_eq!(
        seen.last().unwrap().0.ip(),
        node.gateway(),
        "direct delivery: {seen:?}"
    );
    // And back: a new DENY applies to the next connection.
    write(&config, "ap.yaml", DENY_ADMIN_AND_9090);
    eventually(
        "the policy applies again",
        || curl_node("/admin").0 == 403,
        &d,
    );

    // A pod that arrives while the daemon runs is captured too.
    let mut node = node;
    node.add_pod(PodSpec::new("late", &[("app", "server")]))
        .unwrap();
    let late = node.pod("default", "late").unwrap().clone();
    let _late_pause = late.pause().unwrap();
    let late_http = http_server(&late, 8080);
    node.write_config(&config).unwrap();
    d.wait_log(
        &format!(
            "inbound capture attached in the pod's network namespace pod={}",
            late.ip
        ),
        1,
    );
    let url = format!("http://{}/admin", SocketAddr::from((late.ip, 8080)));
    eventually(
        "the new pod's policy applies",
        || curl(node.command("curl").unwrap(), &url) == (403, "RBAC: access denied".to_string()),
        &d,
    );
    assert!(late_http.lock().unwrap().is_empty());
}

#[test]
fn the_old_flag_and_the_opt_out_cannot_be_combined() {
    let strait = strait_tests::demo::mesh::sibling("strait").unwrap();
    let out = std::process::Command::new(strait)
        .args([
            "run",
            "--inbound-capture",
            "--no-inbound-capture",
            "--config",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot be used with"), "{err}");
}

/// Denies `/admin` to everyone, `/private` and TCP port 9090 to anyone
/// but `client` (by source address), `/as-sleep` to the peer identity
/// `foo/sleep` (which a plain-text client does not have), and `/blocked`
/// to `client` only. The HTTP rules name port 8080:
/// on a TCP port Istio ignores a DENY rule's HTTP fields, which would deny
/// every connection to 9090.
fn deny_policies(client: Ipv4Addr) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: DENY
  rules:
  - to: [{{operation: {{ports: [\"8080\"], paths: [/admin]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-strangers, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: DENY
  rules:
  - from: [{{source: {{notIpBlocks: [\"{client}/32\"]}}}}]
    to: [{{operation: {{ports: [\"8080\"], paths: [/private]}}}}]
  - from: [{{source: {{principals: [cluster.local/ns/foo/sa/sleep]}}}}]
    to: [{{operation: {{ports: [\"8080\"], paths: [/as-sleep]}}}}]
  - from: [{{source: {{ipBlocks: [\"{client}/32\"]}}}}]
    to: [{{operation: {{ports: [\"8080\"], paths: [/blocked]}}}}]
  - from: [{{source: {{notIpBlocks: [\"{client}/32\"]}}}}]
    to: [{{operation: {{ports: [\"9090\"]}}}}]
"
    )
}

#[test]
fn without_any_flag_or_ca_a_deny_policy_is_enforced_straight_to_the_pod_ip() {
    let name = "without_any_flag_or_ca_a_deny_policy_is_enforced_straight_to_the_pod_ip";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let (mut node, _pause) = node(&p, "node-inb-d", 94);
    node.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    let svc = node
        .add_service(ServiceDef::app(
            "server",
            "server",
            vec![
                ServicePort::named("http", 8080),
                ServicePort::named("tcp", 9090),
            ],
        ))
        .unwrap()
        .clone();
    let vip = svc.cluster_ip.unwrap();
    let server = node.pod("default", "server").unwrap().clone();
    let client = node.pod("default", "client").unwrap().clone();
    let outsider = node.pod("outside", "outsider").unwrap().clone();
    let http = http_server(&server, 8080);
    let tcp = tcp_server(&server, 9090);
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    write(&config, "ap.yaml", &deny_policies(client.ip));

    // No flag, no CA: the capture is on.
    let d = start_with(&node, &config, &[], "strait.log");
    d.wait_log(
        &format!(
            "inbound capture attached in the pod's network namespace pod={}",
            server.ip
        ),
        1,
    );
    d.wait_log("strait is serving", 1);
    let direct = SocketAddr::from((server.ip, 8080));
    let via_vip = SocketAddr::from((vip, 8080));
    let curl_from = |cmd: std::process::Command, addr: SocketAddr, path: &str| {
        curl(cmd, &format!("http://{addr}{path}"))
    };
    let denied = (403, "RBAC: access denied".to_string());

    // Straight to the pod IP, from the node and from a pod outside the
    // mesh: the DENY policies apply (HTTP 403, TCP closed) and the server
    // never hears of it.
    assert_eq!(
        curl_from(node.command("curl").unwrap(), direct, "/admin"),
        denied,
        "{}",
        d.log()
    );
    assert_eq!(
        curl_from(outsider.command("curl").unwrap(), direct, "/admin"),
        denied
    );
    assert_eq!(
        curl_from(node.command("curl").unwrap(), direct, "/private"),
        denied
    );
    assert_ne!(
        tcp_from(
            node.command(probe()).unwrap(),
            SocketAddr::from((server.ip, 9090))
        ),
        "hello 9090"
    );
    assert_ne!(
        tcp_from(
            outsider.command(probe()).unwrap(),
            SocketAddr::from((server.ip, 9090))
        ),
        "hello 9090"
    );
    assert!(
        http.lock().unwrap().is_empty(),
        "{:?}",
        http.lock().unwrap()
    );
    assert!(tcp.lock().unwrap().is_empty(), "{:?}", tcp.lock().unwrap());
    // An allowed path is delivered once, from 127.0.0.6 (no capture loop).
    assert_eq!(
        curl_from(node.command("curl").unwrap(), direct, "/ok"),
        (200, "ok /ok".to_string())
    );
    assert_eq!(http.lock().unwrap().len(), 1);
    assert_eq!(http.lock().unwrap()[0].0.ip(), Ipv4Addr::new(127, 0, 0, 6));
    // A plain-text client has no peer identity: a DENY naming a principal
    // does not match it (Istio's RBAC for a plaintext peer).
    assert_eq!(
        curl_from(node.command("curl").unwrap(), direct, "/as-sleep"),
        (200, "ok /as-sleep".to_string())
    );
    assert_eq!(
        curl_from(node.command("curl").unwrap(), direct, "/blocked"),
        (200, "ok /blocked".to_string())
    );
    http.lock().unwrap().clear();

    // Through the Service from the meshed client: the node proxy checks
    // with the client's own address and delivers inside the pod, so the
    // client may reach /private and port 9090; /admin stays denied.
    assert_eq!(
        curl_from(client.command("curl").unwrap(), via_vip, "/private"),
        (200, "ok /private".to_string()),
        "{}",
        d.log()
    );
    assert_eq!(
        curl_from(client.command("curl").unwrap(), via_vip, "/admin"),
        denied
    );
    assert_eq!(
        tcp_from(
            client.command(probe()).unwrap(),
            SocketAddr::from((vip, 9090))
        ),
        "hello 9090",
        "{}",
        d.log()
    );
    {
        let seen = http.lock().unwrap();
        assert_eq!(seen.len(), 1, "each allowed request once: {seen:?}");
        assert!(seen[0].1.starts_with("GET /private "), "{seen:?}");
        assert_eq!(seen[0].0.ip(), Ipv4Addr::new(127, 0, 0, 6), "{seen:?}");
    }
    assert_eq!(tcp.lock().unwrap().len(), 1);
    // The meshed client dialling the pod IP itself (no Service): its
    // connection is redirected to the node proxy (Envoy's
    // PassthroughCluster), which checks the pod's policies with the
    // client's address too — no way around a DENY by source address.
    assert_eq!(
        curl_from(client.command("curl").unwrap(), direct, "/blocked"),
        denied,
        "{}",
        d.log()
    );
    assert_eq!(
        curl_from(client.command("curl").unwrap(), direct, "/private"),
        (200, "ok /private".to_string()),
        "{}",
        d.log()
    );
    assert_eq!(
        tcp_from(
            client.command(probe()).unwrap(),
            SocketAddr::from((server.ip, 9090))
        ),
        "hello 9090"
    );
    {
        let seen = http.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].0.ip(), Ipv4Addr::new(127, 0, 0, 6), "{seen:?}");
    }
    drop(d);

    // Opted out: a loud warning naming the workload, and connections
    // straight to the pod IP are no longer checked.
    let d = start_with(&node, &config, &["--no-inbound-capture"], "strait-off.log");
    d.wait_log("strait is serving", 1);
    d.wait_log(
        "inbound capture is OFF (--no-inbound-capture): connections made straight to pod IPs are NOT checked",
        2,
    );
    assert!(
        d.log().contains(&format!("workloads={}", server.ip))
            || d.log().contains(&server.ip.to_string()),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("inbound capture attached"), "{}", d.log());
    eventually(
        "the pod's capture is gone",
        || curl_from(node.command("curl").unwrap(), direct, "/admin").0 == 200,
        &d,
    );
}

#[test]
fn request_authentication_is_checked_for_requests_straight_to_the_pod_ip() {
    let name = "request_authentication_is_checked_for_requests_straight_to_the_pod_ip";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let Some(jwt) = strait_tests::demo::istio_jwt(name) else {
        return;
    };
    let token = |f: &str| strait_tests::demo::jwt_file(&jwt, f);
    let jwks = std::fs::read_to_string(jwt.join("jwks.json")).unwrap();
    let (node, _pause) = node(&p, "node-inb-c", 93);
    let server = node.pod("default", "server").unwrap().clone();
    let http = http_server(&server, 8080);
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    let ra = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwks: '{}'\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require-jwt, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  action: ALLOW\n  rules:\n  - from: [{{source: {{requestPrincipals: [\"*\"]}}}}]\n",
        jwks.replace('\n', " ")
    );
    write(&config, "jwt.yaml", &ra);
    let d = start(&node, &config);
    d.wait_log(
        &format!(
            "inbound capture attached in the pod's network namespace pod={}",
            server.ip
        ),
        1,
    );
    let url = format!("http://{}/headers", SocketAddr::from((server.ip, 8080)));
    let with = |auth: Option<String>| {
        let mut cmd = node.command("curl").unwrap();
        if let Some(a) = auth {
            cmd.args(["-H", &format!("authorization: Bearer {a}")]);
        }
        curl(cmd, &url)
    };
    // No token where a request principal is required: 403.
    assert_eq!(with(None), (403, "RBAC: access denied".to_string()));
    // A tampered token: 401 with Envoy's body.
    let demo = token("demo.jwt");
    let mut parts: Vec<String> = demo.split('.').map(String::from).collect();
    parts[1] = parts[1].chars().rev().collect();
    let (code, body) = with(Some(parts.join(".")));
    assert_eq!(code, 401, "{body}");
    assert!(
        http.lock().unwrap().is_empty(),
        "{:?}",
        http.lock().unwrap()
    );
    // A valid token: delivered.
    assert_eq!(
        with(Some(demo)),
        (200, "ok /headers".to_string()),
        "{}",
        d.log()
    );
    assert_eq!(http.lock().unwrap().len(), 1);
}

/// A server on `port` in `pod` answering each connection's one byte with
/// one byte.
fn echo_byte_server(pod: &Pod, port: u16) {
    let l = pod
        .run_in(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut b = [0u8; 1];
            if c.read_exact(&mut b).is_ok() {
                let _ = c.write_all(&b);
            }
        }
    });
}

/// Median microseconds of `n` connect + one-byte round trips to `addr`,
/// from a thread in `from`'s network namespace.
fn median_connect_us(from: &Pod, addr: SocketAddr, n: usize) -> f64 {
    from.run_in(|| {
        let mut us: Vec<f64> = (0..n)
            .map(|_| {
                let t = Instant::now();
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .expect("connect");
                s.write_all(b"x").unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        us.sort_by(f64::total_cmp);
        us[n / 2]
    })
    .unwrap()
}

/// Measurement, not part of the suite (`-- --ignored --nocapture`): the
/// latency a client outside the mesh sees for a new connection plus one
/// byte each way to a meshed pod without policy, with the in-pod capture
/// attached (the `sk_lookup` program looks the port up and passes) and
/// with `--no-inbound-capture`; and, for scale, to a policy-protected pod
/// (through the plaintext inbound listener). Fails only when the capture
/// makes the no-policy port more than 50% + 100 µs slower.
#[test]
#[ignore]
fn capture_adds_no_latency_to_a_pod_without_policy() {
    let name = "capture_adds_no_latency_to_a_pod_without_policy";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let (mut node, _pause) = node(&p, "node-inb-e", 95);
    node.add_pod(PodSpec::new("guarded", &[("app", "guarded")]))
        .unwrap();
    let guarded = node.pod("default", "guarded").unwrap().clone();
    let _guarded_pause = guarded.pause().unwrap();
    let server = node.pod("default", "server").unwrap().clone();
    let outsider = node.pod("outside", "outsider").unwrap().clone();
    echo_byte_server(&server, 7000);
    echo_byte_server(&guarded, 7000);
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    write(
        &config,
        "ap.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: default}\nspec:\n  selector: {matchLabels: {app: guarded}}\n  action: DENY\n  rules:\n  - to: [{operation: {ports: [\"9999\"]}}]\n",
    );
    let plain = SocketAddr::from((server.ip, 7000));
    let policed = SocketAddr::from((guarded.ip, 7000));
    let n = 2000;
    let rounds = 3;
    let mut on = Vec::new();
    let mut policy = Vec::new();
    {
        let d = start_with(&node, &config, &[], "strait-on.log");
        d.wait_log("inbound capture attached", 2);
        median_connect_us(&outsider, plain, 200);
        for _ in 0..rounds {
            on.push(median_connect_us(&outsider, plain, n));
            policy.push(median_connect_us(&outsider, policed, n));
        }
    }
    let mut off = Vec::new();
    {
        let d = start_with(&node, &config, &["--no-inbound-capture"], "strait-off.log");
        d.wait_log("strait is serving", 1);
        median_connect_us(&outsider, plain, 200);
        for _ in 0..rounds {
            off.push(median_connect_us(&outsider, plain, n));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on_m, off_m, pol_m) = (med(&mut on), med(&mut off), med(&mut policy));
    println!(
        "connect + 1-byte round trip, median of {rounds} rounds of {n} (µs): no policy, capture attached {on_m:.1} {on:?}; --no-inbound-capture {off_m:.1} {off:?}; policy port via 15006 (debug build) {pol_m:.1} {policy:?}"
    );
    assert!(
        on_m <= off_m * 1.5 + 100.0,
        "capture attached: {on_m:.1} µs vs off {off_m:.1} µs"
    );
}
