//! Istio's TCP metrics for the connections the kernel balances (no proxy
//! sees them): the sockops program's `TCP_STATS` counts
//! ([`Datapath::tcp_stats`]) become `istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_sent_bytes_total` and
//! `istio_tcp_received_bytes_total` with `reporter="source"` and Istio's
//! labels, as the node proxy reports its own TCP connections
//! (`daemon/sink.rs`).
//!
//! IPv4 connections (and IPv6 sockets' IPv4-mapped ones) come from
//! `TCP_STATS`, native IPv6 ones from `TCP_STATS6`
//! ([`Datapath::tcp_stats6`]); both get the same labels.
//!
//! Labels: the source workload is the client's pod address, the
//! destination workload the backend's, the destination service the VIP the
//! client connected to (for a connection whose kernel record was reused
//! before it closed, the L4 service that has the backend). Principals are
//! `unknown` and `connection_security_policy` is `unknown`, as Istio's
//! source reporter without mTLS.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use strait_config::snapshot::MeshSnapshot;

use super::sink::side;
use crate::datapath::{Datapath, TcpStats, TcpStatsKey, TcpStatsKey6};
use crate::telemetry::{Metrics, TcpLabels};

/// How often the kernel counters are read (each read walks the map).
pub(super) const POLL_EVERY: Duration = Duration::from_secs(2);

/// What was already exported, per map (`true`: `TCP_STATS6`) and key.
#[derive(Default)]
pub(super) struct KernelTcpMetrics {
    last: HashMap<(bool, ConnKey), TcpStats>,
    polled: Option<Instant>,
}

/// A `TCP_STATS` or `TCP_STATS6` key with its addresses decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ConnKey {
    /// The client's address.
    src: IpAddr,
    /// The service the client connected to; `None` when the kernel's
    /// record was reused before the connection closed.
    vip: Option<SocketAddr>,
    /// The backend the kernel chose.
    backend: SocketAddr,
}

fn v4(be: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from_be(be)))
}

/// An address in `ipv6_words` form; IPv4-mapped ones as IPv4.
fn v6(words: [u32; 4]) -> IpAddr {
    let a = Ipv6Addr::from(proxy_common::ipv6_from_words(words));
    a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)
}

impl From<&TcpStatsKey> for ConnKey {
    fn from(k: &TcpStatsKey) -> Self {
        Self {
            src: v4(k.src),
            vip: (k.vip != 0).then(|| SocketAddr::new(v4(k.vip), u16::from_be(k.vport))),
            backend: SocketAddr::new(v4(k.backend), u16::from_be(k.bport)),
        }
    }
}

impl From<&TcpStatsKey6> for ConnKey {
    fn from(k: &TcpStatsKey6) -> Self {
        Self {
            src: v6(k.src),
            vip: (k.vip != [0; 4]).then(|| SocketAddr::new(v6(k.vip), u16::from_be(k.vport))),
            backend: SocketAddr::new(v6(k.backend), u16::from_be(k.bport)),
        }
    }
}

/// The Istio labels of a kernel-balanced connection's key.
pub(super) fn labels(snap: &MeshSnapshot, k: impl Into<ConnKey>) -> TcpLabels {
    let k: ConnKey = k.into();
    let unknown = || "unknown".to_string();
    let src = side(snap, Some(k.src));
    let backend = k.backend;
    let dst = side(snap, Some(backend.ip()));
    let host = if let Some(vip) = k.vip {
        snap.service_by_vip(vip.ip(), vip.port())
            .map(|(s, _)| s.host.clone())
    } else {
        snap.l4
            .iter()
            .find(|s| s.backends.iter().any(|b| b.addr == backend))
            .map(|s| s.host.clone())
    };
    let (service, name, namespace) = match host.as_deref().and_then(|h| snap.services.get(h)) {
        Some(s) => (s.host.clone(), s.name.clone(), s.namespace.clone()),
        None => (host.unwrap_or_else(unknown), unknown(), unknown()),
    };
    TcpLabels {
        reporter: "source".into(),
        source_workload: src.workload,
        source_workload_namespace: src.namespace,
        source_principal: unknown(),
        source_app: src.app,
        source_version: src.version,
        destination_workload: dst.workload,
        destination_workload_namespace: dst.namespace,
        destination_principal: unknown(),
        destination_app: dst.app,
        destination_version: dst.version,
        destination_service: service,
        destination_service_name: name,
        destination_service_namespace: namespace,
        request_protocol: "tcp".into(),
        response_flags: "-".into(),
        connection_security_policy: unknown(),
    }
}

