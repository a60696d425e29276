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
}

/// The node's outbound HBONE: the pool and the mesh view. Present only
/// when the daemon has workload identities (a CA).
pub struct MeshOutbound {
    client: Arc<Outbound>,
    view: ArcSwap<MeshView>,
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
        })
    }

    /// Replaces the mesh view (after a reload).
    pub fn set_view(&self, view: MeshView) {
        self.view.store(Arc::new(view));
    }

    /// The pool.
    pub fn client(&self) -> &Arc<Outbound> {
        &self.client
    }

    /// Istio's auto mTLS decision for a connection from `source` to `dst`:
    /// the identities to use when it must go through HBONE — the
    /// destination is a meshed workload and the source one of this node's
    /// meshed workloads — and the cluster's DestinationRule does not set
    /// its own TLS (`explicit_tls`: mode DISABLE, SIMPLE or MUTUAL; the
    /// caller passes `false` until DestinationRule TLS is compiled into the
    /// clusters). `None`: plaintext, as today.
    pub fn wants_hbone(
        &self,
        source: IpAddr,
        dst: IpAddr,
        explicit_tls: bool,
    ) -> Option<(SpiffeId, SpiffeId)> {
        if explicit_tls {
            return None;
        }
        let view = self.view.load();
        let to = view.meshed.get(&dst)?;
        let from = view.local.get(&source)?;
        Some((from.clone(), to.clone()))
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

    /// Opens the upstream to `dst` for a client at `source`: HBONE when
    /// [`MeshOutbound::wants_hbone`] says so, else a plain TCP connection.
    /// `service_host` is the service the client asked for, if any.
    pub async fn connect(
        &self,
        source: SocketAddr,
        dst: SocketAddr,
        service_host: Option<&str>,
        explicit_tls: bool,
    ) -> Result<Upstream, HboneError> {
        match self.wants_hbone(source.ip(), dst.ip(), explicit_tls) {
            None => Ok(Upstream::Plain(TcpStream::connect(dst).await?)),
            Some((from, to)) => {
                let req = OutboundRequest {
                    source: from,
                    destination: to,
                    extra_sans: Vec::new(),
                    hbone_addr: SocketAddr::new(dst.ip(), PORT),
                    target: dst,
                    forwarded_for: Some(source),
                    service_host: service_host.map(str::to_string),
                };
                Ok(Upstream::Hbone(Box::new(self.client.connect(&req).await?)))
            }
        }
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

impl MeshOutbound {
    /// [`MeshOutbound::wants_hbone`] as a [`Tunnel`].
    pub fn tunnel(&self, source: IpAddr, dst: SocketAddr, explicit_tls: bool) -> Option<Tunnel> {
        let (from, to) = self.wants_hbone(source, dst.ip(), explicit_tls)?;
        Some(Tunnel {
            source_ip: source,
            source: from,
            destination: to,
            dst,
        })
    }

    /// Opens one `CONNECT` stream for `t` (`forwarded: for="<source IP>"`).
    pub async fn open(&self, t: &Tunnel) -> Result<HboneStream, HboneError> {
        let req = OutboundRequest {
            source: t.source.clone(),
            destination: t.destination.clone(),
            extra_sans: Vec::new(),
            hbone_addr: SocketAddr::new(t.dst.ip(), PORT),
            target: t.dst,
            forwarded_for: Some(SocketAddr::new(t.source_ip, 0)),
            service_host: None,
        };
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
            let _ = tokio::io::copy_bidirectional(&mut far, &mut tunnel).await;
        });
        Ok(near)
    }
}

/// Opens the upstream to `dst`: through `mesh` when there is one (see
/// [`MeshOutbound::connect`]), else plain TCP.
pub async fn connect(
    mesh: Option<&MeshOutbound>,
    source: SocketAddr,
    dst: SocketAddr,
    service_host: Option<&str>,
    explicit_tls: bool,
) -> std::io::Result<Upstream> {
    match mesh {
        None => Ok(Upstream::Plain(TcpStream::connect(dst).await?)),
        Some(m) => m
            .connect(source, dst, service_host, explicit_tls)
            .await
            .map_err(|e| match e {
                HboneError::Io(e) => e,
                other => std::io::Error::other(other),
            }),
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
