//! Compilation: validated resources → [`MeshSnapshot`].
//!
//! [`compile`] validates every resource first (an invalid resource is left
//! out alone, with its errors in the returned diagnostics), indexes the
//! rest, then builds services, workloads, clusters, routes, gateways,
//! policies and the L4 kernel table. Output is deterministic: the same
//! resources in any order give the same snapshot, except where Istio itself
//! depends on order (VirtualServices for one host, DestinationRules for one
//! host), where resources are ordered by `namespace/name`.
mod clusters;
mod delegate;
mod deny;
mod external;
mod gateways;
mod incremental;
mod intern;
mod l4;
mod par;
mod policy;
mod routes;
mod services;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::api::destination_rule::DestinationRule;
use crate::api::gateway::Gateway;
use crate::api::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::api::service_entry::{ServiceEntry, Sidecar, WorkloadEntry};
use crate::api::virtual_service::VirtualService;
use crate::api::{Deployment, EndpointSlice, Endpoints, Object, Pod, Resource, Service};
use crate::diag::Diagnostic;
use crate::snapshot::{MeshSnapshot, Workload};

pub use incremental::{copy_changes, Applied, Incremental, NotIncremental};
pub(crate) use services::pod_ips;

/// Resources by kind, each sorted by `namespace/name`.
pub(crate) struct Index<'a> {
    pub services: Vec<&'a Service>,
    pub pods: Vec<&'a Pod>,
    pub pods_by_name: BTreeMap<(String, String), &'a Pod>,
    pub pods_by_ip: BTreeMap<IpAddr, &'a Pod>,
    /// (namespace, name) → Deployment.
    pub deployments: BTreeMap<(String, String), &'a Deployment>,
    pub slices_by_service: BTreeMap<(String, String), Vec<&'a EndpointSlice>>,
    pub endpoints_by_name: BTreeMap<(String, String), &'a Endpoints>,
    pub service_entries: Vec<(&'a Resource, &'a ServiceEntry)>,
    pub workload_entries: Vec<(&'a Resource, &'a WorkloadEntry)>,
    pub virtual_services: Vec<(&'a Resource, &'a VirtualService)>,
    pub destination_rules: Vec<(&'a Resource, &'a DestinationRule)>,
    pub gateways: Vec<(&'a Resource, &'a Gateway)>,
    pub sidecars: Vec<(&'a Resource, &'a Sidecar)>,
    pub peer_authn: Vec<(&'a Resource, &'a PeerAuthentication)>,
    pub request_authn: Vec<(&'a Resource, &'a RequestAuthentication)>,
    pub authz: Vec<(&'a Resource, &'a AuthorizationPolicy)>,
    pub workloads: BTreeMap<IpAddr, Workload>,
    /// Resolved exact host → indexes into `virtual_services` / `destination_rules`;
    /// wildcard hosts are listed separately (few in practice).
    pub vs_by_host: HostIndex,
    pub dr_by_host: HostIndex,
    /// (namespace, name) → index into `virtual_services` (delegates).
    pub vs_by_name: BTreeMap<(String, String), usize>,
    /// The MeshConfig (Istio's defaults when none is given).
    pub mesh: crate::mesh::MeshConfig,
    /// `namespace/name` → TLS Secret (for `credentialName`).
    pub secrets: BTreeMap<String, std::sync::Arc<crate::api::secret::TlsSecret>>,
}

/// Resources by the hosts they name: exact hosts in a map, wildcard hosts
/// (`*`, `*.example.com`) in a list scanned per lookup.
#[derive(Default)]
pub(crate) struct HostIndex {
    pub exact: BTreeMap<String, Vec<usize>>,
    pub wildcard: Vec<(String, usize)>,
}

impl HostIndex {
    fn add(&mut self, host: String, i: usize) {
        if host.starts_with('*') {
            self.wildcard.push((host, i));
        } else {
            self.exact.entry(host).or_default().push(i);
        }
    }

    /// (pattern, index) pairs whose host matches `host`: exact first.
    pub fn lookup<'s>(&'s self, host: &'s str) -> impl Iterator<Item = (&'s str, usize)> + 's {
        let exact = self
            .exact
            .get(host)
            .into_iter()
            .flatten()
            .map(move |i| (host, *i));
        let wild = self
            .wildcard
            .iter()
            .filter(move |(p, _)| crate::hosts::matches(p, host))
            .map(|(p, i)| (p.as_str(), *i));
        exact.chain(wild)
    }
}

