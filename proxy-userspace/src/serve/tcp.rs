//! Opaque TCP and TLS passthrough: VirtualService `tcp` / `tls` routes (or
//! the service's default cluster, or the original destination), bytes
//! copied both ways, one access-log record per connection.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::failure::Failure;
use super::table::Table;
use super::Shared;
use crate::runtime::route::{L4Context, WeightedClusters};
use crate::telemetry::access_log::AccessLogRecord;
use crate::telemetry::flags::ResponseFlags;
use crate::upstream::client::{ConnectError, UpstreamError};
use crate::upstream::cluster::{ActiveGuard, Cluster, PickContext};

/// Proxies one TCP connection. `sni` is set for TLS passthrough.
pub async fn proxy(
    shared: Arc<Shared>,
    table: Arc<Table>,
    mut client: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    sni: Option<String>,
) {
    let start = Instant::now();
    let mut rec = AccessLogRecord {
        start_time: Some(SystemTime::now()),
        request_protocol: "tcp",
        downstream_local_address: Some(dst),
        downstream_remote_address: Some(peer),
        requested_server_name: sni.clone(),
        peer: crate::telemetry::PeerInfo::plaintext(),
        ..Default::default()
    };
    let svc = table.service(dst);
    let cluster: Arc<Cluster> = match svc {
        None if table.registry_only() => {
            // REGISTRY_ONLY: Envoy's BlackHoleCluster closes the connection.
            rec.upstream_cluster = Some(crate::runtime::table::BLACK_HOLE_CLUSTER.into());
            finish(&shared, rec, start);
            return;
        }
        None => table.clusters.passthrough().clone(),
        Some(svc) => {
            rec.destination_service = Some(svc.host.clone());
            let ctx = L4Context {
                dst,
                port: svc.port,
                sni: sni.as_deref(),
                source: table.routes.workloads.get(&peer.ip()).map(|w| &**w),
            };
            // TLS rules first (by SNI), then TCP rules, as Istio builds the
            // filter chains.
            let route = match svc
                .routes
                .tls
                .iter()
                .find(|r| sni.is_some() && r.matches(&ctx))
            {
                Some(r) => Some(&r.route),
                None => svc
                    .routes
                    .tcp
                    .iter()
                    .find(|r| r.matches(&ctx))
                    .map(|r| &r.route),
            };
            match route.and_then(WeightedClusters::pick) {
                // The id resolves in the table it was compiled with; were
                // it not to, the connection fails closed.
                Some(d) => match table.cluster(d.cluster) {
                    Some(c) => c.clone(),
                    None => {
                        Failure::NoHealthyUpstream.record(&mut rec);
                        finish(&shared, rec, start);
                        return;
                    }
                },
                None => {
                    Failure::NoRoute.record(&mut rec);
                    finish(&shared, rec, start);
                    return;
                }
            }
        }
    };
    rec.upstream_cluster = Some(cluster.name.clone());
    let mesh = shared.settings.hbone.as_deref();
    let denied = if cluster.lb.is_passthrough() {
        super::http::authz::check_passthrough_connection(
            &table,
            dst,
            peer,
            sni.as_deref(),
            &mut rec,
            mesh,
        )
    } else {
        super::http::authz::check_connection(
            &table,
            &cluster.name,
            peer,
            sni.as_deref(),
            &mut rec,
            mesh,
        )
    };
    if denied {
        finish(&shared, rec, start);
        return;
    }
    let (addr, ep) = if cluster.lb.is_passthrough() {
        (dst, None)
    } else {
        let ctx = PickContext {
            source_ip: Some(peer.ip()),
            ..Default::default()
        };
        match cluster.pick(&ctx) {
            Some(ep) => (ep.addr, Some(ep)),
            None => {
                Failure::NoHealthyUpstream.record(&mut rec);
                finish(&shared, rec, start);
                return;
            }
        }
    };
    rec.upstream_host = Some(addr);
    let Some(_admission) = cluster.breaker.admit_connection() else {
        Failure::Overflow.record(&mut rec);
        finish(&shared, rec, start);
        return;
    };
    let _active = ep.clone().map(ActiveGuard::new);
    if crate::upstream::self_guard::is_self(addr) {
        fail_connect(
            &cluster,
            ep.as_deref(),
            &mut rec,
            ConnectError::Refused(crate::upstream::self_guard::REFUSED),
        );
        finish(&shared, rec, start);
        return;
    }
    if let Some(tls) = &cluster.pool.tls {
        originated(&cluster, ep.as_deref(), tls, client, addr, &mut rec).await;
        finish(&shared, rec, start);
        return;
    }
    let mesh = shared.settings.hbone.as_deref();
    let route = crate::transport::hbone::mesh::route(mesh, cluster.pool.mesh_tls, peer.ip(), addr);
    if let crate::transport::hbone::mesh::Route::Refuse(reason) = route {
        // Fail closed: the client's connection is closed, nothing is sent.
        fail_connect(
            &cluster,
            ep.as_deref(),
            &mut rec,
            ConnectError::Refused(reason),
        );
        finish(&shared, rec, start);
        return;
    }
    let service_host = rec.destination_service.clone();
    let connect = tokio::time::timeout(cluster.pool.connect_timeout, async {
        // Checked above (a route's cluster, or the passthrough's
        // destination workload): a captured local pod's policy port is
        // reached from inside the pod when no tunnel is used.
        let plain = matches!(route, crate::transport::hbone::mesh::Route::Plain);
        if plain && crate::transport::local_delivery::delivers_in_pod(addr) {
            return crate::transport::local_delivery::connect(addr, true)
                .await
                .map(crate::transport::hbone::mesh::Upstream::Plain);
        }
        crate::transport::hbone::mesh::connect(mesh, &route, peer, addr, service_host.as_deref())
            .await
    })
    .await;
    let mut upstream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            fail_connect(&cluster, ep.as_deref(), &mut rec, e.into());
            finish(&shared, rec, start);
            return;
        }
        Err(_) => {
            fail_connect(&cluster, ep.as_deref(), &mut rec, ConnectError::Timeout);
            finish(&shared, rec, start);
            return;
        }
    };
    if let Some(ep) = &ep {
        cluster.record(
            ep,
            crate::upstream::cluster::outlier::TryResult::Status(200),
        );
    }
    upstream.set_nodelay();
    rec.upstream_local_address = upstream.local_addr();
    if let crate::transport::hbone::mesh::Route::Tunnel(t) = &route {
        // Istio's labels for a tunnelled connection: mTLS with both
        // workload identities (the ones the tunnel presented and checked).
        rec.peer = t.peer_info();
    }
    relay(&mut client, &mut upstream, &mut rec).await;
    finish(&shared, rec, start);
}

