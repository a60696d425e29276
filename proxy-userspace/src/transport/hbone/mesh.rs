//! Which connections go through HBONE, and the upstream they get: the
//! node's view of the mesh (meshed workloads' identities, this node's
//! workloads) and [`MeshOutbound::connect`], used by the proxy wherever it
//! opens a connection to a chosen endpoint.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use strait_config::snapshot::{
    MeshTlsPolicy, UpstreamTransport, REFUSE_NOT_MESHED, REFUSE_NO_IDENTITY,
};

use super::client::{HboneStream, Outbound, OutboundRequest};
use super::{HboneError, PORT};
use crate::identity::{CertStore, SpiffeId};

/// The mesh as the outbound side needs it, swapped whole on every reload.
#[derive(Clone, Debug, Default)]
pub struct MeshView {
    /// Meshed workloads on every node: pod IP → identity.
    pub meshed: HashMap<IpAddr, SpiffeId>,
    /// This node's meshed workloads (the possible sources): pod IP →
    /// identity.
    pub local: HashMap<IpAddr, SpiffeId>,
    /// MeshConfig `enableAutoMtls: false`: clusters without a
    /// DestinationRule `tls` reach meshed pods in plain text (Istio's
    /// switch; `ISTIO_MUTUAL` still tunnels).
    pub auto_mtls_off: bool,
}

/// Why a connection to a meshed destination is refused when it did not
/// come from one of this node's meshed workloads: there is no identity to
/// present, and a meshed pod is never reached in plain text because a
/// lookup failed (ztunnel refuses an unknown source the same way).
pub const REFUSE_UNKNOWN_SOURCE: &str =
    "the destination is a meshed workload but the source is not a meshed workload of this node (no identity to present)";

