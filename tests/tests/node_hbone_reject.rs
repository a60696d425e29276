//! HBONE's refusals across simulated nodes, with real daemons and real
//! HBONE on the links between the nodes, and rogue peers built with rustls
//! and rcgen inside the nodes' namespaces:
//!
//! - the destination node refuses a peer presenting a certificate from
//!   another root, a certificate of another trust domain, a TLS 1.2-only
//!   peer and a peer without a client certificate, and its pod gets no
//!   byte (a well-formed peer, built the same way, gets through: the
//!   rogue code can succeed);
//! - the source node refuses a destination whose certificate carries
//!   another SPIFFE ID (the client gets the connection closed, the rogue
//!   destination no request);
//! - the source node dials tunnels from the source pod's IP (inside the
//!   pod's namespace, as ztunnel's in-pod mode) and sends ztunnel's
//!   `baggage` and a fresh `traceparent` on each `CONNECT`.
//!
//! Node A runs `strait run --ca-dir` (the embedded CA, also serving node
//! B); node B runs `strait run --ca-address`; node C runs no daemon: its
//! pods' port 15008 is served by the test (a mesh-looking destination).
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use strait::identity::ca::Authority;
use strait::identity::{CertStore, SpiffeId, WorkloadCert};
use strait::transport::hbone::tls;
use strait_tests::node::echo;
use strait_tests::node::{link, Daemon, MeshCa, Node, PodSpec, ServiceDef, ServicePort};

const ECHO_PORT: u16 = 7300;
const TD: &str = "cluster.local";

/// `strait run` on `node` with `args` after the test's own flags.
fn start<S: AsRef<std::ffi::OsStr>>(node: &Node, config: &Path, args: Vec<S>) -> Daemon {
    let d = Daemon::on(node, config).quick("info,strait::transport=debug");
    d.args(args).sigterm_on_drop().spawn().unwrap()
}

/// Starts node `a`'s daemon with the embedded CA (serving `clients`) and
/// waits for the CA's files.
fn start_ca_node(a: &Node, config: &Path, clients: &[&Node]) -> (Daemon, MeshCa) {
    let ca = MeshCa::new(a, clients).unwrap();
    let mut d = start(a, config, ca.server_args());
    d.wait_file(&ca.dir.join("ca-key.pem"));
    d.wait_file(&ca.root());
    // The files are written one after the other: give the last one a moment.
    std::thread::sleep(Duration::from_millis(300));
    (d, ca)
}

fn pod(ns_name: &str, sa: &str) -> PodSpec {
    let mut p = PodSpec::new(ns_name, &[("app", ns_name)]);
    p.service_account = sa.into();
    p
}

