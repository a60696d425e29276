//! `strait x authz check POD -f PATHS [--node NAME]`: which
//! AuthorizationPolicies and RequestAuthentications apply to a workload and
//! how Strait enforces them (like `istioctl x authz check`, read from the
//! configuration files instead of a sidecar's config dump).
use std::path::PathBuf;
use std::process::ExitCode;

use strait::policy::{PolicyTable, Scope};
use strait_config::snapshot::L4Mode;
use strait_config::{compile, load};

/// Prints the check for `pod` (`name`, `name.namespace` or
/// `namespace/name`; namespace `default` when not given). Exit 1 when the
/// pod is not found.
pub fn run(pod: &str, paths: &[PathBuf], node: Option<String>) -> ExitCode {
    let (ns, name) = match (pod.split_once('/'), pod.split_once('.')) {
        (Some((ns, n)), _) => (ns, n),
        (None, Some((n, ns))) => (ns, n),
        (None, None) => ("default", pod),
    };
    let loaded = load::load_paths(paths);
    for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    let (snap, _) = compile(&loaded.resources);
    let Some((ip, w)) = snap
        .workloads
        .iter()
        .find(|(_, w)| w.name == name && w.namespace == ns)
    else {
        eprintln!("strait: error: no workload {ns}/{name} in the configuration");
        return ExitCode::FAILURE;
    };
    let scope = Scope {
        node: node.clone(),
        ..Scope::default()
    };
    super::out(&format!(
        "Checked {ns}/{name} ({ip}, node {}), root namespace {}:",
        w.node.as_deref().unwrap_or("unknown"),
        scope.root_namespace
    ));
    let peer = snap
        .policies
        .peer_mtls(&snap.mesh.root_namespace, ns, &w.labels);
    let ports: Vec<String> = peer
        .ports
        .iter()
        .map(|(p, m)| format!("port {p} {}", mode_name(*m)))
        .collect();
    super::out(&format!(
        "  PeerAuthentication: {}{}{}",
        mode_name(peer.mode),
        if ports.is_empty() { "" } else { "; " },
        ports.join(", ")
    ));
    if peer.any_strict() {
        super::out(
            "           STRICT: plain text refused in the pod's network namespace by `strait run --inbound-capture` \
             (with a CA); without in-pod capture the workload is unreachable (fail closed)",
        );
    }
    let table = PolicyTable::build(&snap, &scope);
    let Some(view) = table.as_ref().and_then(|t| t.workloads.get(ip)) else {
        super::out(
            "  no AuthorizationPolicy or RequestAuthentication applies: every request is allowed",
        );
        return ExitCode::SUCCESS;
    };
    super::out(&format!(
        "  {:<8} {:<40} {}",
        "ACTION", "AuthorizationPolicy", "RULES"
    ));
    for (pname, action) in &view.authz {
        let p = snap
            .policies
            .authorization
            .iter()
            .find(|p| &p.name == pname);
        let rules = p.map_or(0, |p| p.rules.len());
        super::out(&format!("  {action:<8} {pname:<40} {rules}"));
        for why in p.map(|p| p.not_enforced.as_slice()).unwrap_or_default() {
            super::out(&format!("           ! {why}"));
        }
        if let Some(why) = p.and_then(|p| strait_config::analyze::custom_gap(p, &snap)) {
            super::out(&format!("           ! {why}"));
        }
    }
    match &view.set.ext_authz {
        Some(Ok(x)) => super::out(&format!(
            "  CUSTOM   provider {:?}: envoyExtAuthzHttp {}:{}, asked before DENY and ALLOW",
            x.name, x.service, x.port
        )),
        Some(Err(e)) => super::out(&format!("  CUSTOM   ! {e}: matched requests are denied")),
        None => {}
    }
    for ra in &view.authn {
        super::out(&format!("  {:<8} {ra:<40} (RequestAuthentication)", "JWT"));
    }
    if let Some(a) = &view.set.authn {
        for p in &a.problems {
            super::out(&format!("           ! {p}"));
        }
    }
    if view.local {
        super::out("  enforced: by this node's strait on the L7 path (HTTP: per request; TCP: per connection)");
        let set = &view.set;
        let l7 = set.authn.is_some()
            || set
                .custom
                .iter()
                .chain(&set.deny)
                .chain(&set.allow)
                .any(|p| p.needs_l7);
        super::out(if l7 {
            "  over HBONE (mTLS): decided on the workload's node with the client's certificate identity, \
             per HTTP request inside the tunnel on ports whose policies need HTTP facts (non-HTTP there: denied)"
        } else {
            "  over HBONE (mTLS): decided on the workload's node with the client's certificate identity, \
             once per connection at the CONNECT (401 when denied)"
        });
    } else {
        super::out(&format!(
            "  NOT PROTECTED on its own node yet: strait on node {} denies traffic to it (fail closed); \
             other nodes do the same",
            node.as_deref().unwrap_or("?")
        ));
    }
    for host in &w.services {
        for l4 in snap.l4.iter().filter(|s| &s.host == host) {
            let mode = if l4.mode == L4Mode::Redirect {
                "REDIRECT (through the proxy)"
            } else {
                "L4 (kernel only: NOT checked)"
            };
            super::out(&format!("  service {host}:{} -> {mode}", l4.port));
        }
    }
    ExitCode::SUCCESS
}

fn mode_name(m: strait_config::snapshot::MtlsMode) -> &'static str {
    use strait_config::snapshot::MtlsMode;
    match m {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Unset => "UNSET",
    }
}
