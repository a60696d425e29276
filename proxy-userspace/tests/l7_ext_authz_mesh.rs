//! The external authorizer's check requests take the mesh's outbound
//! decision (`transport/hbone/control.rs`, installed with
//! `policy::ext_authz::set_dialer` as the daemon does): to a meshed
//! authorizer they go through an HBONE tunnel presenting the identity of
//! the workload the check is made for; to an authorizer outside the mesh
//! in plain text; when `ISTIO_MUTUAL` cannot be honoured or the source has
//! no identity they are refused (the check fails closed, `statusOnError`)
//! and nothing reaches the authorizer. The JWKS fetcher, which fetches for
//! no workload, reaches servers outside the mesh and is refused by meshed
//! ones. One process: the dialer is global.
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::Empty;
use tokio::net::{TcpListener, TcpStream};

use strait::identity::ca::Authority;
use strait::identity::{CertStore, SpiffeId, WorkloadCert};
use strait::policy::ext_authz::{self, ExtAuthz, Verdict};
use strait::transport::hbone::control::MeshDialer;
use strait::transport::hbone::server::{self, BoxFuture, ConnectCheck, InboundHandler};
use strait::transport::hbone::{tls, MeshOutbound, MeshView};
use strait_config::snapshot::{MeshSnapshot, MeshTlsPolicy, TlsMode};

const TD: &str = "cluster.local";

fn issue(ca: &Authority, id: &SpiffeId) -> Arc<WorkloadCert> {
    Arc::new(ca.issue(id, Duration::from_secs(3600)).unwrap())
}

/// An HTTP authorizer at `ip`: allows everything, counts checks.
async fn authorizer(ip: IpAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_r| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(200)
                                .header("x-checked", "yes")
                                .body(Empty::<Bytes>::new())
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, n)
}

/// The authorizer's HBONE side: delivers to the pod, records the peers.
struct Inbound {
    peers: Mutex<Vec<String>>,
}

impl InboundHandler for Inbound {
    fn authorize(&self, c: &ConnectCheck) -> bool {
        self.peers.lock().unwrap().push(c.peer.to_string());
        true
    }
    fn connect(&self, target: SocketAddr) -> BoxFuture<std::io::Result<TcpStream>> {
        Box::pin(async move { TcpStream::connect(target).await })
    }
    fn finished(&self, _c: &ConnectCheck, _s: StatusCode, _a: u64, _b: u64) {}
}

fn provider(snap: &mut MeshSnapshot, name: &str, addr: SocketAddr) {
    snap.mesh.extension_providers.push(serde_json::json!({
        "name": name,
        "envoyExtAuthzHttp": {
            "service": addr.ip().to_string(),
            "port": addr.port(),
            "headersToUpstreamOnAllow": ["x-checked"],
        }
    }));
}

async fn check(x: &ExtAuthz, source: IpAddr) -> Verdict {
    x.check(
        source,
        &Method::GET,
        "/admin",
        "api.local",
        &HeaderMap::new(),
    )
    .await
}