/// A certificate for `id` signed by `ca`, as the mesh CA issues them.
fn issue(ca: &Authority, id: &SpiffeId) -> Arc<WorkloadCert> {
    Arc::new(ca.issue(id, Duration::from_secs(3600)).unwrap())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `probe tcp` from pod `name` on `node`: the first line it read.
fn probe(node: &Node, name: &str, addr: SocketAddr) -> String {
    node.pod("default", name).unwrap().probe(addr)
}

/// A server in the pod sending `<canary>` to every client; records each
/// connection and the line the client sent.
struct Canary {
    addr: SocketAddr,
    seen: echo::Seen,
}

impl Canary {
    fn accepted(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn received(&self) -> String {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(_, got)| got.as_str()).collect()
    }
}

fn serve_canary(node: &Node, name: &str, canary: &'static str) -> Canary {
    let p = node.pod("default", name).unwrap();
    let addr = SocketAddr::from((p.ip, ECHO_PORT));
    let l = echo::listen(&p.netns, addr).unwrap();
    let seen = echo::tcp(l, move |_| canary.to_string(), echo::Then::ReadLine);
    Canary { addr, seen }
}

/// What a rogue peer presents.
struct Rogue {
    what: &'static str,
    cert: Option<Arc<WorkloadCert>>,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
}

/// Dials `hbone` (a pod IP's 15008) as `rogue`, sends a `CONNECT` to
/// `target`, a payload, and returns the first line from the pod, or why
/// there was none.
async fn rogue_connect(
    rogue: &Rogue,
    roots: &CertStore,
    expect: &SpiffeId,
    hbone: SocketAddr,
    target: SocketAddr,
) -> Result<String, String> {
    // Every suite and version rustls has: the server must do the refusing.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rogue.versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::SpiffeServerVerifier::new(
            roots.root_store(),
            vec![expect.to_string()],
        )));
    let mut cfg = match &rogue.cert {
        Some(c) => b
            .with_client_auth_cert(c.chain.clone(), c.private_key())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg.enable_sni = false;
    let work = async {
        let tcp = tokio::net::TcpStream::connect(hbone)
            .await
            .map_err(|e| format!("tcp: {e}"))?;
        let name = rustls_pki_types::ServerName::IpAddress(hbone.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut tx, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(target.to_string())
            .version(http::Version::HTTP_2)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        tx.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| format!("CONNECT: {e}"))?;
        if resp.status() != 200 {
            return Err(format!("CONNECT answered {}", resp.status()));
        }
        let up = hyper::upgrade::on(resp)
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let mut io = hyper_util::rt::TokioIo::new(up);
        io.write_all(format!("ROGUE-PAYLOAD {}\n", rogue.what).as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        // Everything the pod sends, to its close (it closes once it has
        // read the payload line).
        let mut buf = Vec::new();
        io.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&buf).trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[test]
fn rogue_peers_on_another_node_are_refused_by_the_destination_node_and_the_pod_gets_no_byte() {
    let name =
        "rogue_peers_on_another_node_are_refused_by_the_destination_node_and_the_pod_gets_no_byte";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let canary: &'static str = "REJECT-CANARY-c41d";
    let mut a = Node::new(&p.cgroup2, "node-a", 52).unwrap();
    let mut b = Node::new(&p.cgroup2, "node-b", 53).unwrap();
    a.add_pod(pod("rogue", "sleep")).unwrap();
    b.add_pod(pod("server", "echo")).unwrap();
    link(&a, &b).unwrap();
    let config = a.tmp_dir().join("config");
    a.write_config(&config).unwrap();
    b.write_config(&config).unwrap();
    let server = serve_canary(&b, "server", canary);
    let (da, ca) = start_ca_node(&a, &config, &[&b]);
    let db = start(&b, &config, ca.client_args(&b).unwrap());
    let logs = || format!("node A:\n{}\nnode B:\n{}", da.log(), db.log());

    let mesh_ca = Authority::load_or_generate(&ca.dir, TD).unwrap();
    let other_root = Authority::generate(TD).unwrap();
    let roots = CertStore::new(vec![mesh_ca.root().clone()]);
    let sleep = SpiffeId::new(TD, "default", "sleep");
    let echo = SpiffeId::new(TD, "default", "echo");
    const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let good = Rogue {
        what: "mesh certificate",
        cert: Some(issue(&mesh_ca, &sleep)),
        versions: TLS13,
    };
    let rogues = [
        Rogue {
            what: "another root",
            cert: Some(issue(&other_root, &sleep)),
            versions: TLS13,
        },
        Rogue {
            what: "another trust domain",
            cert: Some(issue(
                &mesh_ca,
                &SpiffeId::new("evil.example", "default", "sleep"),
            )),
            versions: TLS13,
        },
        Rogue {
            what: "TLS 1.2 only",
            cert: Some(issue(&mesh_ca, &sleep)),
            versions: TLS12,
        },
        Rogue {
            what: "no client certificate",
            cert: None,
            versions: TLS13,
        },
    ];
    let hbone = SocketAddr::from((server.addr.ip(), 15008));
    let rogue_pod = a.pod("default", "rogue").unwrap();

    // The well-formed peer, built by the same code, gets through once node
    // B's listener is up (certificates come asynchronously).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = rogue_pod
            .run_in(|| rt().block_on(rogue_connect(&good, &roots, &echo, hbone, server.addr)))
            .unwrap();
        if got.as_deref() == Ok(canary) {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    let accepted = server.accepted();
    assert_eq!(accepted, 1, "{}", logs());

    for r in &rogues {
        let got = rogue_pod
            .run_in(|| rt().block_on(rogue_connect(r, &roots, &echo, hbone, server.addr)))
            .unwrap();
        assert!(got.is_err(), "{}: {got:?}\n{}", r.what, logs());
        eprintln!("{}: refused ({})", r.what, got.unwrap_err());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.accepted(),
        accepted,
        "a rogue peer reached the pod\n{}",
        logs()
    );
    let received = server.received();
    assert_eq!(received, "ROGUE-PAYLOAD mesh certificate\n");
    // Node B saw only the well-formed peer's tunnel.
    let opened = db
        .log()
        .lines()
        .filter(|l| l.contains("inbound HBONE connection opened"))
        .count();
    assert_eq!(opened, 1, "{}", logs());
}

/// What the test's HBONE destination saw.
#[derive(Debug, Default)]
struct Seen {
    /// TLS handshakes that completed.
    handshakes: usize,
    /// `CONNECT` requests: TCP peer, headers.
    requests: Vec<(SocketAddr, http::HeaderMap)>,
}

/// An HBONE destination in pod `name` on `node` (no daemon there): mesh
/// TLS with `cert`, answers every `CONNECT` 200 and writes `<reply>` on
/// the stream.
fn fake_destination(
    node: &Node,
    name: &str,
    cert: Arc<WorkloadCert>,
    roots: &CertStore,
    reply: &'static str,
) -> Arc<Mutex<Seen>> {
    let p = node.pod("default", name).unwrap();
    let addr = SocketAddr::from((p.ip, 15008));
    let l = p.run_in(|| TcpListener::bind(addr)).unwrap().unwrap();
    l.set_nonblocking(true).unwrap();
    let verifier = tls::SpiffeClientVerifier::new(roots.root_store(), TD).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(cert.chain.clone(), cert.private_key())
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let cfg = Arc::new(cfg);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((tcp, remote)) = l.accept().await else {
                    continue;
                };
                let (cfg, seen) = (cfg.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await else {
                        return;
                    };
                    seen.lock().unwrap().handshakes += 1;
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let seen = seen.clone();
                        async move {
                            seen.lock()
                                .unwrap()
                                .requests
                                .push((remote, req.headers().clone()));
                            tokio::spawn(async move {
                                if let Ok(up) = hyper::upgrade::on(req).await {
                                    let mut io = hyper_util::rt::TokioIo::new(up);
                                    let _ = io.write_all(format!("{reply}\n").as_bytes()).await;
                                    let mut buf = [0u8; 64];
                                    let _ = io.read(&mut buf).await;
                                    let _ = io.shutdown().await;
                                }
                            });
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
    });
    out
}

fn header(h: &http::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_source_node_dials_from_the_pod_ip_sends_trace_headers_and_refuses_a_wrong_spiffe_id() {
    let name =
        "the_source_node_dials_from_the_pod_ip_sends_trace_headers_and_refuses_a_wrong_spiffe_id";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mut a = Node::new(&p.cgroup2, "node-a", 55).unwrap();
    let mut c = Node::new(&p.cgroup2, "node-c", 56).unwrap();
    let mut client = pod("client", "sleep");
    client.labels.insert("version".into(), "v7".into());
    a.add_pod(client).unwrap();
    c.add_pod(pod("tap", "tap")).unwrap();
    c.add_pod(pod("impostor", "web")).unwrap();
    // Service `web` (HTTP) selects the impostor: the L7 path's refusal.
    let web = ServiceDef::app("web", "impostor", vec![ServicePort::named("http", 7301)]);
    let web_vip = a.add_service(web.clone()).unwrap().cluster_ip.unwrap();
    c.add_service(web).unwrap();
    link(&a, &c).unwrap();
    let config = a.tmp_dir().join("config");
    a.write_config(&config).unwrap();
    c.write_config(&config).unwrap();
    let (da, ca) = start_ca_node(&a, &config, &[&c]);

    let mesh_ca = Authority::load_or_generate(&ca.dir, TD).unwrap();
    let roots = CertStore::new(vec![mesh_ca.root().clone()]);
    // `tap` presents its own identity (a well-behaved destination).
    let tap = fake_destination(
        &c,
        "tap",
        issue(&mesh_ca, &SpiffeId::new(TD, "default", "tap")),
        &roots,
        "TAP-REPLY",
    );
    // `impostor` is the workload of service account `web`, but presents
    // another identity of the same mesh.
    let impostor = fake_destination(
        &c,
        "impostor",
        issue(&mesh_ca, &SpiffeId::new(TD, "default", "other")),
        &roots,
        "IMPOSTOR-REPLY",
    );
    let client_ip = a.pod("default", "client").unwrap().ip;
    let tap_ip = c.pod("default", "tap").unwrap().ip;
    let impostor_ip = c.pod("default", "impostor").unwrap().ip;

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = probe(&a, "client", SocketAddr::from((tap_ip, ECHO_PORT)));
        if got == "TAP-REPLY" {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}\nnode A:\n{}", da.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        probe(&a, "client", SocketAddr::from((tap_ip, ECHO_PORT))),
        "TAP-REPLY"
    );
    let seen = tap.lock().unwrap();
    let (peer, headers) = seen.requests.last().unwrap().clone();
    // Dialled from the client pod's IP, not node A's address.
    assert_eq!(peer.ip(), IpAddr::V4(client_ip), "{seen:?}");
    assert_ne!(peer.ip(), IpAddr::V4(a.gateway()));
    // forwarded: for="<client ip:port>"
    let fwd = header(&headers, "forwarded");
    assert!(
        fwd.starts_with(&format!("for=\"{client_ip}:")),
        "forwarded: {fwd:?}"
    );
    // ztunnel's baggage of the source workload.
    let baggage = header(&headers, "baggage");
    let fields: HashMap<&str, &str> = baggage
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let want: HashMap<&str, &str> = [
        ("k8s.cluster.name", "Kubernetes"),
        ("k8s.namespace.name", "default"),
        ("k8s.pod.name", "client"),
        ("service.name", "client"),
        ("service.version", "v7"),
    ]
    .into();
    assert_eq!(fields, want, "baggage: {baggage:?}");
    // A fresh W3C traceparent per tunnelled connection.
    let traces: Vec<String> = seen
        .requests
        .iter()
        .map(|(_, h)| header(h, "traceparent"))
        .collect();
    for t in &traces {
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.len(), 4, "traceparent {t:?}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "00");
        assert!(t.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_ne!(parts[1], "0".repeat(32));
    }
    let last_two = &traces[traces.len() - 2..];
    assert_ne!(last_two[0], last_two[1], "one traceparent per connection");
    drop(seen);

    // The wrong SPIFFE ID: node A refuses the destination during the
    // handshake; the client's connection is closed with no byte, the
    // impostor gets no request.
    for _ in 0..3 {
        let got = probe(&a, "client", SocketAddr::from((impostor_ip, ECHO_PORT)));
        assert!(!got.contains("IMPOSTOR"), "{got:?}");
        assert_eq!(got, "", "{got:?}");
    }
    // Through the HTTP Service: 503 with Envoy's `UF` (upstream connection
    // failure), the reason in the body; still no request at the impostor.
    let out = a
        .pod("default", "client")
        .unwrap()
        .command("curl")
        .unwrap()
        .args(["-sS", "-m", "20", "-w", "\n%{http_code}"])
        .arg(format!("http://{web_vip}:7301/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.ends_with("\n503"), "{text:?}\nnode A:\n{}", da.log());
    assert!(!text.contains("IMPOSTOR"), "{text:?}");
    let metrics = a
        .command("curl")
        .unwrap()
        .args(["-sS", "-m", "10", "http://127.0.0.1:15000/stats/prometheus"])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"503\"")
                && l.contains("response_flags=\"UF")),
        "{metrics}"
    );
    let seen = impostor.lock().unwrap();
    assert!(seen.requests.is_empty(), "{seen:?}");
    assert_eq!(seen.handshakes, 0, "{seen:?}");
    drop(seen);
    let log = da.log();
    assert!(
        log.contains("expected one of [\"spiffe://cluster.local/ns/default/sa/web\"]"),
        "node A:\n{log}"
    );
}
