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
use crate::snapshot::{cluster_name, Changes, MeshSnapshot, ServiceSource, SnapshotDiff, Workload};

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
            if let Ok(diff) = self.try_apply(snap, resources, removed, added) {
                return (diff, Applied::Incremental);
            }
        }
        let (inc, new, diagnostics) = Self::compile_with(resources, &self.opts);
        let diff = crate::snapshot::diff(snap, &new);
        *self = inc;
        *snap = new;
        (diff, Applied::Full { diagnostics })
    }

    /// The incremental path alone: brings `snap` (the snapshot this
    /// compiler produced last, possibly with kernel entries' modes changed
    /// by the caller since) to what `resources` compile to when the change
    /// (`removed`, `added`: as [`Incremental::apply`]'s `changed`) touches
    /// only endpoints, and returns the diff. When it cannot, `snap` and
    /// `self` are untouched and the error says why; the caller then
    /// compiles in full ([`Incremental::compile_with`]).
    pub fn try_apply<'r>(
        &mut self,
        snap: &mut MeshSnapshot,
        resources: impl IntoIterator<Item = &'r Resource>,
        removed: &[Resource],
        added: &[Resource],
    ) -> Result<SnapshotDiff, NotIncremental> {
        use NotIncremental as N;
        if !self.fast {
            return Err(N::FullOnly);
        }
        if !snap.deny.is_empty() {
            return Err(N::FailsClosed);
        }
        // Only endpoint objects, valid, each defined once.
        let mut affected: BTreeSet<(String, String)> = BTreeSet::new();
        for r in removed.iter().chain(added) {
            affected.insert(endpoint_service(r).ok_or(N::OtherKind(r.kind()))?);
        }
        if added.iter().any(|r| {
            crate::validate::validate_resource(r)
                .iter()
                .any(Diagnostic::is_error)
        }) {
            return Err(N::Invalid);
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
            return Err(N::Duplicate);
        }

        // The resources the changed services' endpoints and clusters read.
        // Whether (namespace, name) is an affected service; compared
        // without allocating when few are (this runs over every resource
        // of the mesh on each update).
        let hit = |ns: &str, name: &str| {
            if affected.len() <= 16 {
                affected.iter().any(|(a, b)| a == ns && b == name)
            } else {
                affected.contains(&(ns.to_string(), name.to_string()))
            }
        };
        let mut picked: Vec<&Resource> = Vec::new();
        for r in resources {
            let take = match &r.object {
                Object::Pod(_) | Object::Deployment(_) | Object::DestinationRule(_) => true,
                Object::Service(_) => hit(r.namespace(), r.name()),
                Object::EndpointSlice(s) => hit(r.namespace(), s.service_name().unwrap_or("")),
                Object::Endpoints(_) => hit(r.namespace(), r.name()),
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
            let (service, eps) = kube_service(&idx, &mut strings, svc).ok_or(N::ServiceChanged)?;
            if service != *current {
                return Err(N::ServiceChanged);
            }
            for vip in service.vips() {
                if snap.vips.get(&vip).is_some_and(|hs| hs.len() > 1) {
                    return Err(N::SharedVip);
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
                    return Err(N::ModeFlips);
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
                let backends = l4::backends(snap.clusters.get(&cluster_name(port.port, "", h)));
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
        Ok(diff)
    }
}

/// Makes `target` equal to `from` given `diff`, the difference between
/// them as [`Incremental::try_apply`] returned it (`target` is the
/// snapshot before that update, `from` the one after): copies the
/// services, clusters, route tables, gateways, workloads and kernel (L4)
/// entries `diff` names, removes those it names as removed, and touches
/// nothing else — so the cost is that of the change, not of the mesh.
///
/// This is how a second copy of the snapshot follows the first without a
/// deep copy of every service (the daemon keeps one to update in place and
/// publishes the other, `daemon/compiler.rs`). Only for diffs of
/// incremental updates: a full compile can change what a diff does not
/// name (VIPs, mesh config, policies); `policies_changed` is ignored.
/// Kernel entries are matched by `(vip, port, protocol)` in `l4`'s order
/// (sorted, as compiled).
pub fn copy_changes(target: &mut MeshSnapshot, from: &MeshSnapshot, diff: &SnapshotDiff) {
    fn copy_map<K: Ord + Clone, V: Clone>(
        t: &mut BTreeMap<K, V>,
        f: &BTreeMap<K, V>,
        c: &Changes<K>,
    ) {
        for k in &c.removed {
            t.remove(k);
        }
        for k in c.added.iter().chain(&c.changed) {
            match f.get(k) {
                Some(v) => {
                    t.insert(k.clone(), v.clone());
                }
                None => {
                    t.remove(k);
                }
            }
        }
    }
    copy_map(&mut target.services, &from.services, &diff.services);
    copy_map(&mut target.clusters, &from.clusters, &diff.clusters);
    copy_map(&mut target.gateways, &from.gateways, &diff.gateways);
    copy_map(&mut target.workloads, &from.workloads, &diff.workloads);
    for (h, p) in &diff.routes.removed {
        if let Some(ports) = target.routes.get_mut(h) {
            ports.remove(p);
            if ports.is_empty() {
                target.routes.remove(h);
            }
        }
    }
    for (h, p) in diff.routes.added.iter().chain(&diff.routes.changed) {
        match from.routes.get(h).and_then(|ports| ports.get(p)) {
            Some(r) => {
                target
                    .routes
                    .entry(h.clone())
                    .or_default()
                    .insert(*p, r.clone());
            }
            None => {
                if let Some(ports) = target.routes.get_mut(h) {
                    ports.remove(p);
                }
            }
        }
    }
    let find = |l4: &[crate::snapshot::L4Service], k: &L4Key| {
        l4.binary_search_by(|e| (e.vip, e.port, e.protocol).cmp(k))
    };
    for k in &diff.l4.removed {
        if let Ok(i) = find(&target.l4, k) {
            target.l4.remove(i);
        }
    }
    for k in diff.l4.added.iter().chain(&diff.l4.changed) {
        let Ok(j) = find(&from.l4, k) else {
            continue;
        };
        match find(&target.l4, k) {
            Ok(i) => target.l4[i] = from.l4[j].clone(),
            Err(i) => target.l4.insert(i, from.l4[j].clone()),
        }
    }
}

/// Why [`Incremental::try_apply`] left a change to the full compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotIncremental {
    /// The last full compile had policies, external VIPs, inbound modes,
    /// resources left out or fail-closed resources: every change is
    /// compiled in full.
    #[error("the mesh has policies, external VIPs or left-out resources")]
    FullOnly,
    /// Some workload fails closed.
    #[error("a workload fails closed")]
    FailsClosed,
    /// A resource of another kind than EndpointSlice or Endpoints changed.
    #[error("a {0} changed")]
    OtherKind(&'static str),
    /// A changed endpoint object does not validate.
    #[error("a changed endpoint object is invalid")]
    Invalid,
    /// A `Kind/namespace/name` would be defined twice (or a removal names
    /// one that was not there).
    #[error("an object is defined twice")]
    Duplicate,
    /// The endpoints change what the service compiles to (its ports).
    #[error("the service itself changes")]
    ServiceChanged,
    /// The service shares its VIP with another.
    #[error("the service VIP is shared")]
    SharedVip,
    /// The change flips whether the service's kernel entry redirects to
    /// the proxy (policies on its workloads).
    #[error("the kernel entry's mode changes")]
    ModeFlips,
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
            s.service_name().unwrap_or("").to_string(),
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
                w = Some(e.clone().into_workload());
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
