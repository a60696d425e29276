//! The node's policy table, built from a snapshot at swap time (never per
//! request): one [`PolicySet`] per distinct combination of policies,
//! shared by the workloads it applies to, and one [`Guard`] per cluster
//! whose endpoints are policy-selected workloads.
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use strait_config::snapshot::policy::policy_applies;
use strait_config::snapshot::{MeshSnapshot, Workload};

use super::eval::{CompiledPolicy, PolicySet};
use super::ext_authz::ExtAuthz;
use super::jwt::Authn;

/// Istio's default `meshConfig.rootNamespace`. Used until the mesh config
/// is part of the snapshot.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Whose policies this daemon enforces.
#[derive(Clone, Debug)]
pub struct Scope {
    /// This node's name (`strait run --node`). `None`: every workload is
    /// treated as local (a single-node proxy, tests, benchmarks).
    pub node: Option<String>,
    /// Istio's root namespace (mesh-wide policies).
    pub root_namespace: String,
}

impl Default for Scope {
    fn default() -> Self {
        Self {
            node: None,
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
        }
    }
}

impl Scope {
    /// Whether Strait on this node is the server side of `w`: the workload
    /// runs here (or its node is unknown, which is enforced here too).
    pub fn is_local(&self, w: &Workload) -> bool {
        match (&self.node, &w.node) {
            (Some(me), Some(n)) => me == n,
            _ => true,
        }
    }
}

/// One policy-protected destination of a cluster.
#[derive(Debug, Clone)]
pub struct GuardEntry {
    /// The workloads' policies.
    pub set: Arc<PolicySet>,
    /// `destination.ip`: the endpoint's address when only one endpoint has
    /// this set, else `None` (conditions on it are then undecidable).
    pub dest_ip: Option<IpAddr>,
    /// `destination.port`: the endpoint (target) port.
    pub dest_port: u16,
}

/// What a request routed to one cluster must pass. Endpoints with
/// different policy sets are all checked (the request must pass each), as
/// the endpoint is picked after the check; endpoints without policies add
/// nothing.
#[derive(Debug, Default)]
pub struct Guard {
    /// Local destinations with policies.
    pub entries: Vec<GuardEntry>,
    /// A policy-selected workload of the cluster runs on another node
    /// (`namespace/name on node N`): Strait does not intercept inbound
    /// traffic there yet, so it cannot protect it, and denies.
    pub remote: Option<String>,
    /// The addresses of those remote policy-selected workloads.
    pub remote_ips: Vec<IpAddr>,
}

/// What `strait x authz check` shows of one workload.
#[derive(Debug, Clone)]
pub struct WorkloadView {
    /// `namespace/name`.
    pub name: String,
    /// Enforced on this node?
    pub local: bool,
    /// AuthorizationPolicies (`namespace/name`, action).
    pub authz: Vec<(String, String)>,
    /// RequestAuthentications.
    pub authn: Vec<String>,
    /// The compiled set.
    pub set: Arc<PolicySet>,
}

/// The node's policies: cluster → guard. Absent (`Option::None` in the
/// proxy's table) when no policy applies to any workload, so requests pay
/// one pointer check.
#[derive(Debug, Default)]
pub struct PolicyTable {
    /// Envoy cluster name → guard.
    pub clusters: HashMap<Arc<str>, Arc<Guard>>,
    /// Workload IP → what applies (for `authz check`).
    pub workloads: BTreeMap<IpAddr, WorkloadView>,
}

