//! Tier 3: IPv6 through the node proxy on a dual-stack simulated node
//! (`Node::enable_ipv6`, `strait run --outbound6`). The client pod calls
//! an IPv6 ClusterIP: `connect6` redirects it to the proxy's IPv6 listener
//! with its original destination, so a VirtualService routes it by header,
//! an AuthorizationPolicy DENY sees the IPv6 client address, and the
//! dual-stack Service answers on both of its ClusterIPs through the same
//! routes; the IPv6 listener answers meshed pods only. Across two linked
//! dual-stack nodes with a CA, a pod's TCP to another pod's IPv6 address
//! goes over HBONE to `[pod IPv6]:15008`, is delivered from `::6`, and
//! nothing of the payload crosses the link in plain text.
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use strait_tests::node::capture::{self, Capture};
use strait_tests::node::echo::{self, Seen, Then};
use strait_tests::node::{http, link, Daemon, Node, Pod, PodSpec};

const ECHO_V4: &str = "10.96.200.10";
const ECHO_V6: &str = "fd00:96::10";
const ECHO_B_V6: &str = "fd00:96::11";

/// `curl` from the client pod with `headers`: (status, body); status 0
/// when no HTTP answer came.
fn curl(node: &Node, url: &str, headers: &[&str]) -> (u16, String) {
    let client = node.pod("default", "client").unwrap();
    let mut args: Vec<&str> = headers.iter().flat_map(|h| ["-H", h]).collect();
    args.push(url);
    http::curl(client.command("curl").unwrap(), &args)
}

/// `strait run` on `node` with `args`, its log in the node's directory.
fn start_with(node: &Node, config: &Path, args: &[&str], rust_log: &str) -> Daemon {
    let d = Daemon::on(node, config).quick(rust_log);
    d.args(args).spawn().unwrap()
}

/// Polls `f` until it returns true (generous: the machine is shared).
fn eventually(what: &str, f: impl FnMut() -> bool, d: &Daemon) {
    d.eventually(what, Duration::from_secs(90), Duration::from_millis(250), f);
}

/// The dual-stack Service `echo` (over `echo-a`), the IPv6-only Service
/// `echo-b`, their EndpointSlices (one per family), and a VirtualService
/// sending `x-route: b` to `echo-b`.
fn services(node: &Node) -> String {
    let a = node.pod("default", "echo-a").unwrap();
    let b = node.pod("default", "echo-b").unwrap();
    let slice = |name: &str, svc: &str, family: &str, ip: String| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: {family}\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n---\n"
        )
    };
    let mut y = String::new();
    y += &format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\nspec:\n  selector: {{app: echo-a}}\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  clusterIP: {ECHO_V4}\n  clusterIPs: [\"{ECHO_V4}\", \"{ECHO_V6}\"]\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n---\n"
    );
    y += &format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo-b, namespace: default}}\nspec:\n  selector: {{app: echo-b}}\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n  clusterIP: \"{ECHO_B_V6}\"\n  clusterIPs: [\"{ECHO_B_V6}\"]\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n---\n"
    );
    y += &slice("echo-v4", "echo", "IPv4", a.ip.to_string());
    y += &slice("echo-v6", "echo", "IPv6", a.ip6.unwrap().to_string());
    y += &slice("echo-b-v6", "echo-b", "IPv6", b.ip6.unwrap().to_string());
    y += "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo, namespace: default}\nspec:\n  hosts: [echo.default.svc.cluster.local]\n  http:\n  - match:\n    - headers:\n        x-route: {exact: b}\n    route:\n    - destination: {host: echo-b.default.svc.cluster.local}\n  - route:\n    - destination: {host: echo.default.svc.cluster.local}\n";
    y
}

