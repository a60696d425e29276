//! DestinationRule `tls.mode: ISTIO_MUTUAL` never goes out in plain text
//! (issue 20). Istio's sidecar would fail the TLS handshake with a
//! destination that has no workload certificate, or when it has no
//! certificate itself: 503 `UF` for HTTP, the connection closed for TCP.
//! Strait decides it before connecting (`transport::hbone::mesh::route`),
//! so the upstream never sees a byte. Auto mTLS (no DestinationRule `tls`)
//! to a destination outside the mesh stays plain text, as in Istio, and a
//! meshed destination is never reached in plain text because the source
//! has no identity on this node.
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strait::identity::{CertStore, SpiffeId};
use strait::serve::{AccessLogRecord, Proxy, ProxySettings};
use strait::transport::hbone::{MeshOutbound, MeshView};
use strait_config::snapshot::{REFUSE_NOT_MESHED, REFUSE_NO_IDENTITY};
use support::client::Client;
use support::front::next_record as record;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A plain-text upstream that counts the connections it accepted and
/// answers every read with one HTTP/1.1 `200 plain`.
async fn plain_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind((support::fresh_ip(), 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain";
                    if s.write_all(r).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// ServiceEntry `api.internal` (VIP `vip`, port 80, `protocol`) whose one
/// endpoint is `backend`, plus a DestinationRule with `tls` when given.
fn mesh_yaml(backend: SocketAddr, vip: &str, protocol: &str, tls: Option<&str>) -> String {
    let addresses = format!("\n  addresses: [{vip}]");
    let mut y = service_entry("api", &addresses, protocol, backend);
    if let Some(tls) = tls {
        y.push_str(&tls_rule("api", tls));
    }
    y
}

/// ServiceEntry `<name>` for host `<name>.internal` (MESH_INTERNAL,
/// STATIC) with `extra` YAML lines after `hosts` (starting with a newline,
/// indented as under `spec:`; may be empty), port 80 named `p` with
/// `protocol`, and the one endpoint `backend`. Ends with a newline.
fn service_entry(name: &str, extra: &str, protocol: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.internal]{extra}
  ports: [{{number: 80, name: p, protocol: {protocol}}}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{{address: {ip}, ports: {{p: {port}}}}}]
",
        ip = backend.ip(),
        port = backend.port(),
    )
}

/// `---` and a DestinationRule `<name>` for host `<name>.internal` whose
/// `trafficPolicy.tls` is `tls` (a YAML flow map). Ends with a newline.
fn tls_rule(name: &str, tls: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}.internal
  trafficPolicy:
    tls: {tls}
"
    )
}

/// The node's HBONE view: `meshed` pods (IP → service account in
/// `default`); no local workloads (the test client is not a pod).
fn mesh_with(meshed: &[(SocketAddr, &str)]) -> Arc<MeshOutbound> {
    let m = MeshOutbound::new(CertStore::new(Vec::new()));
    m.set_view(MeshView {
        meshed: meshed
            .iter()
            .map(|(a, sa)| (a.ip(), SpiffeId::new("cluster.local", "default", sa)))
            .collect(),
        ..MeshView::default()
    });
    m
}

/// The access log of a proxy made here: one record per request or
/// connection.
type Log = tokio::sync::mpsc::UnboundedReceiver<AccessLogRecord>;

/// A proxy for [`mesh_yaml`] (with HBONE when `mesh` is set); returns its
/// front listener and the access log.
async fn proxy(yaml: &str, vip: &str, mesh: Option<Arc<MeshOutbound>>) -> (SocketAddr, Log) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let proxy = Proxy::new(&support::compile(yaml)).unwrap();
    let proxy = match mesh {
        Some(m) => proxy.with_settings(ProxySettings {
            hbone: Some(m),
            ..ProxySettings::default()
        }),
        None => proxy,
    }
    .with_access_log(Arc::new(tx));
    let dst: SocketAddr = format!("{vip}:80").parse().unwrap();
    let (front, _) = support::front::serve_fixed(proxy, dst).await;
    (front, rx)
}

async fn get(front: SocketAddr) -> support::client::Resp {
    Client::http1()
        .get(&format!("http://{front}/"), &[("host", "api.internal")])
        .await
}

/// 503 with `UF` (retried as connect failures: `URX`) and `reason` as
/// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`; the upstream accepted nothing.
async fn assert_refused_503(
    front: SocketAddr,
    log: &mut Log,
    accepted: &AtomicUsize,
    reason: &str,
) {
    let r = get(front).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_refused(&record(log).await, "UF,URX", accepted, reason);
}