#[tokio::test]
async fn check_requests_tunnel_to_a_meshed_authorizer_and_are_refused_when_mtls_cannot_be_honoured()
{
    let ca = Authority::generate(TD).unwrap();
    let store = CertStore::new(vec![ca.root().clone()]);
    let (client_ip, meshed_ip, plain_ip): (IpAddr, IpAddr, IpAddr) = (
        "127.0.61.2".parse().unwrap(),
        "127.0.61.77".parse().unwrap(),
        "127.0.61.78".parse().unwrap(),
    );
    let (client, authz) = (
        SpiffeId::new(TD, "default", "api"),
        SpiffeId::new(TD, "infra", "authz"),
    );
    store.insert(issue(&ca, &client));
    store.insert(issue(&ca, &authz));

    // The meshed authorizer: HTTP on its pod IP, HBONE on <pod IP>:15008.
    let (meshed_addr, meshed_checks) = authorizer(meshed_ip).await;
    let hbone = TcpListener::bind((meshed_ip, 15008)).await.unwrap();
    let resolver = Arc::new(tls::StoreResolver::new(store.clone(), authz.clone()));
    let cfg = tls::server_config(resolver, store.root_store(), TD).unwrap();
    let inbound = Arc::new(Inbound {
        peers: Mutex::new(Vec::new()),
    });
    tokio::spawn(server::serve(hbone, cfg, inbound.clone()));
    // An authorizer outside the mesh.
    let (plain_addr, plain_checks) = authorizer(plain_ip).await;

    let mesh = MeshOutbound::new(store.clone());
    let mut view = MeshView::default();
    view.local.insert(client_ip, client.clone());
    view.meshed.insert(client_ip, client.clone());
    view.meshed.insert(meshed_ip, authz.clone());
    mesh.set_view(view);
    ext_authz::set_dialer(Some(Box::new(MeshDialer(Some(mesh.clone())))));

    let mut snap = MeshSnapshot::default();
    provider(&mut snap, "meshed", meshed_addr);
    provider(&mut snap, "plain", plain_addr);
    let meshed = ExtAuthz::build("meshed", &snap).unwrap();
    let plain = ExtAuthz::build("plain", &snap).unwrap();

    // Meshed authorizer, auto mTLS: through the tunnel, as the client.
    match check(&meshed, client_ip).await {
        Verdict::Allow(h) => assert!(h.iter().any(|(n, v)| n == "x-checked" && v == "yes")),
        other => panic!("{other:?}"),
    }
    assert_eq!(meshed_checks.load(Ordering::SeqCst), 1);
    assert_eq!(
        *inbound.peers.lock().unwrap(),
        vec!["spiffe://cluster.local/ns/default/sa/api".to_string()]
    );
    // Outside the mesh: plain text, no tunnel.
    assert!(matches!(check(&plain, client_ip).await, Verdict::Allow(_)));
    assert_eq!(plain_checks.load(Ordering::SeqCst), 1);
    assert_eq!(inbound.peers.lock().unwrap().len(), 1);

    // A source that is not a meshed workload of this node has no identity
    // to present: refused, never sent in plain text; statusOnError (403).
    match check(&meshed, "127.0.61.3".parse().unwrap()).await {
        Verdict::Deny { status, error, .. } => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            let e = error.unwrap();
            assert!(
                e.contains(strait::transport::hbone::mesh::REFUSE_UNKNOWN_SOURCE),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(meshed_checks.load(Ordering::SeqCst), 1);
    assert_eq!(inbound.peers.lock().unwrap().len(), 1);

    // The dialer's decision with a DestinationRule's ISTIO_MUTUAL: to an
    // authorizer outside the mesh, and on a node without identities,
    // refused before any byte.
    let istio_mutual = MeshTlsPolicy {
        mode: TlsMode::IstioMutual,
        auto_mtls: false,
    };
    let dial = |d: MeshDialer, dst: SocketAddr| async move {
        use strait::policy::ext_authz::Dialer;
        d.dial(client_ip, dst, istio_mutual, "authz.infra")
            .await
            .map(|_| ())
    };
    let e = dial(MeshDialer(Some(mesh.clone())), plain_addr)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ISTIO_MUTUAL"), "{e}");
    let e = dial(MeshDialer(None), meshed_addr).await.unwrap_err();
    assert!(e.to_string().contains("ISTIO_MUTUAL"), "{e}");
    assert_eq!(plain_checks.load(Ordering::SeqCst), 1);
    assert_eq!(meshed_checks.load(Ordering::SeqCst), 1);
    // ISTIO_MUTUAL to the meshed authorizer tunnels.
    assert!(dial(MeshDialer(Some(mesh.clone())), meshed_addr)
        .await
        .is_ok());

    // The JWKS fetcher takes the same decision. It fetches for no
    // workload: a meshed server is refused (never plain text), one outside
    // the mesh is fetched from directly.
    use strait::policy::jwt::jwks;
    let e = jwks::fetch(
        &format!("http://{meshed_addr}/keys"),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains(strait::transport::hbone::mesh::REFUSE_UNKNOWN_SOURCE),
        "{e}"
    );
    assert_eq!(meshed_checks.load(Ordering::SeqCst), 1);
    let body = jwks::fetch(
        &format!("http://{plain_addr}/keys"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(body, "");
    assert_eq!(plain_checks.load(Ordering::SeqCst), 2);
}