/// Writes `text` to `dir/name` atomically (the daemon watches `dir`).
fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn ipv6_clusterips_get_l7_routing_and_policy_through_the_proxy() {
    let name = "ipv6_clusterips_get_l7_routing_and_policy_through_the_proxy";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 61).unwrap();
    node.enable_ipv6().unwrap();
    for (pod, app) in [
        ("client", "client"),
        ("echo-a", "echo-a"),
        ("echo-b", "echo-b"),
    ] {
        node.add_pod(PodSpec::new(pod, &[("app", app)])).unwrap();
    }
    // Outside the mesh: the IPv6 outbound listener must not answer it.
    node.add_pod(PodSpec::new(
        "outsider",
        &[("app", "outsider"), ("istio.io/dataplane-mode", "none")],
    ))
    .unwrap();
    let _ = http_server(node.pod("default", "echo-a").unwrap(), "echo-a");
    let _ = http_server(node.pod("default", "echo-b").unwrap(), "echo-b");
    let client6 = node.pod("default", "client").unwrap().ip6.unwrap();
    let client4 = node.pod("default", "client").unwrap().ip;
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    write_atomic(&config, "ipv6.yaml", &services(&node));
    let d = start_with(&node, &config, &[], "info,strait=debug");

    let v6 = format!("http://[{ECHO_V6}]:8080/v6");
    let v4 = format!("http://{ECHO_V4}:8080/v4");
    eventually(
        "the IPv6 ClusterIP answers through the proxy",
        || curl(&node, &v6, &[]).0 == 200,
        &d,
    );
    // The request went through the proxy: the server sees the node, not
    // the client pod (no CA here, so plain text from the node's address).
    // The service's cluster holds the pod's endpoints of both families (as
    // Envoy's cluster for a dual-stack Service does), so the proxy's
    // upstream connection may leave over either; never from the client.
    let (code, body) = curl(&node, &v6, &[]);
    assert_eq!(code, 200, "{body}");
    let via_node = [node.gateway6().to_string(), node.gateway().to_string()]
        .map(|from| format!("echo-a /v6 from {from}"));
    assert!(
        via_node.contains(&body),
        "{body}: not from the node ({via_node:?})"
    );

    // The IPv6 listener's source filter: a pod outside the mesh gets no
    // handshake on [node]:15001 (its connections are not redirected, so it
    // would have to dial the listener itself); a meshed pod's dial is
    // accepted (then closed by the proxy: no original destination).
    let dial = |pod: &str| {
        let outbound6 = SocketAddr::V6(node.outbound6_addr());
        node.pod("default", pod).unwrap().probe(outbound6)
    };
    assert_eq!(dial("outsider"), "error TimedOut");
    assert_ne!(dial("client"), "error TimedOut");

    // VirtualService header match, on the IPv6 ClusterIP.
    let (code, body) = curl(&node, &v6, &["x-route: b"]);
    assert_eq!(
        (code, body.split(' ').next()),
        (200, Some("echo-b")),
        "{body}"
    );
    // The dual-stack Service's IPv4 ClusterIP has the same routes.
    let (code, body) = curl(&node, &v4, &[]);
    assert_eq!(
        (code, body.split(' ').next()),
        (200, Some("echo-a")),
        "{body}"
    );
    let (code, body) = curl(&node, &v4, &["x-route: b"]);
    assert_eq!(
        (code, body.split(' ').next()),
        (200, Some("echo-b")),
        "{body}"
    );

    // An IPv6-only Service reached straight on its ClusterIP.
    let (code, body) = curl(&node, &format!("http://[{ECHO_B_V6}]:8080/b"), &[]);
    assert_eq!(
        (code, body.split(' ').next()),
        (200, Some("echo-b")),
        "{body}"
    );

    // DENY the client's IPv6 address on echo-a: its IPv6 requests get
    // Envoy's 403, its IPv4 ones (another source address) still pass.
    let deny = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-client6, namespace: default}}\nspec:\n  selector:\n    matchLabels: {{app: echo-a}}\n  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"{client6}/128\"]\n"
    );
    write_atomic(&config, "policy.yaml", &deny);
    eventually(
        "the DENY policy applies to the IPv6 client",
        || curl(&node, &v6, &[]).0 == 403,
        &d,
    );
    let (code, body) = curl(&node, &v6, &[]);
    assert_eq!(code, 403);
    assert!(body.contains("RBAC: access denied"), "{body}");
    let (code, body) = curl(&node, &v4, &[]);
    assert_eq!(
        (code, body.split(' ').next()),
        (200, Some("echo-a")),
        "{body}"
    );
    // The same policy over the IPv4 address denies the IPv4 client too.
    write_atomic(
        &config,
        "policy.yaml",
        &deny.replace(&format!("{client6}/128"), &format!("{client4}/32")),
    );
    eventually(
        "the DENY policy follows to the IPv4 address",
        || curl(&node, &v4, &[]).0 == 403 && curl(&node, &v6, &[]).0 == 200,
        &d,
    );
    let log = d.log();
    assert!(
        !log.contains("no IPv6 listener"),
        "an IPv6 VIP was refused although --outbound6 is set:\n{log}"
    );
}

