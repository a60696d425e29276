//! Incremental compilation: a change that only touches endpoints
//! (EndpointSlices and Endpoints objects) recompiles only the services
//! whose endpoints changed — their clusters, the workloads at the endpoint
//! addresses that came or went, and their kernel (L4) entries' backends —
//! instead of the whole snapshot. Envoy's EDS makes the same cut: an
//! endpoint update leaves listeners, routes and cluster settings alone.
//!
//! The result is exactly what a full [`super::compile`] of the same
//! resources gives (a test compares both on random edits of a generated
//! mesh), and the [`SnapshotDiff`] returned is exactly
//! [`crate::snapshot::diff`] of the two snapshots, computed without
//! comparing the whole snapshots.
//!
//! Anything else falls back to a full compile: a change to any other kind,
//! an invalid or twice-defined resource, a security resource Strait fails
//! closed on (its selection depends on every workload), a service VIP
//! shared by two services, or an endpoint change that flips whether a
//! service's workloads have policies that need the proxy (the kernel
//! entry's mode changes).
//!
//! Costs per incremental update: one scan over the resources (to find the
//! changed services' slices, and the Pods, Deployments and
//! DestinationRules endpoints and clusters read), indexing the Pods and
//! DestinationRules found, and the changed services' own work.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::intern::Interner;
use super::services::{kube_service, RawEndpoint};
use super::{clusters, compile_keeping, l4, CompileOptions, Index, Kept};

/// Whether `snap` has any PeerAuthentication, RequestAuthentication or
/// AuthorizationPolicy.
fn policies_exist(snap: &MeshSnapshot) -> bool {
    !snap.policies.peer_authentication.is_empty()
        || !snap.policies.request_authentication.is_empty()
        || !snap.policies.authorization.is_empty()
}
use crate::api::{Object, Resource};
use crate::diag::Diagnostic;
use crate::snapshot::diff::L4Key;
use crate::snapshot::{
    cluster_name, Changes, L4Backend, MeshSnapshot, ServiceSource, SnapshotDiff, Workload,
};

