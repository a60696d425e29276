//! In-process HBONE tests on loopback: the verifiers, the CONNECT
//! handling and the pool (no root needed).
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::server::{BoxFuture, ConnectCheck, InboundHandler};
use super::*;
use crate::identity::ca::Authority;
use crate::identity::{CertStore, SpiffeId, WorkloadCert};

const TD: &str = "cluster.local";

fn issue(ca: &Authority, id: &SpiffeId) -> Arc<WorkloadCert> {
    Arc::new(ca.issue(id, Duration::from_secs(3600)).unwrap())
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa)
}

/// Records what the destination side saw; delivers to `echo`.
struct Recorder {
    echo: SocketAddr,
    allow: bool,
    seen: Mutex<Vec<(ConnectCheck, http::StatusCode, u64, u64)>>,
}

impl InboundHandler for Recorder {
    fn authorize(&self, _c: &ConnectCheck) -> bool {
        self.allow
    }
    fn connect(&self, target: SocketAddr) -> BoxFuture<std::io::Result<TcpStream>> {
        // The test's "pod" is the echo server; the target port must be it.
        let echo = self.echo;
        Box::pin(async move {
            assert_eq!(target.port(), echo.port());
            TcpStream::connect(echo).await
        })
    }
    fn finished(&self, c: &ConnectCheck, status: http::StatusCode, sent: u64, received: u64) {
        self.seen
            .lock()
            .unwrap()
            .push((c.clone(), status, sent, received));
    }
}

/// An echo server that upper-cases what it reads until EOF, then closes.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(&buf.to_ascii_uppercase()).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    addr
}

struct Dest {
    hbone: SocketAddr,
    echo: SocketAddr,
    handler: Arc<Recorder>,
}

/// A destination workload `ns/server` with a certificate from `ca`.
async fn destination(ca: &Authority, allow: bool) -> Dest {
    let store = CertStore::new(vec![ca.root().clone()]);
    let server_id = id("ns", "server");
    store.insert(issue(ca, &server_id));
    let resolver = Arc::new(tls::StoreResolver::new(store.clone(), server_id));
    let cfg = tls::server_config(resolver, store.root_store(), TD).unwrap();
    let echo = echo_server().await;
    let handler = Arc::new(Recorder {
        echo,
        allow,
        seen: Mutex::new(Vec::new()),
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = l.local_addr().unwrap();
    tokio::spawn(server::serve(l, cfg, handler.clone()));
    Dest {
        hbone,
        echo,
        handler,
    }
}

fn request(dest: &Dest, source: SpiffeId, expect: SpiffeId) -> OutboundRequest {
    OutboundRequest {
        source,
        destination: expect,
        extra_sans: Vec::new(),
        hbone_addr: dest.hbone,
        target: SocketAddr::from(([127, 0, 0, 1], dest.echo.port())),
        forwarded_for: Some("10.244.1.5:40000".parse().unwrap()),
        service_host: Some("server.ns.svc.cluster.local".into()),
        source_ip: None,
    }
}

async fn roundtrip(s: &mut HboneStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("echo answered")
        .unwrap();
    out
}

#[tokio::test]
async fn bytes_cross_the_tunnel_both_ways_with_half_close_and_the_peer_identity_is_recorded() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    let certs = CertStore::new(vec![ca.root().clone()]);
    certs.insert(issue(&ca, &id("ns", "client")));
    let out = Outbound::new(certs);
    let req = request(&dest, id("ns", "client"), id("ns", "server"));
    let mut s = out.connect(&req).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"hello hbone").await, b"HELLO HBONE");
    drop(s);
    // A second stream reuses the pooled connection.
    let mut s2 = out.connect(&req).await.unwrap();
    assert_eq!(roundtrip(&mut s2, b"again").await, b"AGAIN");
    assert_eq!(out.connections(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = dest.handler.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (c, status, sent, received) = &seen[0];
    assert_eq!(c.peer, id("ns", "client"));
    assert_eq!(c.source, "10.244.1.5:40000".parse::<SocketAddr>().unwrap());
    assert_eq!(*status, http::StatusCode::OK);
    assert_eq!((*sent, *received), (11, 11));
}

/// Records the thread each `CONNECT`'s pod connection is made on.
struct ThreadRecorder {
    echo: SocketAddr,
    threads: Mutex<Vec<Option<String>>>,
}

impl InboundHandler for ThreadRecorder {
    fn authorize(&self, _c: &ConnectCheck) -> bool {
        true
    }
    fn connect(&self, _target: SocketAddr) -> BoxFuture<std::io::Result<TcpStream>> {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().name().map(str::to_string));
        Box::pin(TcpStream::connect(self.echo))
    }
    fn finished(&self, _c: &ConnectCheck, _s: http::StatusCode, _a: u64, _b: u64) {}
}