#[test]
fn ipv6_pod_to_pod_across_two_nodes_goes_through_hbone() {
    let name = "ipv6_pod_to_pod_across_two_nodes_goes_through_hbone";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let canary: &'static str = "V6-PLAINTEXT-CANARY-51c2";
    let mut a = Node::new(&p.cgroup2, "node-a", 62).unwrap();
    let mut b = Node::new(&p.cgroup2, "node-b", 63).unwrap();
    a.enable_ipv6().unwrap();
    b.enable_ipv6().unwrap();
    let mut client = PodSpec::new("client", &[("app", "client")]);
    client.service_account = "sleep".into();
    a.add_pod(client).unwrap();
    let mut server = PodSpec::new("server", &[("app", "echo")]);
    server.service_account = "echo".into();
    b.add_pod(server).unwrap();
    link(&a, &b).unwrap();
    // The server (both families): `<canary> peer=<ip>` to every client.
    let srv = b.pod("default", "server").unwrap();
    let server6 = SocketAddr::from((srv.ip6.unwrap(), 7300));
    let l = echo::listen(&srv.netns, (Ipv6Addr::UNSPECIFIED, 7300)).unwrap();
    echo::tcp(
        l,
        move |peer| format!("{canary} peer={}", peer.ip().to_canonical()),
        Then::ReadLine,
    );
    let config = a.tmp_dir().join("config");
    a.write_config(&config).unwrap();
    b.write_config(&config).unwrap();
    // Node A: the embedded CA, serving node B too.
    let ca_dir = a.tmp_dir().join("ca");
    let tokens = a.tmp_dir().join("tokens");
    std::fs::write(&tokens, "node-b-token-0123456789 node-b\n").unwrap();
    let token_b = b.tmp_dir().join("token");
    std::fs::write(&token_b, "node-b-token-0123456789\n").unwrap();
    let ca_listen = format!("{}:15012", a.gateway());
    let da = start_with(
        &a,
        &config,
        &[
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--ca-listen",
            &ca_listen,
            "--ca-tokens",
            tokens.to_str().unwrap(),
        ],
        "info,strait::transport=debug",
    );
    let root = ca_dir.join("root-cert.pem");
    eventually("the CA's root", || root.exists(), &da);
    let db = start_with(
        &b,
        &config,
        &[
            "--ca-address",
            &format!("https://{ca_listen}"),
            "--ca-root",
            root.to_str().unwrap(),
            "--ca-token-file",
            token_b.to_str().unwrap(),
        ],
        "info,strait::transport=debug",
    );
    let probe = || a.pod("default", "client").unwrap().probe(server6);
    // Delivered inside the server pod by node B's daemon (from `::6`,
    // Istio's IPv6 inbound passthrough source), not by the client.
    let want = format!("{canary} peer=::6");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = probe();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod IPv6 to pod IPv6: {got:?}, want {want:?}\nnode A:\n{}\nnode B:\n{}",
            da.log(),
            db.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let iface = format!("l{}", b.id());
    let cap = Capture::start(a.netns(), &iface).unwrap();
    for _ in 0..3 {
        assert_eq!(probe(), want);
    }
    std::thread::sleep(Duration::from_millis(200));
    let frames = cap.stop();
    // The tunnel only: TCP to port 15008 and TLS application data.
    capture::assert_hbone_only(&frames, canary.as_bytes());
    // Over IPv6: an IPv6 header (version 6) to node B's pod CIDR.
    let server_ip = srv.ip6.unwrap().octets();
    assert!(
        capture::contains(&frames, &server_ip),
        "no frame to the server's IPv6 address"
    );
}

/// A server on `[::]:port` in `pod` (both families): records the peer,
/// answers `hello <port> from <peer>` and closes.
fn hello_server(pod: &Pod, port: u16) -> Seen {
    let l = echo::listen(&pod.netns, (Ipv6Addr::UNSPECIFIED, port)).unwrap();
    echo::tcp(
        l,
        move |peer| format!("hello {port} from {}", peer.ip().to_canonical()),
        Then::Close,
    )
}