/// TLS origination for a TCP cluster (DestinationRule `SIMPLE`/`MUTUAL`):
/// the client's bytes go to the endpoint inside TLS. A failed connect or
/// handshake is `UF` with its reason.
async fn originated(
    cluster: &Cluster,
    ep: Option<&super::cluster::Endpoint>,
    tls: &crate::transport::origination::Origination,
    mut client: TcpStream,
    addr: SocketAddr,
    rec: &mut AccessLogRecord,
) {
    let keepalive = cluster.pool.tcp_keepalive;
    let mut upstream = match tls
        .connect(addr, cluster.pool.connect_timeout, keepalive)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            fail_connect(cluster, ep, rec, ConnectError::Client(Box::new(e)));
            return;
        }
    };
    if let Some(ep) = ep {
        cluster.record(ep, super::cluster::outlier::TryResult::Status(200));
    }
    rec.upstream_local_address = upstream.get_ref().0.local_addr().ok();
    relay(&mut client, &mut upstream, rec).await;
}

/// Relays bytes both ways until both sides are done (Envoy's tcp_proxy):
/// the counts go to `rec` (`bytes_received` from the client,
/// `bytes_sent` to it), a failed copy flags `UC` (upstream connection
/// termination); then the client's write side is shut down.
pub(super) async fn relay<C, U>(client: &mut C, upstream: &mut U, rec: &mut AccessLogRecord)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match crate::transport::copy::copy_bidirectional(client, upstream).await {
        Ok((up, down)) => {
            rec.bytes_received = up;
            rec.bytes_sent = down;
        }
        Err(_) => rec
            .response_flags
            .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION),
    }
    let _ = client.shutdown().await;
}

fn fail_connect(
    cluster: &Cluster,
    ep: Option<&crate::upstream::cluster::Endpoint>,
    rec: &mut AccessLogRecord,
    cause: ConnectError,
) {
    Failure::Upstream(&UpstreamError::Connect(cause)).record(rec);
    if let Some(ep) = ep {
        cluster.record(
            ep,
            crate::upstream::cluster::outlier::TryResult::LocalFailure,
        );
    }
}

fn finish(shared: &Shared, mut rec: AccessLogRecord, start: Instant) {
    rec.duration_ms = start.elapsed().as_millis() as u64;
    shared.sink.log(rec);
}