impl KernelTcpMetrics {
    /// Exports what the kernel counted since the last call, at most every
    /// [`POLL_EVERY`] (`force`: now). A read error is logged once per call
    /// and the next call tries again.
    pub(super) fn poll(
        &mut self,
        dp: &Datapath,
        snap: &MeshSnapshot,
        metrics: &Metrics,
        force: bool,
    ) {
        if !force && self.polled.is_some_and(|t| t.elapsed() < POLL_EVERY) {
            return;
        }
        self.polled = Some(Instant::now());
        let read = dp.tcp_stats().and_then(|v4| {
            let v6 = dp.tcp_stats6()?;
            Ok(v4
                .iter()
                .map(|(k, s)| ((false, ConnKey::from(k)), *s))
                .chain(v6.iter().map(|(k, s)| ((true, ConnKey::from(k)), *s)))
                .collect::<Vec<_>>())
        });
        let stats = match read {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("reading the kernel's TCP counters: {e:#}");
                return;
            }
        };
        for (k, now) in stats {
            let before = self.last.get(&k).copied().unwrap_or_default();
            // Counters only grow while the object is loaded; a smaller
            // value is a new count from zero.
            let d = |n: u64, b: u64| if n >= b { n - b } else { n };
            let delta = (
                d(now.opened, before.opened),
                d(now.closed, before.closed),
                // Istio's names are from the server side: sent = the
                // response (what the client received).
                d(now.received, before.received),
                d(now.sent, before.sent),
            );
            if delta != (0, 0, 0, 0) {
                metrics.tcp_add(&labels(snap, k.1), delta.0, delta.1, delta.2, delta.3);
            }
            self.last.insert(k, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> MeshSnapshot {
        let loaded = strait_config::load::load_str(yaml, "test.yaml");
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        strait_config::compile(&loaded.resources).0
    }

    fn be(ip: &str) -> u32 {
        u32::from(ip.parse::<Ipv4Addr>().unwrap()).to_be()
    }

    #[test]
    fn kernel_connections_get_istios_source_labels() {
        let snap = snapshot(
            "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n\
             spec: {clusterIP: 10.96.0.9, selector: {app: reviews}, ports: [{name: tcp, port: 9080}]}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v2-5b64f47978-xk2lp, namespace: default, labels: {app: reviews, version: v2, pod-template-hash: 5b64f47978}}\n\
             spec: {containers: [{name: c, image: x, ports: [{containerPort: 9080}]}]}\nstatus: {podIP: 10.244.0.7, phase: Running}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: productpage, namespace: default, labels: {app: productpage, version: v1}}\n\
             spec: {containers: [{name: c, image: x}]}\nstatus: {podIP: 10.244.0.5, phase: Running}\n",
        );
        let key = TcpStatsKey {
            src: be("10.244.0.5"),
            vip: be("10.96.0.9"),
            backend: be("10.244.0.7"),
            vport: 9080u16.to_be(),
            bport: 9080u16.to_be(),
        };
        let l = labels(&snap, &key);
        assert_eq!(l.reporter, "source");
        assert_eq!(
            (
                l.source_workload.as_str(),
                l.source_app.as_str(),
                l.source_version.as_str()
            ),
            ("productpage", "productpage", "v1")
        );
        assert_eq!(
            (
                l.destination_workload.as_str(),
                l.destination_version.as_str()
            ),
            ("reviews-v2", "v2")
        );
        assert_eq!(l.destination_service, "reviews.default.svc.cluster.local");
        assert_eq!(
            (
                l.destination_service_name.as_str(),
                l.destination_service_namespace.as_str()
            ),
            ("reviews", "default")
        );
        assert_eq!(l.request_protocol, "tcp");
        // A record reused before close: the service is found by backend.
        let lost = TcpStatsKey {
            vip: 0,
            vport: 0,
            ..key
        };
        assert_eq!(
            labels(&snap, &lost).destination_service,
            "reviews.default.svc.cluster.local"
        );
        // An unknown client.
        let stranger = TcpStatsKey {
            src: be("192.0.2.1"),
            ..key
        };
        assert_eq!(labels(&snap, &stranger).source_workload, "unknown");
    }

    fn w6(ip: &str) -> [u32; 4] {
        proxy_common::ipv6_words(ip.parse::<Ipv6Addr>().unwrap().octets())
    }

    #[test]
    fn native_ipv6_connections_get_the_same_labels() {
        let snap = snapshot(
            "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n\
             spec: {clusterIP: fd00:96::9, clusterIPs: [fd00:96::9], ipFamilies: [IPv6], selector: {app: reviews}, ports: [{name: tcp, port: 9080}]}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}\n\
             spec: {containers: [{name: c, image: x, ports: [{containerPort: 9080}]}]}\nstatus: {podIP: fd00:244::7, podIPs: [{ip: fd00:244::7}], phase: Running}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: productpage, namespace: default, labels: {app: productpage, version: v1}}\n\
             spec: {containers: [{name: c, image: x}]}\nstatus: {podIP: fd00:244::5, podIPs: [{ip: fd00:244::5}], phase: Running}\n",
        );
        let key = TcpStatsKey6 {
            src: w6("fd00:244::5"),
            vip: w6("fd00:96::9"),
            backend: w6("fd00:244::7"),
            vport: 9080u16.to_be(),
            bport: 9080u16.to_be(),
        };
        let l = labels(&snap, &key);
        assert_eq!(
            (l.source_workload.as_str(), l.destination_workload.as_str()),
            ("productpage", "reviews-v2")
        );
        assert_eq!(l.destination_service, "reviews.default.svc.cluster.local");
        assert_eq!(l.destination_version, "v2");
        // Its record reused before close: the service found by backend.
        let lost = TcpStatsKey6 {
            vip: [0; 4],
            vport: 0,
            ..key
        };
        assert_eq!(
            labels(&snap, &lost).destination_service,
            "reviews.default.svc.cluster.local"
        );
        // IPv4-mapped addresses (a reused record of an IPv6 socket's
        // IPv4-mapped connection) read as IPv4.
        let mapped = ConnKey::from(&TcpStatsKey6 {
            src: w6("::ffff:10.244.0.5"),
            vip: [0; 4],
            backend: w6("::ffff:10.244.0.7"),
            vport: 0,
            bport: 9080u16.to_be(),
        });
        assert_eq!(mapped.src, "10.244.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(mapped.backend, "10.244.0.7:9080".parse().unwrap());
    }
}
