//! Mutual TLS between workloads across two simulated nodes (HBONE, as
//! ztunnel speaks it): node A runs `strait run --ca-dir` (the embedded CA,
//! also serving node B), node B runs `strait run --ca-address` against it.
//! A client pod on A reaches a server pod on B through a Service and
//! directly by pod IP; the server sees the connection delivered from
//! `127.0.0.6` inside its namespace (the daemon's in-pod delivery), and a
//! capture on the link between the nodes holds none of the payload.
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use strait_tests::node::capture::{self, Capture};
use strait_tests::node::echo::{self, Then};
use strait_tests::node::{MeshPair, Node, PairSpec, ServicePort};

const ECHO_PORT: u16 = 7300;

/// The first line the server sent to a probe from `pod`'s client to `addr`.
fn probe(node: &Node, pod: &str, addr: SocketAddr) -> String {
    node.pod("default", pod).unwrap().probe(addr)
}

/// A server in the pod: sends `<canary> peer=<ip>` to every client.
fn serve_canary(node: &Node, pod: &str, canary: &'static str) -> SocketAddr {
    let p = node.pod("default", pod).unwrap();
    let addr = SocketAddr::from((p.ip, ECHO_PORT));
    let greet = move |peer: SocketAddr| format!("{canary} peer={}", peer.ip());
    echo::tcp(echo::listen(&p.netns, addr).unwrap(), greet, Then::ReadLine);
    addr
}

fn port(name: &str, port: u16) -> ServicePort {
    ServicePort::named(name, port)
}

/// Node A (client pod `client`, service account `sleep`, plus
/// `extra_clients`; the embedded CA) and node B (server pod `server`,
/// service account `echo`), linked; Service `echo` with `ports` selects
/// the server. `before_daemons` runs once the pods exist (start servers
/// there).
fn two_nodes(
    p: &strait_tests::privileged::Privileged,
    index: u8,
    ports: Vec<ServicePort>,
    extra_clients: &[(&str, &str)],
    before_daemons: impl FnOnce(&Node, &Path),
) -> MeshPair {
    let clients: Vec<(&str, &str)> = std::iter::once(("client", "sleep"))
        .chain(extra_clients.iter().copied())
        .collect();
    let spec = PairSpec {
        index,
        ports,
        clients: &clients,
        rust_log: "info,strait::transport=debug",
    };
    MeshPair::start(p, spec, before_daemons)
}

/// Retries `f` until it returns `want` (certificates and listeners come
/// up asynchronously), 90 s at most.
fn eventually(m: &MeshPair, what: &str, want: &str, f: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = f();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {got:?}, want {want:?}\nnode A:\n{}\nnode B:\n{}",
            m.da.log(),
            m.db.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn tcp_between_pods_on_two_nodes_goes_through_hbone_and_the_link_carries_no_plaintext() {
    let name = "tcp_between_pods_on_two_nodes_goes_through_hbone_and_the_link_carries_no_plaintext";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let canary: &'static str = "PLAINTEXT-CANARY-7f3e9a";
    let server_addr = std::sync::OnceLock::new();
    let m = two_nodes(&p, 46, vec![port("tcp-echo", ECHO_PORT)], &[], |b, _| {
        server_addr.set(serve_canary(b, "server", canary)).unwrap();
    });
    let server_addr = *server_addr.get().unwrap();
    let (a, b) = (&m.a, &m.b);
    let svc_addr = SocketAddr::from((m.vip, ECHO_PORT));
    let want = format!("{canary} peer=127.0.0.6");
    eventually(&m, "through the Service", &want, || {
        probe(a, "client", svc_addr)
    });

    let iface = format!("l{}", b.id());
    let cap = Capture::start(a.netns(), &iface).unwrap();
    // Through the Service (kernel L4 service compiled to REDIRECT) and
    // straight to the pod IP: both tunnelled, both delivered from 127.0.0.6.
    for _ in 0..3 {
        assert_eq!(probe(a, "client", svc_addr), want);
    }
    assert_eq!(probe(a, "client", server_addr), want);
    std::thread::sleep(Duration::from_millis(200));
    let frames = cap.stop();
    capture::assert_hbone_only(&frames, canary.as_bytes());

    // Node B logged the client's SPIFFE ID for the tunnelled connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m
        .db
        .log()
        .contains("src.identity=spiffe://cluster.local/ns/default/sa/sleep")
    {
        assert!(Instant::now() < deadline, "node B:\n{}", m.db.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A gRPC-style response body: one DATA frame, then `grpc-status: 0`
/// trailers.
struct GrpcBody {
    data: Option<bytes::Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for GrpcBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(d))));
        }
        std::task::Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(hyper::body::Frame::trailers(t))),
        )
    }
}