/// How one connection to one endpoint leaves the node: the decision
/// [`route`] makes once per connection (TCP) or per try (HTTP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Plain TCP to the endpoint (TLS origination, when the cluster has
    /// it, runs on top).
    Plain,
    /// Through this HBONE tunnel.
    Tunnel(Tunnel),
    /// No connection (fail closed): the reason, Envoy's
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%` with flag `UF`.
    Refuse(&'static str),
}

/// The one decision "how does a connection from `source` to the endpoint
/// `dst` of a cluster with `policy` leave the node":
/// [`MeshTlsPolicy::transport`] (Istio's DestinationRule TLS and auto
/// mTLS) with `meshed` = `dst` is a meshed workload in the mesh view and
/// `have_identity` = the node has workload certificates (`mesh` is set).
/// HBONE needs the source's identity: a source that is not one of this
/// node's meshed workloads is refused ([`REFUSE_UNKNOWN_SOURCE`]), never
/// sent in plain text. Every refusal is logged with its reason (warn).
pub fn route(
    mesh: Option<&MeshOutbound>,
    policy: MeshTlsPolicy,
    source: IpAddr,
    dst: SocketAddr,
) -> Route {
    let r = match mesh {
        // No CA: `meshed` does not change the outcome without identities.
        None => transport_route(policy.transport(false, false, true)),
        Some(m) => {
            let view = m.view.load();
            let to = view.meshed.get(&dst.ip());
            match policy.transport(to.is_some(), true, !view.auto_mtls_off) {
                UpstreamTransport::Hbone => match (view.local.get(&source), to) {
                    (Some(from), Some(to)) => Route::Tunnel(Tunnel {
                        source_ip: source,
                        source: from.clone(),
                        destination: to.clone(),
                        dst,
                    }),
                    (_, None) => Route::Refuse(REFUSE_NOT_MESHED),
                    (None, _) => Route::Refuse(REFUSE_UNKNOWN_SOURCE),
                },
                t => transport_route(t),
            }
        }
    };
    if let Route::Refuse(reason) = &r {
        tracing::warn!(%source, %dst, "upstream connection refused (fail closed): {reason}");
    }
    r
}

fn transport_route(t: UpstreamTransport) -> Route {
    match t {
        UpstreamTransport::Plaintext | UpstreamTransport::Originate => Route::Plain,
        UpstreamTransport::Refuse(r) => Route::Refuse(r),
        // Without a view there is no tunnel to use: fail closed.
        UpstreamTransport::Hbone => Route::Refuse(REFUSE_NO_IDENTITY),
    }
}

/// The node's outbound HBONE: the pool and the mesh view. Present only
/// when the daemon has workload identities (a CA).
pub struct MeshOutbound {
    client: Arc<Outbound>,
    view: ArcSwap<MeshView>,
    /// Bumped by every [`MeshOutbound::set_view`] (the L7 tunnel pools
    /// prune themselves when it moves).
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for MeshOutbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshOutbound")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl MeshOutbound {
    /// Tunnels with certificates from `certs`; the view starts empty.
    pub fn new(certs: CertStore) -> Arc<Self> {
        Arc::new(Self {
            client: Outbound::new(certs),
            view: ArcSwap::from_pointee(MeshView::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Replaces the mesh view (after a reload) and drops the pooled HBONE
    /// connections it no longer allows: to an address that is no longer a
    /// meshed workload (or now has another identity), or from an identity
    /// that no local workload has any more. Streams already open on them
    /// finish; no new stream goes on them.
    pub fn set_view(&self, view: MeshView) {
        let sources: std::collections::HashSet<&SpiffeId> = view.local.values().collect();
        self.client.retain(|from, to, addr| {
            sources.contains(from) && view.meshed.get(&addr.ip()) == Some(to)
        });
        self.view.store(Arc::new(view));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How many times the view was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the current view still sends `t`'s source to `t`'s
    /// destination through this tunnel (same identities at both ends).
    pub fn allows(&self, t: &Tunnel) -> bool {
        let view = self.view.load();
        view.local.get(&t.source_ip) == Some(&t.source)
            && view.meshed.get(&t.dst.ip()) == Some(&t.destination)
    }

    /// The pool.
    pub fn client(&self) -> &Arc<Outbound> {
        &self.client
    }

    /// The identity of this node's meshed workload at `ip`, if any (what
    /// its tunnels present).
    pub fn local_identity(&self, ip: IpAddr) -> Option<SpiffeId> {
        self.view.load().local.get(&ip).cloned()
    }

    /// Whether `ip` is a meshed workload (reached over HBONE).
    pub fn is_meshed(&self, ip: IpAddr) -> bool {
        self.view.load().meshed.contains_key(&ip)
    }

    /// Opens one `CONNECT` stream for `t` on behalf of the client
    /// connection `source` (`forwarded: for="<ip:port>"`, plus `;host=`
    /// when the client asked for a service).
    pub async fn connect(
        &self,
        t: &Tunnel,
        source: SocketAddr,
        service_host: Option<&str>,
    ) -> Result<HboneStream, HboneError> {
        let req = t.request(source, service_host.map(str::to_string));
        self.client.connect(&req).await
    }
}

/// The tunnel one source workload uses to reach one destination address
/// (the key of the L7 proxy's tunnelled connection pools: every request
/// on such a pool comes from `source_ip` and is presented as `source`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tunnel {
    /// The client pod.
    pub source_ip: IpAddr,
    /// Its identity.
    pub source: SpiffeId,
    /// The destination workload's identity.
    pub destination: SpiffeId,
    /// The destination pod address (`:authority` of the CONNECT).
    pub dst: SocketAddr,
}

impl Tunnel {
    /// The `CONNECT` to the destination's `:15008` for `target`, sent from
    /// the source pod with `forwarded: for=<forwarded_for>` (and `;host=`
    /// with `service_host`).
    fn request(&self, forwarded_for: SocketAddr, service_host: Option<String>) -> OutboundRequest {
        OutboundRequest {
            source: self.source.clone(),
            destination: self.destination.clone(),
            extra_sans: Vec::new(),
            hbone_addr: SocketAddr::new(self.dst.ip(), PORT),
            target: self.dst,
            forwarded_for: Some(forwarded_for),
            service_host,
            source_ip: Some(self.source_ip),
        }
    }

    /// What the source side records for a request or connection that went
    /// through this tunnel: `mutual_tls`, `reporter="source"`, the source
    /// identity presented and the destination identity verified.
    pub fn peer_info(&self) -> crate::telemetry::PeerInfo {
        crate::telemetry::PeerInfo::mutual_tls(
            crate::telemetry::Reporter::Source,
            Some(self.source.to_string().into()),
            Some(self.destination.to_string().into()),
        )
    }
}

impl MeshOutbound {
    /// Opens one `CONNECT` stream for `t` (`forwarded: for="<source IP>"`).
    pub async fn open(&self, t: &Tunnel) -> Result<HboneStream, HboneError> {
        let req = t.request(SocketAddr::new(t.source_ip, 0), None);
        self.client.connect(&req).await
    }

    /// A `TcpStream` whose bytes go through a `CONNECT` stream for `t`: a
    /// loopback connection bridged to the tunnel by a spawned task, for the
    /// L7 proxy's pools, whose codecs run on `TcpStream`s.
    pub async fn bridge(&self, t: &Tunnel) -> std::io::Result<TcpStream> {
        let mut tunnel = self.open(t).await.map_err(|e| match e {
            HboneError::Io(e) => e,
            other => std::io::Error::other(other),
        })?;
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let near = TcpStream::connect(listener.local_addr()?).await?;
        let (mut far, _) = listener.accept().await?;
        drop(listener);
        let _ = near.set_nodelay(true);
        let _ = far.set_nodelay(true);
        tokio::spawn(async move {
            let _ = crate::transport::copy::copy_bidirectional(&mut far, &mut tunnel).await;
        });
        Ok(near)
    }
}

/// Opens the upstream `route` names for a client at `source`: plain TCP
/// to `dst`, or a `CONNECT` stream through `mesh`. A refused route (or a
/// tunnel without `mesh`) is an error: nothing is sent in plain text.
pub async fn connect(
    mesh: Option<&MeshOutbound>,
    route: &Route,
    source: SocketAddr,
    dst: SocketAddr,
    service_host: Option<&str>,
) -> std::io::Result<Upstream> {
    match (route, mesh) {
        (Route::Plain, _) => Ok(Upstream::Plain(TcpStream::connect(dst).await?)),
        (Route::Tunnel(t), Some(m)) => m
            .connect(t, source, service_host)
            .await
            .map(|s| Upstream::Hbone(Box::new(s)))
            .map_err(|e| match e {
                HboneError::Io(e) => e,
                other => std::io::Error::other(other),
            }),
        (Route::Tunnel(_), None) => Err(std::io::Error::other(REFUSE_NO_IDENTITY)),
        (Route::Refuse(r), _) => Err(std::io::Error::other(*r)),
    }
}

/// A connection to an upstream: plain TCP or an HBONE tunnel.
#[derive(Debug)]
pub enum Upstream {
    /// Plain TCP.
    Plain(TcpStream),
    /// A `CONNECT` stream over mutual TLS.
    Hbone(Box<HboneStream>),
}

impl Upstream {
    /// `TCP_NODELAY` on a plain connection (HBONE connections have it).
    pub fn set_nodelay(&self) {
        if let Upstream::Plain(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    /// The local address of a plain connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Upstream::Plain(s) => s.local_addr().ok(),
            Upstream::Hbone(_) => None,
        }
    }

    /// Whether it goes through HBONE.
    pub fn is_hbone(&self) -> bool {
        matches!(self, Upstream::Hbone(_))
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Hbone(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Hbone(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_flush(cx),
            Upstream::Hbone(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Hbone(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