/// An HTTP server on `[::]:8080` in `pod` (both families: a new
/// namespace's `bindv6only` is 0): records each peer, answers
/// `<name> <path> from <peer ip>` and closes.
fn http_server(pod: &Pod, name: &'static str) -> Seen {
    let l = echo::listen(&pod.netns, (Ipv6Addr::UNSPECIFIED, 8080)).unwrap();
    echo::http(l, move |peer, path| {
        format!("{name} {path} from {}", peer.ip().to_canonical())
    })
}

/// `strait-probe tcp ADDR` from `pod`: the server's first line, or
/// `error <kind>`.
fn tcp_from(pod: &Pod, addr: SocketAddr) -> String {
    pod.probe(addr)
}

/// `curl` from `pod`: (status, body); status 0 when no HTTP answer came.
fn curl_from(pod: &Pod, url: &str) -> (u16, String) {
    http::curl(pod.command("curl").unwrap(), &[url])
}

const STRICT_9090_DISABLE: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: server, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9090: {mode: DISABLE}
";

const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin]}}]
";

/// A dual-stack node with a meshed pod `server`, meshed pods `meshed`
/// after it, and a pod `outsider` in a namespace outside the mesh.
fn inpod_node(
    p: &strait_tests::privileged::Privileged,
    name: &str,
    index: u8,
    meshed: &[&str],
) -> Node {
    let mut node = Node::new(&p.cgroup2, name, index).unwrap();
    node.enable_ipv6().unwrap();
    for pod in std::iter::once(&"server").chain(meshed) {
        node.add_pod(PodSpec::new(pod, &[("app", pod)])).unwrap();
    }
    let mut outsider = PodSpec::new("outsider", &[("app", "outsider")]);
    outsider.namespace = "outside".into();
    node.add_pod(outsider).unwrap();
    node.set_namespace_labels("outside", &[]);
    node
}