/// An HTTP/1.1 + h2c server in the pod on `ports`: answers
/// `<canary> peer=<ip> proto=<version>`; a gRPC request (content-type
/// `application/grpc`) gets it as one gRPC message with `grpc-status: 0`.
fn serve_http(node: &Node, pod: &str, ports: &[u16], canary: &'static str) {
    let p = node.pod("default", pod).unwrap();
    let listeners = ports
        .iter()
        .map(|&port| echo::listen(&p.netns, (p.ip, port)).unwrap())
        .collect();
    echo::hyper(listeners, move |peer, req| {
        let text = format!("{canary} peer={} proto={:?}", peer.ip(), req.version());
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let mut msg = vec![0u8];
            msg.extend((text.len() as u32).to_be_bytes());
            msg.extend(text.as_bytes());
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            http::Response::builder()
                .header("content-type", "application/grpc")
                .body(GrpcBody {
                    data: Some(msg.into()),
                    trailers: Some(t),
                })
                .unwrap()
        } else {
            http::Response::new(GrpcBody {
                data: Some(text.into()),
                trailers: None,
            })
        }
    });
}

/// curl from inside pod `client` (its netns and cgroup): (stdout, stderr).
fn curl(node: &Node, args: &[&str]) -> (String, String) {
    let out = node
        .pod("default", "client")
        .unwrap()
        .command("curl")
        .unwrap()
        .args(["-sS", "-m", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn http1_h2_and_grpc_between_pods_on_two_nodes_go_through_hbone() {
    let name = "http1_h2_and_grpc_between_pods_on_two_nodes_go_through_hbone";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let canary: &'static str = "HTTP-CANARY-51c0de";
    let ports = vec![port("http", 7301), port("http2", 7302), port("grpc", 7303)];
    let m = two_nodes(&p, 48, ports, &[], |b, _| {
        serve_http(b, "server", &[7301, 7302, 7303], canary)
    });
    let a = &m.a;
    let vip = m.vip;
    let server_ip = m.b.pods()[0].ip;
    let h1 = format!("http://{vip}:7301/");
    eventually(
        &m,
        "HTTP/1.1 through the Service",
        &format!("{canary} peer=127.0.0.6 proto=HTTP/1.1"),
        || curl(a, &[&h1]).0,
    );
    let cap = Capture::start(a.netns(), &format!("l{}", m.b.id())).unwrap();
    // HTTP/1.1 via the Service's L7 route, and straight to the pod IP.
    assert_eq!(
        curl(a, &[&h1]).0,
        format!("{canary} peer=127.0.0.6 proto=HTTP/1.1")
    );
    assert_eq!(
        curl(a, &[&format!("http://{server_ip}:7301/")]).0,
        format!("{canary} peer=127.0.0.6 proto=HTTP/1.1")
    );
    // h2 (prior knowledge) on an http2 port: HTTP/2 end to end.
    assert_eq!(
        curl(
            a,
            &["--http2-prior-knowledge", &format!("http://{vip}:7302/")]
        )
        .0,
        format!("{canary} peer=127.0.0.6 proto=HTTP/2.0")
    );
    // h2 straight to the pod IP (PASSTHROUGH, the client's protocol).
    assert_eq!(
        curl(
            a,
            &[
                "--http2-prior-knowledge",
                &format!("http://{server_ip}:7302/")
            ]
        )
        .0,
        format!("{canary} peer=127.0.0.6 proto=HTTP/2.0")
    );
    // gRPC-style: POST application/grpc, a framed message back and the
    // grpc-status trailer.
    let msg = a.tmp_dir().join("grpc-empty-message");
    std::fs::write(&msg, [0u8; 5]).unwrap();
    let data = format!("@{}", msg.display());
    let (body, verbose) = curl(
        a,
        &[
            "-v",
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
            &data,
            &format!("http://{vip}:7303/echo.Echo/Say"),
        ],
    );
    assert!(
        body.contains(&format!("{canary} peer=127.0.0.6 proto=HTTP/2.0")),
        "{body:?}\n{verbose}"
    );
    assert!(verbose.contains("grpc-status: 0"), "{verbose}");
    std::thread::sleep(Duration::from_millis(200));
    let frames = cap.stop();
    assert!(
        !capture::contains(&frames, canary.as_bytes()),
        "HTTP payload crossed the link in plaintext"
    );
    assert!(!capture::contains(&frames, b"GET / HTTP/1.1"));
    assert!(capture::contains(&frames, &[0x17, 0x03, 0x03]));
    // Source-side telemetry: node A's L7 requests that went through the
    // tunnel say so (`mutual_tls`) with both workload identities, as
    // ztunnel's source-side records do.
    let out = a
        .command("curl")
        .unwrap()
        .args(["-sS", "-m", "10", "http://127.0.0.1:15000/stats/prometheus"])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    let source_mtls = |proto: &str| {
        metrics.lines().any(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"source\"")
                && l.contains(&format!("request_protocol=\"{proto}\""))
                && l.contains("connection_security_policy=\"mutual_tls\"")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\"")
                && l.contains("destination_principal=\"spiffe://cluster.local/ns/default/sa/echo\"")
        })
    };
    assert!(
        source_mtls("http"),
        "no source-side mTLS HTTP series in\n{metrics}"
    );
    assert!(
        source_mtls("grpc"),
        "no source-side mTLS gRPC series in\n{metrics}"
    );
}