#[tokio::test]
async fn accepted_tunnels_are_served_on_the_runtime_the_spawner_names() {
    // The daemon hands accepted tunnels to its proxy workers: the
    // connection, its streams and their bytes run on that runtime's thread,
    // not on the listener's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let worker = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("test-worker".into())
        .spawn(move || rt.block_on(async move { drop(stopped.await) }))
        .unwrap();
    let ca = Authority::generate(TD).unwrap();
    let store = CertStore::new(vec![ca.root().clone()]);
    let server_id = id("ns", "server");
    store.insert(issue(&ca, &server_id));
    let resolver = Arc::new(tls::StoreResolver::new(store.clone(), server_id));
    let cfg = tls::server_config(resolver, store.root_store(), TD).unwrap();
    let handler = Arc::new(ThreadRecorder {
        echo: echo_server().await,
        threads: Mutex::new(Vec::new()),
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = l.local_addr().unwrap();
    let spawn: server::Spawn = Arc::new(move |f| drop(worker.spawn(f)));
    tokio::spawn(server::serve_on(l, cfg, handler.clone(), spawn));
    let certs = CertStore::new(vec![ca.root().clone()]);
    certs.insert(issue(&ca, &id("ns", "client")));
    let out = Outbound::new(certs);
    let req = OutboundRequest {
        source: id("ns", "client"),
        destination: id("ns", "server"),
        extra_sans: Vec::new(),
        hbone_addr: hbone,
        target: SocketAddr::from(([127, 0, 0, 1], handler.echo.port())),
        forwarded_for: None,
        service_host: None,
        source_ip: None,
    };
    for msg in [&b"one"[..], b"two"] {
        let mut s = out.connect(&req).await.unwrap();
        assert_eq!(roundtrip(&mut s, msg).await, msg.to_ascii_uppercase());
    }
    assert_eq!(out.connections(), 1);
    assert_eq!(
        *handler.threads.lock().unwrap(),
        vec![Some("test-worker".to_string()); 2]
    );
    let _ = stop.send(());
    thread.join().unwrap();
}

/// ztunnel's pool: a burst of connects to one destination opens one
/// tunnel (one TLS connection), not one per client connection; streams
/// share it.
#[tokio::test]
async fn concurrent_first_connects_to_one_destination_share_one_connection() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    let certs = CertStore::new(vec![ca.root().clone()]);
    certs.insert(issue(&ca, &id("ns", "client")));
    let out = Outbound::new(certs);
    let req = request(&dest, id("ns", "client"), id("ns", "server"));
    let streams = futures_util::future::join_all((0..16).map(|_| out.connect(&req))).await;
    let mut streams: Vec<HboneStream> = streams.into_iter().map(Result::unwrap).collect();
    assert_eq!(out.connections(), 1);
    for (i, s) in streams.iter_mut().enumerate() {
        let msg = format!("m{i}");
        assert_eq!(
            roundtrip(s, msg.as_bytes()).await,
            msg.to_uppercase().as_bytes()
        );
    }
    assert_eq!(out.dials_in_progress(), 0, "no dial left behind");
}

#[tokio::test]
async fn a_different_source_identity_gets_its_own_pooled_connection() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    let certs = CertStore::new(vec![ca.root().clone()]);
    certs.insert(issue(&ca, &id("ns", "a")));
    certs.insert(issue(&ca, &id("ns", "b")));
    let out = Outbound::new(certs);
    let mut s1 = out
        .connect(&request(&dest, id("ns", "a"), id("ns", "server")))
        .await
        .unwrap();
    let mut s2 = out
        .connect(&request(&dest, id("ns", "b"), id("ns", "server")))
        .await
        .unwrap();
    assert_eq!(out.connections(), 2);
    assert_eq!(roundtrip(&mut s1, b"a").await, b"A");
    assert_eq!(roundtrip(&mut s2, b"b").await, b"B");
    let seen = dest.handler.seen.lock().unwrap().clone();
    let peers: Vec<String> = seen.iter().map(|s| s.0.peer.to_string()).collect();
    assert!(peers.contains(&id("ns", "a").to_string()), "{peers:?}");
}