#[test]
fn inpod_capture_enforces_strict_and_policy_on_a_dual_stack_pods_ipv6_address() {
    let name = "inpod_capture_enforces_strict_and_policy_on_a_dual_stack_pods_ipv6_address";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let node = inpod_node(&p, "node-inb6", 64, &["client"]);
    let client = node.pod("default", "client").unwrap().clone();
    let server = node.pod("default", "server").unwrap().clone();
    let outsider = node.pod("outside", "outsider").unwrap().clone();
    let _pause = server.pause().unwrap();
    let v6 = server.ip6.unwrap();
    let (h6, h4) = (
        SocketAddr::from((v6, 8080)),
        SocketAddr::from((server.ip, 8080)),
    );
    let t6 = SocketAddr::from((v6, 9090));
    let http = http_server(&server, "ok");
    let tcp = hello_server(&server, 9090);
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    write_atomic(&config, "pa.yaml", STRICT_9090_DISABLE);
    // No CA: the capture is on by default (`strait_run` passes
    // `--outbound6`, which takes the meshed client's IPv6 connections to
    // the node proxy).
    let d = start_with(&node, &config, &[], "info,strait=debug");
    eventually(
        "the capture is attached",
        || {
            d.log().contains(&format!(
                "inbound capture attached in the pod's network namespace pod={}",
                server.ip
            ))
        },
        &d,
    );
    // STRICT: a plain-text client outside the mesh gets no byte through,
    // over IPv6 exactly as over IPv4; the server never accepts.
    eventually(
        "STRICT refuses IPv6 plain text",
        || tcp_from(&outsider, h6) == "error ConnectionRefused",
        &d,
    );
    assert_eq!(tcp_from(&outsider, h4), "error ConnectionRefused");
    assert_eq!(curl_from(&outsider, &format!("http://{h6}/")).0, 0);
    assert!(
        http.lock().unwrap().is_empty(),
        "the STRICT port's server saw {:?}",
        http.lock().unwrap()
    );
    // portLevelMtls DISABLE: that port takes IPv6 plain text, untouched.
    assert_eq!(
        tcp_from(&outsider, t6),
        format!("hello 9090 from {}", outsider.ip6.unwrap())
    );
    assert_eq!(tcp.lock().unwrap().len(), 1);

    // PERMISSIVE with a DENY policy: plain text over either family goes
    // through the pod's policy listener of that family (403, or delivered
    // from 127.0.0.6 / `::6` inside the pod), never unchecked.
    write_atomic(
        &config,
        "pa.yaml",
        &STRICT_9090_DISABLE.replace("STRICT", "PERMISSIVE"),
    );
    write_atomic(&config, "ap.yaml", DENY_ADMIN);
    eventually(
        "the DENY policy applies over IPv4 and IPv6",
        || {
            curl_from(&outsider, &format!("http://{h4}/admin")).0 == 403
                && curl_from(&outsider, &format!("http://{h6}/admin")).0 == 403
        },
        &d,
    );
    assert_eq!(
        curl_from(&outsider, &format!("http://{h4}/ok")),
        (200, "ok /ok from 127.0.0.6".to_string())
    );
    assert_eq!(
        curl_from(&outsider, &format!("http://{h6}/admin")),
        (403, "RBAC: access denied".to_string())
    );
    assert_eq!(
        curl_from(&outsider, &format!("http://{h6}/ok")),
        (200, "ok /ok from ::6".to_string()),
        "{}",
        d.log()
    );
    assert_eq!(
        echo::peers(&http),
        [
            std::net::IpAddr::from([127, 0, 0, 6]),
            std::net::IpAddr::from(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6))
        ],
        "only the two allowed requests reached the server"
    );
    // A meshed client on the node dialling the pod's IPv6 address: the
    // node proxy checks the policy and delivers from `::6` inside the pod,
    // which the kernel program lets through.
    assert_eq!(
        curl_from(&client, &format!("http://{h6}/admin")),
        (403, "RBAC: access denied".to_string()),
        "{}",
        d.log()
    );
    assert_eq!(
        curl_from(&client, &format!("http://{h6}/ok")),
        (200, "ok /ok from ::6".to_string()),
        "{}",
        d.log()
    );

    // An L4 ALLOW for the outsider's IPv6 address only: the policy
    // listener sees the client's own IPv6 address as `source.ip`, so its
    // IPv6 connection is allowed (delivered from `::6`) and its IPv4 one
    // is closed unanswered (RBAC), on the DISABLE port as on the others.
    let allow = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-v6, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  action: ALLOW\n  rules:\n  - from: [{{source: {{ipBlocks: [\"{}/128\"]}}}}]\n",
        outsider.ip6.unwrap()
    );
    write_atomic(&config, "ap.yaml", &allow);
    let t4 = SocketAddr::from((server.ip, 9090));
    eventually(
        "the IPv6-only ALLOW applies",
        || tcp_from(&outsider, t6) == "hello 9090 from ::6",
        &d,
    );
    let denied = tcp_from(&outsider, t4);
    assert!(
        !denied.starts_with("hello"),
        "IPv4 from a source the ALLOW does not name was delivered: {denied}"
    );
    assert_eq!(
        curl_from(&outsider, &format!("http://{h6}/any")),
        (200, "ok /any from ::6".to_string())
    );
    assert_ne!(curl_from(&outsider, &format!("http://{h4}/any")).0, 200);
    assert!(
        !echo::peers(&tcp).contains(&std::net::IpAddr::from([127, 0, 0, 6])),
        "the denied IPv4 connection reached the pod: {:?}",
        tcp.lock().unwrap()
    );

    // PERMISSIVE without policy: IPv6 plain text reaches the pod directly.
    std::fs::remove_file(config.join("ap.yaml")).unwrap();
    eventually(
        "PERMISSIVE without policy serves IPv6",
        || {
            curl_from(&outsider, &format!("http://{h6}/p"))
                == (200, format!("ok /p from {}", outsider.ip6.unwrap()))
        },
        &d,
    );
}

/// Rewrites the Pod `name` in the pods file [`Node::write_config`] wrote
/// for `node` into `config` with `f` (what a test cannot say through
/// `PodSpec`: an IPv6-only status, container probes).
fn edit_pod(node: &Node, config: &Path, name: &str, f: impl Fn(&mut serde_yaml::Value)) {
    use serde::Deserialize;
    let file = format!("k8s-pods-{}.yaml", node.name());
    let text = std::fs::read_to_string(config.join(&file)).unwrap();
    let mut out = String::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut v = serde_yaml::Value::deserialize(doc).unwrap();
        if v["metadata"]["name"].as_str() == Some(name) {
            f(&mut v);
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&v).unwrap());
    }
    write_atomic(config, &file, &out);
}

/// `yaml` parsed as a YAML value.
fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn inpod_capture_covers_an_ipv6_only_pod() {
    let name = "inpod_capture_covers_an_ipv6_only_pod";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let node = inpod_node(&p, "node-v6only", 65, &[]);
    let server = node.pod("default", "server").unwrap().clone();
    let outsider = node.pod("outside", "outsider").unwrap().clone();
    // IPv6-only: no IPv4 address in the pod, none in its status.
    let st = std::process::Command::new("ip")
        .args(["-n", &server.netns, "addr", "del"])
        .arg(format!("{}/32", server.ip))
        .args(["dev", "eth0"])
        .status()
        .unwrap();
    assert!(st.success());
    let _pause = server.pause().unwrap();
    let v6 = server.ip6.unwrap();
    let (h6, t6) = (SocketAddr::from((v6, 8080)), SocketAddr::from((v6, 9090)));
    let http = http_server(&server, "ok");
    let _tcp = hello_server(&server, 9090);
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    edit_pod(&node, &config, "server", |p| {
        p["status"]["podIP"] = yaml(&format!("\"{v6}\""));
        p["status"]["podIPs"] = yaml(&format!("[{{ip: \"{v6}\"}}]"));
    });
    write_atomic(&config, "pa.yaml", STRICT_9090_DISABLE);
    // With a CA: the HBONE listener opens on `[pod IPv6]:15008` too.
    let ca = node.tmp_dir().join("ca");
    let d = start_with(
        &node,
        &config,
        &["--ca-dir", ca.to_str().unwrap()],
        "info,strait=debug",
    );
    eventually(
        "the IPv6-only pod is captured",
        || {
            d.log().contains(&format!(
                "inbound capture attached in the pod's network namespace pod={v6}"
            ))
        },
        &d,
    );
    assert!(
        !d.log().contains("NOT enforced"),
        "the IPv6-only pod was reported unenforced:\n{}",
        d.log()
    );
    // STRICT: IPv6 plain text from outside the mesh is refused in the
    // kernel; the DISABLE port takes it untouched.
    eventually(
        "STRICT refuses plain text to the IPv6-only pod",
        || tcp_from(&outsider, h6) == "error ConnectionRefused",
        &d,
    );
    assert_eq!(curl_from(&outsider, &format!("http://{h6}/")).0, 0);
    assert!(http.lock().unwrap().is_empty());
    assert_eq!(
        tcp_from(&outsider, t6),
        format!("hello 9090 from {}", outsider.ip6.unwrap())
    );
    // 15008 reaches the daemon's HBONE listener in the pod.
    eventually(
        "the HBONE listener on the pod's IPv6 address",
        || {
            d.log().contains(&format!(
                "HBONE listener open pod=default/server addr=[{v6}]:15008"
            ))
        },
        &d,
    );
    let hbone = outsider
        .run_in(|| {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from((v6, 15008)),
                Duration::from_secs(5),
            )
        })
        .unwrap();
    assert!(hbone.is_ok(), "[{v6}]:15008: {hbone:?}");

    // PERMISSIVE with an L7 DENY: the IPv6 policy listener decides.
    write_atomic(
        &config,
        "pa.yaml",
        &STRICT_9090_DISABLE.replace("STRICT", "PERMISSIVE"),
    );
    write_atomic(&config, "ap.yaml", DENY_ADMIN);
    eventually(
        "the DENY policy applies to the IPv6-only pod",
        || curl_from(&outsider, &format!("http://{h6}/admin")).0 == 403,
        &d,
    );
    assert_eq!(
        curl_from(&outsider, &format!("http://{h6}/ok")),
        (200, "ok /ok from ::6".to_string())
    );
    assert_eq!(
        echo::peers(&http),
        [std::net::IpAddr::from(Ipv6Addr::new(
            0, 0, 0, 0, 0, 0, 0, 6
        ))]
    );
}

const STRICT_SERVER: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: server, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: STRICT}
";