/// `Kind/namespace/name` of a resource.
type Key = (&'static str, String, String);

fn key(r: &Resource) -> Key {
    (r.kind(), r.namespace().to_string(), r.name().to_string())
}

/// How [`Incremental::apply`] produced the new snapshot.
#[derive(Debug)]
pub enum Applied {
    /// Only the services whose endpoints changed were recompiled.
    Incremental,
    /// A full compile; its diagnostics (validation errors of the resources
    /// left out, compile notes).
    Full {
        /// As [`super::compile`] returns them.
        diagnostics: Vec<Diagnostic>,
    },
}

/// A compiler that keeps what it needs to apply endpoint changes to the
/// snapshot it compiled last (see the module docs).
///
/// ```
/// use strait_config::compile::{Applied, Incremental};
/// let svc = |ip: &str| format!(r#"
/// apiVersion: v1
/// kind: Service
/// metadata: {{name: api, namespace: default}}
/// spec: {{clusterIP: 10.96.0.10, ports: [{{name: http, port: 80, targetPort: 8080}}]}}
/// ---
/// apiVersion: discovery.k8s.io/v1
/// kind: EndpointSlice
/// metadata: {{name: api-1, namespace: default, labels: {{kubernetes.io/service-name: api}}}}
/// addressType: IPv4
/// ports: [{{name: http, port: 8080}}]
/// endpoints: [{{addresses: ["{ip}"]}}]
/// "#);
/// let before = strait_config::load::load_str(&svc("10.1.0.1"), "a.yaml").resources;
/// let after = strait_config::load::load_str(&svc("10.1.0.2"), "a.yaml").resources;
/// let (mut inc, mut snap, _) = Incremental::compile(&before);
/// let (diff, how) = inc.apply(&mut snap, &after, Some((&before[1..], &after[1..])));
/// assert!(matches!(how, Applied::Incremental));
/// assert_eq!(diff.clusters.changed, ["outbound|80||api.default.svc.cluster.local"]);
/// assert_eq!(snap, strait_config::compile(&after).0);
/// ```
pub struct Incremental {
    /// Each host's endpoints before they are bound to ports.
    raw: HashMap<String, Vec<RawEndpoint>>,
    /// Endpoint address → the hosts with an endpoint there.
    ip_hosts: HashMap<IpAddr, BTreeSet<String>>,
    /// Workloads from Pods and WorkloadEntries, before endpoints add their
    /// services (and endpoint-only workloads).
    base_workloads: BTreeMap<IpAddr, Workload>,
    /// How many definitions each `Kind/namespace/name` has.
    keys: HashMap<Key, u32>,
    /// The last full compile left nothing out and nothing fails closed:
    /// incremental updates are possible.
    fast: bool,
    /// The options of the full compiles.
    opts: CompileOptions,
}

impl Incremental {
    /// A full compile of `resources` ([`super::compile`]), remembering what
    /// later [`Incremental::apply`] calls need.
    pub fn compile(resources: &[Resource]) -> (Self, MeshSnapshot, Vec<Diagnostic>) {
        Self::compile_with(resources, &CompileOptions::default())
    }

    /// [`Incremental::compile`] for a data plane that enforces what `opts`
    /// says ([`super::compile_with`]).
    pub fn compile_with(
        resources: &[Resource],
        opts: &CompileOptions,
    ) -> (Self, MeshSnapshot, Vec<Diagnostic>) {
        let (snap, diags, kept) = compile_keeping(resources, opts, true);
        let Kept {
            raw,
            base_workloads,
            left_out,
        } = kept.expect("kept on request");
        let mut ip_hosts: HashMap<IpAddr, BTreeSet<String>> = HashMap::new();
        for (h, eps) in &raw {
            for e in eps {
                ip_hosts.entry(e.ip).or_default().insert(h.clone());
            }
        }
        let mut keys = HashMap::with_capacity(resources.len());
        for r in resources {
            *keys.entry(key(r)).or_insert(0) += 1;
        }
        // Policies (inbound modes per workload) and external VIPs (node
        // weights from endpoints) are derived from workloads and endpoints
        // as a whole: with any of them, every change takes the full compile.
        let fast = !left_out
            && snap.deny.is_empty()
            && snap.external.is_empty()
            && snap.inbound.is_empty()
            && !policies_exist(&snap)
            && !resources.iter().any(fails_closed);
        let inc = Self {
            raw: raw.into_iter().collect(),
            ip_hosts,
            base_workloads,
            keys,
            fast,
            opts: *opts,
        };
        (inc, snap, diags)
    }

    /// Brings `snap` (the snapshot this compiler produced last) to what
    /// `resources` compile to, and returns what changed. `changed` names
    /// the resources that differ from the previous call's input: their
    /// previous versions (removed) and their new ones (added); `None` when
    /// unknown. Endpoint-only changes are applied in place
    /// ([`Applied::Incremental`]); anything else is a full compile.
    pub fn apply(
        &mut self,
        snap: &mut MeshSnapshot,
        resources: &[Resource],
        changed: Option<(&[Resource], &[Resource])>,
    ) -> (SnapshotDiff, Applied) {
        if let Some((removed, added)) = changed {
            if let Some(diff) = self.try_endpoints(snap, resources, removed, added) {
                return (diff, Applied::Incremental);
            }
        }
        let (inc, new, diagnostics) = Self::compile_with(resources, &self.opts);
        let diff = crate::snapshot::diff(snap, &new);
        *self = inc;
        *snap = new;
        (diff, Applied::Full { diagnostics })
    }

    /// The incremental path; `None` (nothing changed) when it does not
    /// apply.
    fn try_endpoints(
        &mut self,
        snap: &mut MeshSnapshot,
        resources: &[Resource],
        removed: &[Resource],
        added: &[Resource],
    ) -> Option<SnapshotDiff> {
        if !self.fast || !snap.deny.is_empty() {
            return None;
        }
        // Only endpoint objects, valid, each defined once.
        let mut affected: BTreeSet<(String, String)> = BTreeSet::new();
        for r in removed.iter().chain(added) {
            affected.insert(endpoint_service(r)?);
        }
        if added.iter().any(|r| {
            crate::validate::validate_resource(r)
                .iter()
                .any(Diagnostic::is_error)
        }) {
            return None;
        }
        let mut counts: HashMap<Key, i64> = HashMap::new();
        for r in removed {
            let k = key(r);
            let base = i64::from(self.keys.get(&k).copied().unwrap_or(0));
            *counts.entry(k).or_insert(base) -= 1;
        }
        for r in added {
            let k = key(r);
            let base = i64::from(self.keys.get(&k).copied().unwrap_or(0));
            *counts.entry(k).or_insert(base) += 1;
        }
        if counts.values().any(|n| !(0..=1).contains(n)) {
            return None;
        }

        // The resources the changed services' endpoints and clusters read.
        let mut picked: Vec<&Resource> = Vec::new();
        for r in resources {
            let take = match &r.object {
                Object::Pod(_) | Object::Deployment(_) | Object::DestinationRule(_) => true,
                Object::Service(_) => {
                    affected.contains(&(r.namespace().to_string(), r.name().to_string()))
                }
                Object::EndpointSlice(_) | Object::Endpoints(_) => {
                    endpoint_service(r).is_some_and(|k| affected.contains(&k))
                }
                _ => false,
            };
            if take {
                picked.push(r);
            }
        }
        let idx = Index::new(&picked);

        // The changed services' new endpoints.
        let mut strings = Interner::default();
        let mut new_raw: BTreeMap<String, Vec<RawEndpoint>> = BTreeMap::new();
        for svc in &idx.services {
            let host = crate::hosts::service_fqdn(
                svc.metadata.name.as_deref().unwrap_or_default(),
                svc.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let Some(current) = snap.services.get(&host) else {
                continue;
            };
            if current.source != ServiceSource::Kubernetes {
                continue;
            }
            let (service, eps) = kube_service(&idx, &mut strings, svc)?;
            if service != *current {
                return None;
            }
            for vip in service.vips() {
                if snap.vips.get(&vip).is_some_and(|hs| hs.len() > 1) {
                    return None;
                }
            }
            new_raw.insert(host, eps);
        }

        // The addresses that gained or lost a service, their hosts, and
        // their workloads as a full compile would build them.
        let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
        for (h, eps) in &new_raw {
            ips.extend(eps.iter().map(|e| e.ip));
            ips.extend(self.raw.get(h).into_iter().flatten().map(|e| e.ip));
        }
        let mut new_ip_hosts: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for ip in &ips {
            let mut hosts = self.ip_hosts.get(ip).cloned().unwrap_or_default();
            for (h, eps) in &new_raw {
                if eps.iter().any(|e| e.ip == *ip) {
                    hosts.insert(h.clone());
                } else {
                    hosts.remove(h);
                }
            }
            new_ip_hosts.insert(*ip, hosts);
        }
        let mut new_workloads: BTreeMap<IpAddr, Option<Workload>> = BTreeMap::new();
        for (ip, hosts) in &new_ip_hosts {
            let w = workload_at(
                *ip,
                self.base_workloads.get(ip),
                hosts,
                |h| raw_of(&new_raw, &self.raw, h),
                &snap.services,
            );
            new_workloads.insert(*ip, w);
        }

        // Hosts whose workloads changed: their kernel entry's mode must not
        // change (policies that need the proxy), or the full compile runs.
        let mut touched_hosts: BTreeSet<&str> = new_raw.keys().map(String::as_str).collect();
        for ip in &ips {
            for h in self.ip_hosts.get(ip).into_iter().flatten() {
                touched_hosts.insert(h);
            }
            for h in &new_ip_hosts[ip] {
                touched_hosts.insert(h);
            }
        }
        let policies_exist = !snap.policies.peer_authentication.is_empty()
            || !snap.policies.request_authentication.is_empty()
            || !snap.policies.authorization.is_empty();
        if policies_exist {
            for h in &touched_hosts {
                let Some(svc) = snap.services.get(*h) else {
                    continue;
                };
                if svc.vip.is_none() {
                    continue;
                }
                let old_eps = self.raw.get(*h).map_or(&[][..], Vec::as_slice);
                let before = workloads_of(h, old_eps, |ip| snap.workloads.get(&ip));
                let new_eps = raw_of(&new_raw, &self.raw, h);
                let after = workloads_of(h, new_eps, |ip| match new_workloads.get(&ip) {
                    Some(w) => w.as_ref(),
                    None => snap.workloads.get(&ip),
                });
                if l4::policy_needs_proxy(snap, &before) != l4::policy_needs_proxy(snap, &after) {
                    return None;
                }
            }
        }

        // The changed services' clusters.
        let mut new_clusters = Vec::new();
        for (h, eps) in &new_raw {
            clusters::service_clusters(&idx, &snap.services[h], eps, &mut new_clusters);
        }

        // Commit: nothing below can fail.
        let mut diff = SnapshotDiff::default();
        for (name, c) in new_clusters {
            match snap.clusters.get_mut(&name) {
                Some(old) if *old == c => {}
                Some(old) => {
                    *old = c;
                    diff.clusters.changed.push(name);
                }
                None => {
                    snap.clusters.insert(name.clone(), c);
                    diff.clusters.added.push(name);
                }
            }
        }
        for (ip, w) in new_workloads {
            match (snap.workloads.get_mut(&ip), w) {
                (Some(old), Some(w)) if *old == w => {}
                (Some(old), Some(w)) => {
                    *old = w;
                    diff.workloads.changed.push(ip);
                }
                (Some(_), None) => {
                    snap.workloads.remove(&ip);
                    diff.workloads.removed.push(ip);
                }
                (None, Some(w)) => {
                    snap.workloads.insert(ip, w);
                    diff.workloads.added.push(ip);
                }
                (None, None) => {}
            }
        }
        for h in new_raw.keys() {
            let svc = &snap.services[h];
            let vips: Vec<IpAddr> = svc.vips().collect();
            for (vip, port) in vips
                .iter()
                .flat_map(|v| svc.ports.iter().map(move |p| (*v, p)))
            {
                let k: L4Key = (vip, port.port, port.protocol.l4());
                let Ok(i) = snap
                    .l4
                    .binary_search_by(|e| (e.vip, e.port, e.protocol).cmp(&k))
                else {
                    continue;
                };
                if snap.l4[i].host != *h {
                    continue;
                }
                let mut backends: Vec<L4Backend> = snap
                    .clusters
                    .get(&cluster_name(port.port, "", h))
                    .map(|c| {
                        c.endpoints
                            .iter()
                            .map(|e| L4Backend {
                                addr: e.addr,
                                weight: e.weight.max(1),
                                healthy: e.healthy,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                backends.sort();
                if snap.l4[i].backends != backends {
                    snap.l4[i].backends = backends;
                    diff.l4.changed.push(k);
                }
            }
        }
        sort(&mut diff.clusters);
        sort(&mut diff.workloads);
        sort(&mut diff.l4);

        for (ip, hosts) in new_ip_hosts {
            if hosts.is_empty() {
                self.ip_hosts.remove(&ip);
            } else {
                self.ip_hosts.insert(ip, hosts);
            }
        }
        for (h, eps) in new_raw {
            self.raw.insert(h, eps);
        }
        for (k, n) in counts {
            if n == 0 {
                self.keys.remove(&k);
            } else {
                self.keys.insert(k, n as u32);
            }
        }
        Some(diff)
    }
}

/// A changed service's new endpoints, else its endpoints as they were.
fn raw_of<'a>(
    new: &'a BTreeMap<String, Vec<RawEndpoint>>,
    old: &'a HashMap<String, Vec<RawEndpoint>>,
    host: &str,
) -> &'a [RawEndpoint] {
    match new.get(host) {
        Some(v) => v,
        None => old.get(host).map_or(&[], Vec::as_slice),
    }
}

fn fails_closed(r: &Resource) -> bool {
    matches!(
        r.object,
        Object::AuthorizationPolicy(_)
            | Object::RequestAuthentication(_)
            | Object::PeerAuthentication(_)
    ) && crate::enforced::fails_closed(r)
}

/// The `(namespace, Service name)` whose endpoints an EndpointSlice or
/// Endpoints object gives; `None` for any other kind.
fn endpoint_service(r: &Resource) -> Option<(String, String)> {
    match &r.object {
        Object::EndpointSlice(s) => Some((
            r.namespace().to_string(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .cloned()
                .unwrap_or_default(),
        )),
        Object::Endpoints(_) => Some((r.namespace().to_string(), r.name().to_string())),
        _ => None,
    }
}

/// The workload at `ip` as the full compile builds it: its Pod's or
/// WorkloadEntry's (`base`), else one made from the first Kubernetes
/// service endpoint at `ip`, with the services whose endpoints are there,
/// walked in host order (`hosts`) as the full compile walks them.
fn workload_at<'a>(
    ip: IpAddr,
    base: Option<&Workload>,
    hosts: &BTreeSet<String>,
    raw_of: impl Fn(&str) -> &'a [RawEndpoint],
    services: &BTreeMap<String, crate::snapshot::Service>,
) -> Option<Workload> {
    let mut w = base.cloned();
    for host in hosts {
        let from_kube = services.get(host).map(|s| s.source) == Some(ServiceSource::Kubernetes);
        for e in raw_of(host).iter().filter(|e| e.ip == ip) {
            if w.is_none() {
                if !from_kube {
                    continue;
                }
                w = Some(Workload {
                    name: e.name.clone(),
                    namespace: e.namespace.to_string(),
                    ip: e.ip,
                    labels: e.labels.clone(),
                    service_account: e
                        .service_account
                        .as_deref()
                        .unwrap_or("default")
                        .to_string(),
                    locality: e.locality.to_string(),
                    node: e.node.clone(),
                    services: Vec::with_capacity(1),
                });
            }
            let w = w.as_mut().expect("set above");
            if !w.services.iter().any(|s| s == host) {
                w.services.push(host.clone());
                w.services.sort();
            }
        }
    }
    w
}

/// The workloads a host's kernel entry considers (those listing `host`
/// among their services), given a lookup of workloads by address.
fn workloads_of<'w>(
    host: &str,
    eps: &[RawEndpoint],
    lookup: impl Fn(IpAddr) -> Option<&'w Workload>,
) -> Vec<&'w Workload> {
    let ips: BTreeSet<IpAddr> = eps.iter().map(|e| e.ip).collect();
    ips.into_iter()
        .filter_map(&lookup)
        .filter(|w| w.services.iter().any(|s| s == host))
        .collect()
}

fn sort<K: Ord>(c: &mut Changes<K>) {
    c.added.sort();
    c.removed.sort();
    c.changed.sort();
}

#[cfg(test)]
mod tests;