#[tokio::test]
async fn the_client_refuses_a_server_with_another_spiffe_id() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    let certs = CertStore::new(vec![ca.root().clone()]);
    certs.insert(issue(&ca, &id("ns", "client")));
    let out = Outbound::new(certs);
    let e = out
        .connect(&request(&dest, id("ns", "client"), id("ns", "impostor")))
        .await
        .unwrap_err();
    assert!(matches!(e, HboneError::Tls(_)), "{e}");
    assert!(dest.handler.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_client_refuses_a_server_whose_certificate_is_from_another_root() {
    let ca = Authority::generate(TD).unwrap();
    let other = Authority::generate(TD).unwrap();
    let dest = destination(&other, true).await;
    let certs = CertStore::new(vec![ca.root().clone()]);
    certs.insert(issue(&ca, &id("ns", "client")));
    let out = Outbound::new(certs);
    let e = out
        .connect(&request(&dest, id("ns", "client"), id("ns", "server")))
        .await
        .unwrap_err();
    assert!(matches!(e, HboneError::Tls(_)), "{e}");
}

/// Dials `dest` with a hand-made client config and sends one CONNECT;
/// `Ok` only when the tunnel was established (200).
async fn try_with(cfg: rustls::ClientConfig, dest: &Dest) -> Result<(), String> {
    let tx = client::handshake(Arc::new(cfg), dest.hbone)
        .await
        .map_err(|e| e.to_string())?;
    send_connect(tx, SocketAddr::from(([127, 0, 0, 1], dest.echo.port()))).await
}

async fn send_connect(tx: client::Connection, target: SocketAddr) -> Result<(), String> {
    let req = client::connect_request(&OutboundRequest {
        source: id("x", "x"),
        destination: id("x", "x"),
        extra_sans: vec![],
        hbone_addr: target,
        target,
        forwarded_for: None,
        service_host: None,
        source_ip: None,
    });
    tokio::time::timeout(Duration::from_secs(20), async {
        match tx.open(req).await {
            Ok(_) => Ok(()),
            Err(HboneError::Status(s)) => Err(format!("status {}", s.as_u16())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(|_| "timed out".to_string())?
}

fn client_cfg(
    ca: &Authority,
    who: &SpiffeId,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
    with_cert: bool,
) -> rustls::ClientConfig {
    // Every suite rustls has, TLS 1.2 included: the server must refuse.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = CertStore::new(vec![ca.root().clone()]).root_store();
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::SpiffeServerVerifier::new(
            roots,
            vec![id("ns", "server").to_string()],
        )));
    let mut cfg = if with_cert {
        let cert = issue(ca, who);
        b.with_client_auth_cert(cert.chain.clone(), cert.private_key())
            .unwrap()
    } else {
        b.with_no_client_auth()
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg.enable_sni = false;
    cfg
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

#[tokio::test]
async fn the_server_accepts_a_well_formed_mesh_client() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    try_with(
        client_cfg(&ca, &id("ns", "c"), TLS13, &[b"h2"], true),
        &dest,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_server_rejects_a_client_certificate_from_another_root() {
    let ca = Authority::generate(TD).unwrap();
    let other = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    // The client trusts the server's root but presents another root's leaf.
    let mut cfg = client_cfg(&ca, &id("ns", "c"), TLS13, &[b"h2"], false);
    let cert = issue(&other, &id("ns", "c"));
    cfg = rustls::ClientConfig::builder_with_provider(cfg.crypto_provider().clone())
        .with_protocol_versions(TLS13)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::SpiffeServerVerifier::new(
            CertStore::new(vec![ca.root().clone()]).root_store(),
            vec![id("ns", "server").to_string()],
        )))
        .with_client_auth_cert(cert.chain.clone(), cert.private_key())
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    assert!(try_with(cfg, &dest).await.is_err());
    assert!(dest.handler.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_server_rejects_a_client_of_another_trust_domain() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    let foreign = SpiffeId::new("other.example", "ns", "c");
    let cfg = client_cfg(&ca, &foreign, TLS13, &[b"h2"], true);
    assert!(try_with(cfg, &dest).await.is_err());
    assert!(dest.handler.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_server_rejects_tls12_only_clients_clients_without_certificate_and_http11_alpn() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    let tls12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let e = try_with(
        client_cfg(&ca, &id("ns", "c"), tls12, &[b"h2"], true),
        &dest,
    )
    .await;
    assert!(e.is_err(), "TLS 1.2 only");
    let e = try_with(
        client_cfg(&ca, &id("ns", "c"), TLS13, &[b"h2"], false),
        &dest,
    )
    .await;
    assert!(e.is_err(), "no client certificate");
    let e = try_with(
        client_cfg(&ca, &id("ns", "c"), TLS13, &[b"http/1.1"], true),
        &dest,
    )
    .await;
    assert!(e.is_err(), "ALPN http/1.1 only");
    assert!(dest.handler.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn connect_answers_follow_ztunnel_400_401_503() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, false).await;
    let cfg = || Arc::new(client_cfg(&ca, &id("ns", "c"), TLS13, &[b"h2"], true));
    let target = SocketAddr::from(([127, 0, 0, 1], dest.echo.port()));
    // Denied by policy: 401, and the handler hears of it.
    let tx = client::handshake(cfg(), dest.hbone).await.unwrap();
    assert_eq!(send_connect(tx, target).await.unwrap_err(), "status 401");
    let seen = dest.handler.seen.lock().unwrap().clone();
    assert_eq!(seen[0].1, http::StatusCode::UNAUTHORIZED);
    // Authority IP other than the dialled one: 400.
    let tx = client::handshake(cfg(), dest.hbone).await.unwrap();
    let other = SocketAddr::from(([127, 0, 0, 2], dest.echo.port()));
    assert_eq!(send_connect(tx, other).await.unwrap_err(), "status 400");
    // A protected port: 503.
    let tx = client::handshake(cfg(), dest.hbone).await.unwrap();
    let protected = SocketAddr::from(([127, 0, 0, 1], 15008));
    assert_eq!(send_connect(tx, protected).await.unwrap_err(), "status 503");
}

#[tokio::test]
async fn an_unreachable_pod_port_answers_503() {
    let ca = Authority::generate(TD).unwrap();
    // Nothing listens on the handler's target.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let handler = Arc::new(Recorder {
        echo: gone_addr,
        allow: true,
        seen: Mutex::new(Vec::new()),
    });
    let store = CertStore::new(vec![ca.root().clone()]);
    store.insert(issue(&ca, &id("ns", "server")));
    let resolver = Arc::new(tls::StoreResolver::new(store.clone(), id("ns", "server")));
    let cfg = tls::server_config(resolver, store.root_store(), TD).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = l.local_addr().unwrap();
    tokio::spawn(server::serve(l, cfg, handler.clone()));
    let tx = client::handshake(
        Arc::new(client_cfg(&ca, &id("ns", "c"), TLS13, &[b"h2"], true)),
        hbone,
    )
    .await
    .unwrap();
    let target = SocketAddr::from(([127, 0, 0, 1], gone_addr.port()));
    assert_eq!(send_connect(tx, target).await.unwrap_err(), "status 503");
}

#[test]
fn check_request_and_forwarded_parse_as_ztunnel() {
    let dialled: SocketAddr = "10.0.0.5:15008".parse().unwrap();
    let req = |m: http::Method, uri: &str| {
        http::Request::builder()
            .method(m)
            .uri(uri)
            .body(())
            .unwrap()
    };
    assert_eq!(
        server::check_request(&req(http::Method::CONNECT, "10.0.0.5:8080"), dialled),
        Ok("10.0.0.5:8080".parse().unwrap())
    );
    for (m, uri, want) in [
        (http::Method::GET, "http://10.0.0.5:8080/", 400),
        (http::Method::CONNECT, "10.0.0.6:8080", 400),
        (http::Method::CONNECT, "example.com:8080", 400),
        (http::Method::CONNECT, "10.0.0.5:15001", 503),
        (http::Method::CONNECT, "10.0.0.5:15006", 503),
    ] {
        assert_eq!(
            server::check_request(&req(m, uri), dialled).unwrap_err(),
            want,
            "{uri}"
        );
    }
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::FORWARDED,
        "for=\"10.1.2.3:4567\";host=a.b.svc".parse().unwrap(),
    );
    assert_eq!(
        server::forwarded_for(&h),
        Some("10.1.2.3:4567".parse().unwrap())
    );
    let r = client::connect_request(&OutboundRequest {
        source: id("a", "b"),
        destination: id("c", "d"),
        extra_sans: vec![],
        hbone_addr: "10.0.0.5:15008".parse().unwrap(),
        target: "10.0.0.5:9080".parse().unwrap(),
        forwarded_for: Some("10.1.2.3:4567".parse().unwrap()),
        service_host: Some("reviews.default.svc.cluster.local".into()),
        source_ip: None,
    });
    assert_eq!(r.method(), http::Method::CONNECT);
    assert_eq!(r.uri().to_string(), "10.0.0.5:9080");
    assert!(r.uri().scheme().is_none() && r.uri().path_and_query().is_none());
    assert_eq!(
        r.headers()[http::header::FORWARDED],
        "for=\"10.1.2.3:4567\";host=reviews.default.svc.cluster.local"
    );
}

/// A destination that serves every tunnel's inner stream itself (as the
/// daemon does when the pod's policies need HTTP facts): answers
/// `seen:<what it read>` and records who it served.
struct Inspector {
    served: Mutex<Vec<ConnectCheck>>,
    refused_elsewhere: std::sync::atomic::AtomicBool,
}

impl InboundHandler for Inspector {
    fn inspect(&self, _c: &ConnectCheck) -> bool {
        true
    }
    fn serve_inner(&self, c: ConnectCheck, mut stream: server::InnerStream) -> BoxFuture<()> {
        self.served.lock().unwrap().push(c);
        Box::pin(async move {
            let mut buf = Vec::new();
            stream.read_to_end(&mut buf).await.unwrap();
            let mut out = b"seen:".to_vec();
            out.extend(buf);
            stream.write_all(&out).await.unwrap();
            stream.shutdown().await.unwrap();
        })
    }
    // Not called for an inspected tunnel: the inner path decides.
    fn authorize(&self, _c: &ConnectCheck) -> bool {
        self.refused_elsewhere
            .store(true, std::sync::atomic::Ordering::Relaxed);
        false
    }
    fn connect(&self, _t: SocketAddr) -> BoxFuture<std::io::Result<TcpStream>> {
        self.refused_elsewhere
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async { Err(std::io::ErrorKind::ConnectionRefused.into()) })
    }
    fn finished(&self, _c: &ConnectCheck, _s: http::StatusCode, _a: u64, _b: u64) {
        self.refused_elsewhere
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test]
async fn an_inspecting_handler_gets_the_inner_stream_with_the_peer_identity() {
    let ca = Authority::generate(TD).unwrap();
    let store = CertStore::new(vec![ca.root().clone()]);
    let server_id = id("ns", "server");
    store.insert(issue(&ca, &server_id));
    let resolver = Arc::new(tls::StoreResolver::new(store.clone(), server_id.clone()));
    let cfg = tls::server_config(resolver, store.root_store(), TD).unwrap();
    let handler = Arc::new(Inspector {
        served: Mutex::new(Vec::new()),
        refused_elsewhere: Default::default(),
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = l.local_addr().unwrap();
    tokio::spawn(server::serve(l, cfg, handler.clone()));
    let certs = CertStore::new(vec![ca.root().clone()]);
    certs.insert(issue(&ca, &id("ns", "client")));
    let out = Outbound::new(certs);
    let req = OutboundRequest {
        source: id("ns", "client"),
        destination: server_id,
        extra_sans: Vec::new(),
        hbone_addr: hbone,
        // No pod listens there: only the handler's inner path answers.
        target: SocketAddr::from(([127, 0, 0, 1], 9)),
        forwarded_for: Some("10.244.1.5:40000".parse().unwrap()),
        service_host: None,
        source_ip: None,
    };
    let mut s = out.connect(&req).await.unwrap();
    assert_eq!(
        roundtrip(&mut s, b"GET / HTTP/1.1").await,
        b"seen:GET / HTTP/1.1"
    );
    let served = handler.served.lock().unwrap().clone();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].peer, id("ns", "client"));
    assert_eq!(
        served[0].source,
        "10.244.1.5:40000".parse::<SocketAddr>().unwrap()
    );
    assert!(!handler
        .refused_elsewhere
        .load(std::sync::atomic::Ordering::Relaxed));
}

fn mesh_view(local: &[(&str, SpiffeId)], meshed: &[(&str, SpiffeId)]) -> MeshView {
    let m = |v: &[(&str, SpiffeId)]| {
        v.iter()
            .map(|(ip, id)| (ip.parse().unwrap(), id.clone()))
            .collect()
    };
    MeshView {
        local: m(local),
        meshed: m(meshed),
        auto_mtls_off: false,
    }
}

#[tokio::test]
async fn route_tunnels_meshed_destinations_and_never_sends_istio_mutual_in_plain_text() {
    use mesh::{route, Route, REFUSE_UNKNOWN_SOURCE};
    use strait_config::snapshot::{MeshTlsPolicy, TlsMode, REFUSE_NOT_MESHED, REFUSE_NO_IDENTITY};
    let auto = MeshTlsPolicy::default();
    let istio_mutual = MeshTlsPolicy {
        mode: TlsMode::IstioMutual,
        auto_mtls: false,
    };
    let disable = MeshTlsPolicy {
        mode: TlsMode::Disable,
        auto_mtls: false,
    };
    let simple = MeshTlsPolicy {
        mode: TlsMode::Simple,
        auto_mtls: false,
    };
    let client: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let stranger: std::net::IpAddr = "10.0.0.9".parse().unwrap();
    let meshed: SocketAddr = "10.0.1.1:8080".parse().unwrap();
    let outside: SocketAddr = "192.0.2.7:8080".parse().unwrap();

    // No CA: auto mTLS is plain text, ISTIO_MUTUAL is refused.
    assert_eq!(route(None, auto, client, meshed), Route::Plain);
    assert_eq!(
        route(None, istio_mutual, client, meshed),
        Route::Refuse(REFUSE_NO_IDENTITY)
    );
    assert_eq!(route(None, simple, client, outside), Route::Plain);

    let m = MeshOutbound::new(CertStore::new(Vec::new()));
    m.set_view(mesh_view(
        &[("10.0.0.1", id("ns", "client"))],
        &[
            ("10.0.0.1", id("ns", "client")),
            ("10.0.1.1", id("ns", "server")),
        ],
    ));
    let tunnel = Route::Tunnel(Tunnel {
        source_ip: client,
        source: id("ns", "client"),
        destination: id("ns", "server"),
        dst: meshed,
    });
    // Meshed destination: auto mTLS and ISTIO_MUTUAL tunnel; DISABLE and
    // SIMPLE (origination) connect directly.
    assert_eq!(route(Some(&m), auto, client, meshed), tunnel);
    assert_eq!(route(Some(&m), istio_mutual, client, meshed), tunnel);
    assert_eq!(route(Some(&m), disable, client, meshed), Route::Plain);
    assert_eq!(route(Some(&m), simple, client, meshed), Route::Plain);
    // Not meshed: auto mTLS falls back to plain text (as Istio), but
    // ISTIO_MUTUAL fails closed.
    assert_eq!(route(Some(&m), auto, client, outside), Route::Plain);
    assert_eq!(
        route(Some(&m), istio_mutual, client, outside),
        Route::Refuse(REFUSE_NOT_MESHED)
    );
    // A source without an identity on this node never reaches a meshed
    // pod in plain text.
    assert_eq!(
        route(Some(&m), auto, stranger, meshed),
        Route::Refuse(REFUSE_UNKNOWN_SOURCE)
    );
    // MeshConfig enableAutoMtls: false turns auto mTLS off, not an
    // explicit ISTIO_MUTUAL.
    let mut off = mesh_view(
        &[("10.0.0.1", id("ns", "client"))],
        &[("10.0.1.1", id("ns", "server"))],
    );
    off.auto_mtls_off = true;
    m.set_view(off);
    assert_eq!(route(Some(&m), auto, client, meshed), Route::Plain);
    assert_eq!(route(Some(&m), istio_mutual, client, meshed), tunnel);
}

#[tokio::test]
async fn a_new_view_drops_pooled_connections_to_destinations_that_left_it() {
    let ca = Authority::generate(TD).unwrap();
    let dest = destination(&ca, true).await;
    let certs = CertStore::new(vec![ca.root().clone()]);
    certs.insert(issue(&ca, &id("ns", "client")));
    let m = MeshOutbound::new(certs);
    let keep = mesh_view(
        &[("10.244.1.5", id("ns", "client"))],
        &[(&dest.hbone.ip().to_string(), id("ns", "server"))],
    );
    m.set_view(keep.clone());
    let req = request(&dest, id("ns", "client"), id("ns", "server"));
    let mut s = m.client().connect(&req).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"one").await, b"ONE");
    drop(s);
    assert_eq!(m.client().pool_keys(), 1);
    // Same view again: the connection stays pooled.
    m.set_view(keep);
    assert_eq!(m.client().pool_keys(), 1);
    // The destination's address now belongs to another identity: gone.
    m.set_view(mesh_view(
        &[("10.244.1.5", id("ns", "client"))],
        &[(&dest.hbone.ip().to_string(), id("ns", "impostor"))],
    ));
    assert_eq!(m.client().pool_keys(), 0);
    assert_eq!(m.client().connections(), 0);
    // Back, then the destination leaves the snapshot: gone.
    m.set_view(mesh_view(
        &[("10.244.1.5", id("ns", "client"))],
        &[(&dest.hbone.ip().to_string(), id("ns", "server"))],
    ));
    drop(m.client().connect(&req).await.unwrap());
    assert_eq!(m.client().pool_keys(), 1);
    m.set_view(mesh_view(&[("10.244.1.5", id("ns", "client"))], &[]));
    assert_eq!(m.client().pool_keys(), 0);
}