/// ALLOW only a documentation address: every other client is denied.
const ALLOW_NOBODY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nobody, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {ipBlocks: [192.0.2.1/32]}}]
";

#[test]
fn kubelet_probes_from_the_node_pass_a_strict_pod_and_other_plain_text_does_not() {
    let name = "kubelet_probes_from_the_node_pass_a_strict_pod_and_other_plain_text_does_not";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let node = inpod_node(&p, "node-probes", 66, &[]);
    let server = node.pod("default", "server").unwrap().clone();
    let outsider = node.pod("outside", "outsider").unwrap().clone();
    let _pause = server.pause().unwrap();
    let _http = http_server(&server, "ok");
    let _probe = hello_server(&server, 9090);
    let _app = hello_server(&server, 9091);
    let (p4, p6) = (
        SocketAddr::from((server.ip, 9090)),
        SocketAddr::from((server.ip6.unwrap(), 9090)),
    );
    let app4 = SocketAddr::from((server.ip, 9091));
    let config = node.tmp_dir().join("config");
    node.write_config(&config).unwrap();
    // The pod's probes: HTTP on a named port (8080), TCP on 9090. 9091 is
    // served but not probed.
    edit_pod(&node, &config, "server", |p| {
        let c = &mut p["spec"]["containers"][0];
        c["ports"] = yaml("[{name: http, containerPort: 8080}]");
        c["livenessProbe"] = yaml("{httpGet: {path: /healthz, port: http}}");
        c["readinessProbe"] = yaml("{tcpSocket: {port: 9090}}");
    });
    write_atomic(&config, "pa.yaml", STRICT_SERVER);
    // What kubelet is: a process in the node's namespace, outside the
    // pods cgroup, dialling the pod IP without binding.
    let from_node = |addr: SocketAddr| node.probe(addr);
    let curl_node = |url: &str| http::curl(node.command("curl").unwrap(), &[url]);
    let (gw4, gw6) = (node.gateway(), node.gateway6());
    // `--outbound6 auto` (the DaemonSet's) finds the node's IPv6 address
    // beside its IPv4 one.
    assert_eq!(
        node.run_in(|| strait::daemon::cli::node_ipv6(gw4)).unwrap(),
        Some(gw6)
    );
    let d = start_with(&node, &config, &[], "info,strait=debug");
    eventually(
        "STRICT refuses the outsider",
        || tcp_from(&outsider, p4) == "error ConnectionRefused",
        &d,
    );
    // The probes pass, over both families, untouched (the pod sees the
    // node's address)...
    assert_eq!(from_node(p4), format!("hello 9090 from {gw4}"));
    assert_eq!(from_node(p6), format!("hello 9090 from {gw6}"));
    assert_eq!(
        curl_node(&format!("http://{}:8080/healthz", server.ip)),
        (200, format!("ok /healthz from {gw4}"))
    );
    // ...while other plain text stays refused: the outsider on the probe
    // ports, the node on a port no probe names.
    assert_eq!(tcp_from(&outsider, p6), "error ConnectionRefused");
    assert_eq!(
        curl_from(&outsider, &format!("http://{}:8080/healthz", server.ip)).0,
        0
    );
    assert_eq!(from_node(app4), "error ConnectionRefused");

    // PERMISSIVE with an ALLOW naming nobody: the probe port is still
    // delivered untouched, the other port goes through the policy
    // listener and is denied.
    write_atomic(
        &config,
        "pa.yaml",
        &STRICT_SERVER.replace("STRICT", "PERMISSIVE"),
    );
    write_atomic(&config, "ap.yaml", ALLOW_NOBODY);
    eventually(
        "the ALLOW denies the outsider",
        || {
            let got = tcp_from(&outsider, p4);
            got != "error ConnectionRefused" && !got.starts_with("hello")
        },
        &d,
    );
    assert_eq!(from_node(p4), format!("hello 9090 from {gw4}"));
    assert!(!from_node(app4).starts_with("hello"));

    // --no-probe-exemption: the node's probes are captured like any
    // other client.
    std::fs::remove_file(config.join("ap.yaml")).unwrap();
    write_atomic(&config, "pa.yaml", STRICT_SERVER);
    drop(d);
    let d = start_with(
        &node,
        &config,
        &["--no-probe-exemption"],
        "info,strait=debug",
    );
    eventually(
        "without the exemption the node's probe is refused",
        || from_node(p4) == "error ConnectionRefused",
        &d,
    );
    assert_eq!(from_node(p6), "error ConnectionRefused");
}