impl PolicyTable {
    /// Builds the table for `scope`; `None` when no AuthorizationPolicy or
    /// RequestAuthentication applies to any workload.
    pub fn build(snap: &MeshSnapshot, scope: &Scope) -> Option<PolicyTable> {
        let pol = &snap.policies;
        if pol.authorization.is_empty() && pol.request_authentication.is_empty() {
            return None;
        }
        let compiled: Vec<Arc<CompiledPolicy>> = pol
            .authorization
            .iter()
            .map(|p| Arc::new(CompiledPolicy::new(p)))
            .collect();
        for c in &compiled {
            if let Err(e) = &c.rules {
                tracing::error!(policy = %c.name, "AuthorizationPolicy cannot be enforced, its workloads deny every request: {e}");
            }
        }
        let mut providers: HashMap<String, Result<Arc<ExtAuthz>, String>> = HashMap::new();
        let root = scope.root_namespace.as_str();
        let mut sets: HashMap<(Vec<usize>, Vec<usize>), Arc<PolicySet>> = HashMap::new();
        let mut table = PolicyTable::default();
        for (ip, w) in &snap.workloads {
            let applies =
                |sel, refs| policy_applies(sel, refs, root, &w.namespace, &w.labels, &w.services);
            let az: Vec<usize> = (0..pol.authorization.len())
                .filter(|&i| {
                    applies(
                        &pol.authorization[i].selector,
                        &pol.authorization[i].target_refs,
                    )
                })
                .collect();
            let ra: Vec<usize> = (0..pol.request_authentication.len())
                .filter(|&i| {
                    let r = &pol.request_authentication[i];
                    applies(&r.selector, &r.target_refs)
                })
                .collect();
            if az.is_empty() && ra.is_empty() {
                continue;
            }
            let set = sets
                .entry((az.clone(), ra.clone()))
                .or_insert_with(|| {
                    let mut s = PolicySet::default();
                    for &i in &az {
                        s.push(compiled[i].clone());
                    }
                    if !s.custom.is_empty() {
                        let x = custom_provider(&s, snap, &mut providers);
                        if let Err(e) = &x {
                            tracing::error!(workload = %w.name, "CUSTOM AuthorizationPolicy cannot ask its provider, requests it matches are denied: {e}");
                        }
                        s.ext_authz = Some(x);
                    }
                    if !ra.is_empty() {
                        let ras: Vec<_> =
                            ra.iter().map(|&i| &pol.request_authentication[i]).collect();
                        let a = Authn::new(&ras);
                        for p in &a.problems {
                            tracing::warn!("RequestAuthentication: {p}");
                        }
                        s.authn = Some(Arc::new(a));
                    }
                    Arc::new(s)
                })
                .clone();
            table.workloads.insert(
                *ip,
                WorkloadView {
                    name: format!("{}/{}", w.namespace, w.name),
                    local: scope.is_local(w),
                    authz: az
                        .iter()
                        .map(|&i| {
                            let p = &pol.authorization[i];
                            (p.name.clone(), format!("{:?}", p.action).to_uppercase())
                        })
                        .collect(),
                    authn: ra
                        .iter()
                        .map(|&i| pol.request_authentication[i].name.clone())
                        .collect(),
                    set,
                },
            );
        }
        if table.workloads.is_empty() {
            return None;
        }
        // The set each (set, destination port) pair is checked against:
        // only the policies that can match that port.
        let mut per_port: HashMap<(*const PolicySet, u16), Arc<PolicySet>> = HashMap::new();
        for (name, c) in &snap.clusters {
            let mut g = Guard::default();
            for ep in &c.endpoints {
                let Some(view) = table.workloads.get(&ep.addr.ip()) else {
                    continue;
                };
                let set = per_port
                    .entry((Arc::as_ptr(&view.set), ep.addr.port()))
                    .or_insert_with(|| {
                        let s = view
                            .set
                            .for_port(ep.addr.port())
                            .map_or_else(|| view.set.clone(), Arc::new);
                        s.prepare();
                        s
                    })
                    .clone();
                if !view.local {
                    let node = snap.workloads[&ep.addr.ip()]
                        .node
                        .clone()
                        .unwrap_or_default();
                    g.remote
                        .get_or_insert_with(|| format!("{} on node {node}", view.name));
                    if !g.remote_ips.contains(&ep.addr.ip()) {
                        g.remote_ips.push(ep.addr.ip());
                    }
                    continue;
                }
                match g.entries.iter_mut().find(|e| Arc::ptr_eq(&e.set, &set)) {
                    Some(e) => {
                        if e.dest_ip != Some(ep.addr.ip()) {
                            e.dest_ip = None;
                        }
                    }
                    None => g.entries.push(GuardEntry {
                        set,
                        dest_ip: Some(ep.addr.ip()),
                        dest_port: ep.addr.port(),
                    }),
                }
            }
            if !g.entries.is_empty() || g.remote.is_some() {
                table.clusters.insert(name.as_str().into(), Arc::new(g));
            }
        }
        Some(table)
    }

    /// The guard of a cluster, if its endpoints have policies.
    pub fn guard(&self, cluster: &str) -> Option<&Arc<Guard>> {
        self.clusters.get(cluster)
    }

    /// The guard of a request or connection on Envoy's `PassthroughCluster`
    /// (no Service: the client dialled a workload's address `dst`): the
    /// policies of the workload at `dst` when it runs on this node, or the
    /// workload as remote when it runs on another (denied unless it is
    /// reached over HBONE, as for a cluster). `None`: no policy applies to
    /// `dst`.
    pub fn passthrough_guard(&self, dst: std::net::SocketAddr) -> Option<Guard> {
        let view = self.workloads.get(&dst.ip())?;
        if !view.local {
            return Some(Guard {
                entries: Vec::new(),
                remote: Some(format!("{} on another node", view.name)),
                remote_ips: vec![dst.ip()],
            });
        }
        Some(Guard::local(view.set.clone(), dst))
    }
}

impl Guard {
    /// The guard of one workload on this node reached at `dst`: its policy
    /// set with `destination.ip` and `destination.port` of `dst`.
    pub fn local(set: Arc<PolicySet>, dst: std::net::SocketAddr) -> Guard {
        Guard {
            entries: vec![GuardEntry {
                set,
                dest_ip: Some(dst.ip()),
                dest_port: dst.port(),
            }],
            remote: None,
            remote_ips: Vec::new(),
        }
    }
}

/// The authorizer of a set's CUSTOM policies: Istio allows one provider
/// per workload; none, several, or a name without a usable
/// `extensionProviders` entry is an error (the CUSTOM policies then deny
/// what they match).
fn custom_provider(
    set: &PolicySet,
    snap: &MeshSnapshot,
    providers: &mut HashMap<String, Result<Arc<ExtAuthz>, String>>,
) -> Result<Arc<ExtAuthz>, String> {
    let mut names: Vec<&str> = Vec::new();
    for p in &set.custom {
        let Some(n) = p.provider.as_deref() else {
            return Err(format!("CUSTOM policy {} names no provider", p.name));
        };
        if !names.contains(&n) {
            names.push(n);
        }
    }
    match names.as_slice() {
        [n] => providers
            .entry(n.to_string())
            .or_insert_with(|| ExtAuthz::build(n, snap).map(Arc::new))
            .clone(),
        _ => Err(format!(
            "CUSTOM policies with different providers ({}) select one workload: Istio allows one provider per workload",
            names.join(", ")
        )),
    }
}