/// `rec` has response flags `flags` and `reason` as
/// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`, and the upstream accepted no
/// connection (`accepted` is its accept count).
fn assert_refused(rec: &AccessLogRecord, flags: &str, accepted: &AtomicUsize, reason: &str) {
    assert_eq!(rec.response_flags.to_string(), flags);
    assert_eq!(
        rec.upstream_transport_failure_reason.as_deref(),
        Some(reason)
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

/// [`proxy`] for [`mesh_yaml`] with DestinationRule `tls` mode
/// `ISTIO_MUTUAL` to `backend` behind `vip` (`protocol` `HTTP` or `TCP`),
/// with HBONE when `mesh` is set; returns the front listener and the
/// access log.
async fn mutual_proxy(
    backend: SocketAddr,
    vip: &str,
    protocol: &str,
    mesh: Option<Arc<MeshOutbound>>,
) -> (SocketAddr, Log) {
    let tls = Some("{mode: ISTIO_MUTUAL}");
    proxy(&mesh_yaml(backend, vip, protocol, tls), vip, mesh).await
}

#[tokio::test]
async fn istio_mutual_without_a_ca_is_503_uf_and_nothing_is_sent() {
    let (backend, accepted) = plain_server().await;
    let vip = "240.0.1.1";
    let (front, mut log) = mutual_proxy(backend, vip, "HTTP", None).await;
    assert_refused_503(front, &mut log, &accepted, REFUSE_NO_IDENTITY).await;
}

#[tokio::test]
async fn istio_mutual_to_a_destination_outside_the_mesh_is_503_uf() {
    let (backend, accepted) = plain_server().await;
    let vip = "240.0.1.2";
    let (front, mut log) = mutual_proxy(backend, vip, "HTTP", Some(mesh_with(&[]))).await;
    assert_refused_503(front, &mut log, &accepted, REFUSE_NOT_MESHED).await;
}

#[tokio::test]
async fn istio_mutual_tcp_to_a_destination_outside_the_mesh_is_closed() {
    let (backend, accepted) = plain_server().await;
    for (vip, mesh, reason) in [
        ("240.0.1.3", Some(mesh_with(&[])), REFUSE_NOT_MESHED),
        ("240.0.1.4", None, REFUSE_NO_IDENTITY),
    ] {
        let (front, mut log) = mutual_proxy(backend, vip, "TCP", mesh).await;
        let mut c = TcpStream::connect(front).await.unwrap();
        // The write may race the close; the read must see EOF, no byte.
        let _ = c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut got))
            .await
            .expect("the proxy closes the connection");
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        let rec = record(&mut log).await;
        assert_eq!(rec.request_protocol, "tcp");
        assert_refused(&rec, "UF", &accepted, reason);
    }
}

/// Auto mTLS (no DestinationRule `tls`): plain text to a destination
/// outside the mesh, as Istio's auto mTLS does.
#[tokio::test]
async fn auto_mtls_to_a_destination_outside_the_mesh_is_plain_text() {
    let (backend, accepted) = plain_server().await;
    let vip = "240.0.1.5";
    let (front, mut log) = proxy(
        &mesh_yaml(backend, vip, "HTTP", None),
        vip,
        Some(mesh_with(&[])),
    )
    .await;
    let r = get(front).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "plain");
    let rec = record(&mut log).await;
    assert!(rec.response_flags.is_empty(), "{}", rec.response_flags);
    assert_eq!(rec.peer.security, strait::telemetry::SecurityPolicy::None);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A destination known to be meshed is not reached in plain text when the
/// tunnel cannot be used (here: the client is not one of the node's meshed
/// workloads, so there is no identity to present).
#[tokio::test]
async fn a_meshed_destination_is_never_reached_in_plain_text_when_the_tunnel_cannot_be_used() {
    let (backend, accepted) = plain_server().await;
    let vip = "240.0.1.6";
    let (front, mut log) = proxy(
        &mesh_yaml(backend, vip, "HTTP", None),
        vip,
        Some(mesh_with(&[(backend, "api")])),
    )
    .await;
    assert_refused_503(
        front,
        &mut log,
        &accepted,
        strait::transport::hbone::mesh::REFUSE_UNKNOWN_SOURCE,
    )
    .await;
}

/// A mirrored copy leaves the node as the request would: to an
/// ISTIO_MUTUAL host outside the mesh no copy is sent (the same setup
/// without the DestinationRule does mirror, in plain text).
#[tokio::test]
async fn mirror_copies_follow_the_same_decision() {
    for (vip, shadow_tls, want_copy) in [
        ("240.0.1.7", Some("{mode: ISTIO_MUTUAL}"), false),
        ("240.0.1.8", None, true),
    ] {
        let (backend, _) = plain_server().await;
        let (shadow, copies) = plain_server().await;
        let mut yaml = mesh_yaml(backend, vip, "HTTP", None);
        yaml.push_str("---\n");
        yaml.push_str(&service_entry("shadow", "", "HTTP", shadow));
        yaml.push_str(
            "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.internal]
  http:
  - route: [{destination: {host: api.internal}}]
    mirror: {host: shadow.internal}
    mirrorPercentage: {value: 100}
",
        );
        if let Some(tls) = shadow_tls {
            yaml.push_str(&tls_rule("shadow", tls));
        }
        let (front, _log) = proxy(&yaml, vip, Some(mesh_with(&[]))).await;
        let r = get(front).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(if want_copy { 30 } else { 1 });
        while copies.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(copies.load(Ordering::SeqCst) > 0, want_copy, "{vip}");
    }
}