impl<'a> Index<'a> {
    /// Indexes `resources` (all assumed valid).
    pub(crate) fn new(resources: &[&'a Resource]) -> Self {
        let mut sorted: Vec<&Resource> = resources.to_vec();
        sorted.sort_by(|a, b| {
            (a.kind(), a.namespace(), a.name()).cmp(&(b.kind(), b.namespace(), b.name()))
        });
        let mut idx = Index {
            services: vec![],
            pods: vec![],
            pods_by_name: BTreeMap::new(),
            pods_by_ip: BTreeMap::new(),
            deployments: BTreeMap::new(),
            slices_by_service: BTreeMap::new(),
            endpoints_by_name: BTreeMap::new(),
            service_entries: vec![],
            workload_entries: vec![],
            virtual_services: vec![],
            destination_rules: vec![],
            gateways: vec![],
            sidecars: vec![],
            peer_authn: vec![],
            request_authn: vec![],
            authz: vec![],
            workloads: BTreeMap::new(),
            vs_by_host: HostIndex::default(),
            dr_by_host: HostIndex::default(),
            vs_by_name: BTreeMap::new(),
            mesh: crate::mesh::MeshConfig::default(),
            secrets: BTreeMap::new(),
        };
        for r in sorted {
            let ns = r.namespace().to_string();
            match &r.object {
                Object::Service(s) => idx.services.push(s),
                Object::Pod(p) => {
                    idx.pods.push(p);
                    idx.pods_by_name.insert((ns, r.name().to_string()), p);
                    for ip in services::pod_ips(p) {
                        idx.pods_by_ip.insert(ip, p);
                    }
                }
                Object::Deployment(d) => {
                    idx.deployments.insert((ns, r.name().to_string()), d);
                }
                Object::EndpointSlice(s) => {
                    let svc = s.service_name().unwrap_or("").to_string();
                    idx.slices_by_service.entry((ns, svc)).or_default().push(s);
                }
                Object::Endpoints(e) => {
                    idx.endpoints_by_name.insert((ns, r.name().to_string()), e);
                }
                Object::ServiceEntry(o) => idx.service_entries.push((r, &o.spec)),
                Object::WorkloadEntry(o) => idx.workload_entries.push((r, &o.spec)),
                Object::VirtualService(o) => idx.virtual_services.push((r, &o.spec)),
                Object::DestinationRule(o) => idx.destination_rules.push((r, &o.spec)),
                Object::Gateway(o) => idx.gateways.push((r, &o.spec)),
                Object::Sidecar(o) => idx.sidecars.push((r, &o.spec)),
                Object::PeerAuthentication(o) => idx.peer_authn.push((r, &o.spec)),
                Object::RequestAuthentication(o) => idx.request_authn.push((r, &o.spec)),
                Object::AuthorizationPolicy(o) => idx.authz.push((r, &o.spec)),
                // Sorted by name: a `mesh.yaml` ("mesh") wins over the
                // `istio` ConfigMap.
                Object::MeshConfig(o) => idx.mesh = o.mesh.clone(),
                Object::Secret(o) => {
                    idx.secrets.insert(
                        format!("{ns}/{}", r.name()),
                        std::sync::Arc::new((**o).clone()),
                    );
                }
                Object::Namespace(_) | Object::ServiceAccount(_) => {}
            }
        }
        idx.workloads = services::workloads(&idx);
        for (i, (r, v)) in idx.virtual_services.iter().enumerate() {
            idx.vs_by_name
                .insert((r.namespace().to_string(), r.name().to_string()), i);
            let mut hs: Vec<String> = v
                .hosts
                .iter()
                .map(|h| crate::hosts::resolve(h, r.namespace()))
                .collect();
            hs.sort();
            hs.dedup();
            for h in hs {
                idx.vs_by_host.add(h, i);
            }
        }
        for (i, (r, d)) in idx.destination_rules.iter().enumerate() {
            idx.dr_by_host
                .add(crate::hosts::resolve(&d.host, r.namespace()), i);
        }
        idx
    }
}

/// Sidecar resources → egress scopes.
fn sidecars(idx: &Index<'_>) -> BTreeMap<String, crate::snapshot::SidecarScope> {
    use crate::snapshot::{EgressListener, SidecarScope};
    idx.sidecars
        .iter()
        .map(|(r, s)| {
            let ns = r.namespace().to_string();
            let name = format!("{ns}/{}", r.name());
            let egress = s
                .egress
                .iter()
                .map(|e| EgressListener {
                    port: e.port.as_ref().map(|p| p.number as u16),
                    hosts: e
                        .hosts
                        .iter()
                        .filter_map(|h| {
                            let (hns, host) = h.split_once('/')?;
                            let hns = if hns == "." {
                                ns.clone()
                            } else {
                                hns.to_string()
                            };
                            Some((hns, host.to_string()))
                        })
                        .collect(),
                })
                .collect();
            let scope = SidecarScope {
                name: name.clone(),
                namespace: ns,
                match_labels: s.workload_selector.as_ref().map(|w| w.match_labels.clone()),
                egress,
            };
            (name, scope)
        })
        .collect()
}

/// Keeps the last definition of each `Kind/namespace/name`, as
/// `kubectl apply -f` of the same files would; earlier ones are reported
/// (Info) and dropped. Order of the survivors is preserved.
pub fn dedupe(resources: &[Resource]) -> (Vec<&Resource>, Vec<Diagnostic>) {
    // Hashed: 10^5 keys of similar strings compare slowly in a BTreeMap.
    // One pass marks the definitions a later one replaces, so the key
    // strings are read once per resource.
    let mut last: HashMap<(&str, &str, &str), usize> = HashMap::with_capacity(resources.len());
    let mut replaced = vec![false; resources.len()];
    for (i, r) in resources.iter().enumerate() {
        if let Some(prev) = last.insert((r.kind(), r.namespace(), r.name()), i) {
            replaced[prev] = true;
        }
    }
    let mut diags = Vec::new();
    let mut out = Vec::with_capacity(last.len());
    for (r, replaced) in resources.iter().zip(replaced) {
        if !replaced {
            out.push(r);
        } else {
            let winner = last[&(r.kind(), r.namespace(), r.name())];
            diags.push(Diagnostic::at(
                crate::diag::Level::Info,
                r,
                "",
                format!(
                    "{} is defined again at {}; the later definition is used",
                    r.key(),
                    resources[winner].origin
                ),
            ));
        }
    }
    (out, diags)
}

/// Validation diagnostics of each resource, in order. Resources validate
/// independently, so large inputs are spread over the cores.
fn validate_all(resources: &[&Resource]) -> Vec<Vec<Diagnostic>> {
    par::map(resources, |r| crate::validate::validate_resource(r))
}

/// Validates and compiles `resources` into a snapshot. Returns the
/// validation errors of the resources left out (and compile-time notes).
///
/// ```
/// let yaml = r#"
/// apiVersion: v1
/// kind: Service
/// metadata: {name: reviews, namespace: default}
/// spec:
///   clusterIP: 10.96.0.10
///   selector: {app: reviews}
///   ports: [{name: http, port: 9080}]
/// "#;
/// let loaded = strait_config::load::load_str(yaml, "inline");
/// let (snap, diags) = strait_config::compile(&loaded.resources);
/// assert!(diags.is_empty());
/// let routes = snap.routes_for("reviews.default.svc.cluster.local", 9080).unwrap();
/// assert_eq!(routes.http[0].route[0].cluster, "outbound|9080||reviews.default.svc.cluster.local");
/// ```
pub fn compile(resources: &[Resource]) -> (MeshSnapshot, Vec<Diagnostic>) {
    compile_with(resources, &CompileOptions::default())
}

/// What the data plane that will serve the snapshot can enforce, where
/// that changes the compiled result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// The daemon has workload identities (a CA) and enforces
    /// PeerAuthentication in each pod's network namespace (`strait run`
    /// with a CA; its in-pod capture is on unless `--no-inbound-capture`):
    /// a `STRICT`
    /// PeerAuthentication no longer makes its workloads unreachable
    /// (fail closed) — the in-pod `sk_lookup` program refuses plain text
    /// instead. Without it (`strait config compile`, a daemon without a
    /// CA) STRICT fails closed.
    pub peer_authn_enforced: bool,
}