#[test]
fn authorization_policy_principals_are_enforced_with_the_peer_identity_across_nodes() {
    let name = "authorization_policy_principals_are_enforced_with_the_peer_identity_across_nodes";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let canary: &'static str = "AUTHZ-CANARY-2b7d";
    let server_addr = std::sync::OnceLock::new();
    let m = two_nodes(
        &p,
        50,
        vec![port("tcp-echo", ECHO_PORT)],
        &[("intruder", "other")],
        |b, config| {
            server_addr.set(serve_canary(b, "server", canary)).unwrap();
            std::fs::write(
                config.join("authz.yaml"),
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {name: echo-from-sleep, namespace: default}\n\
                 spec:\n  selector: {matchLabels: {app: echo}}\n  action: ALLOW\n  rules:\n\
                 \x20 - from:\n    - source: {principals: [cluster.local/ns/default/sa/sleep]}\n",
            )
            .unwrap();
        },
    );
    let server_addr = *server_addr.get().unwrap();
    let a = &m.a;
    let svc_addr = SocketAddr::from((m.vip, ECHO_PORT));
    let want = format!("{canary} peer=127.0.0.6");
    // The allowed principal gets through (via the Service and direct).
    eventually(&m, "sleep through the Service", &want, || {
        probe(a, "client", svc_addr)
    });
    assert_eq!(probe(a, "client", server_addr), want);
    // Another service account is refused by node B (401 on the CONNECT):
    // no byte of the server reaches it.
    for addr in [svc_addr, server_addr] {
        let got = probe(a, "intruder", addr);
        assert!(!got.contains(canary), "{addr}: {got:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = m.db.log();
        let denied = log.lines().any(|l| {
            l.contains("src.identity=spiffe://cluster.local/ns/default/sa/other")
                && l.contains("status=401")
        });
        if denied {
            break;
        }
        assert!(Instant::now() < deadline, "node B:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