/// [`compile`] with `opts`.
pub fn compile_with(
    resources: &[Resource],
    opts: &CompileOptions,
) -> (MeshSnapshot, Vec<Diagnostic>) {
    let (snap, diags, _) = compile_keeping(resources, opts, false);
    (snap, diags)
}

/// What [`Incremental`] keeps from a full compile: each host's endpoints
/// before they are bound to ports, the workloads from Pods and
/// WorkloadEntries before endpoints add to them, and whether any resource
/// was left out (invalid or defined twice).
pub(crate) struct Kept {
    pub raw: BTreeMap<String, Vec<services::RawEndpoint>>,
    pub base_workloads: BTreeMap<IpAddr, Workload>,
    pub left_out: bool,
}

/// [`compile_with`], keeping what [`Incremental`] needs when `keep`.
pub(crate) fn compile_keeping(
    resources: &[Resource],
    opts: &CompileOptions,
    keep: bool,
) -> (MeshSnapshot, Vec<Diagnostic>, Option<Kept>) {
    let (latest, mut diags) = dedupe(resources);
    let mut left_out = latest.len() != resources.len();
    let mut valid = Vec::with_capacity(latest.len());
    for (r, errs) in latest.iter().zip(validate_all(&latest)) {
        if errs.iter().any(Diagnostic::is_error) {
            diags.extend(errs);
            left_out = true;
        } else {
            valid.push(*r);
        }
    }
    let mut idx = Index::new(&valid);
    let mut snap = MeshSnapshot::default();
    let mut raw = BTreeMap::new();
    let mut strings = intern::Interner::default();
    services::kube_services(&idx, &mut snap.services, &mut raw);
    services::service_entries(&idx, &mut snap.services, &mut raw, &mut strings);
    snap.clusters = clusters::build(&idx, &snap.services, &raw);
    let kept = keep.then(|| Kept {
        raw: raw.clone(),
        base_workloads: idx.workloads.clone(),
        left_out,
    });
    // Pod workloads are not needed in the index any more.
    snap.workloads = std::mem::take(&mut idx.workloads);
    // Endpoint-derived workloads (Endpoints without Pod objects) are meshed
    // pods too; the service membership of every workload is recorded. The
    // raw endpoints are used up here (their names and labels move).
    for (host, eps) in raw {
        let from_kube = snap.services.get(&host).map(|s| s.source)
            == Some(crate::snapshot::ServiceSource::Kubernetes);
        for e in eps {
            use std::collections::btree_map::Entry;
            let w = match snap.workloads.entry(e.ip) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) if from_kube => v.insert(e.into_workload()),
                Entry::Vacant(_) => continue,
            };
            if !w.services.contains(&host) {
                w.services.push(host.clone());
                w.services.sort();
            }
        }
    }
    for s in snap.services.values() {
        for vip in s.vips() {
            snap.vips.entry(vip).or_default().push(s.host.clone());
        }
    }
    snap.routes = routes::mesh_routes(&idx, &snap.services, &mut diags);
    snap.gateways = gateways::build(&idx, &snap.services, &mut diags);
    snap.policies = policy::build(&idx);
    // Security resources Strait cannot enforce: their workloads get no
    // traffic (before the kernel table is built from the clusters).
    deny::fail_closed(&valid, &idx.mesh, opts, &mut snap);
    snap.inbound = inbound(&snap, &idx.mesh.root_namespace);
    snap.l4 = l4::build(&idx, &snap);
    snap.external = external::build(&idx, &snap);
    snap.sidecars = sidecars(&idx);
    snap.mesh = idx.mesh.clone();
    snap.credentials = std::mem::take(&mut idx.secrets);
    (snap, diags, kept)
}

/// The per-workload inbound modes ([`MeshSnapshot::inbound`]).
fn inbound(
    snap: &MeshSnapshot,
    root: &str,
) -> BTreeMap<std::net::IpAddr, crate::snapshot::InboundWorkload> {
    let pol = &snap.policies;
    let mut out = BTreeMap::new();
    if pol.peer_authentication.is_empty()
        && pol.authorization.is_empty()
        && pol.request_authentication.is_empty()
    {
        return out;
    }
    for (ip, w) in &snap.workloads {
        let mtls = pol.peer_mtls(root, &w.namespace, &w.labels);
        let authz = pol.authz_for(root, &w.namespace, &w.labels, &w.services);
        let authn = !pol
            .request_authn_for(root, &w.namespace, &w.labels, &w.services)
            .is_empty();
        let entry = crate::snapshot::InboundWorkload {
            mtls,
            policy: authn || !authz.is_empty(),
            l7: authn || authz.iter().any(|p| p.needs_l7),
        };
        if entry != crate::snapshot::InboundWorkload::default() {
            out.insert(*ip, entry);
        }
    }
    out
}
