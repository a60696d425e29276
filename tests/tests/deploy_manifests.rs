//! `deploy/`: every overlay renders with `kubectl kustomize`, and what it
//! renders parses as Kubernetes objects (k8s-openapi's types) with the
//! ports, probes, privileges and RBAC the daemon and the CA need — and no
//! more RBAC than the Kubernetes source reads.
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `kubectl kustomize deploy/<overlay>` as JSON values; `None` (after
/// printing why) when kubectl is missing and skips are allowed.
fn render(test: &str, overlay: &str) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy().join(overlay))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            let why = format!("kubectl not runnable ({e}); cargo xtask setup installs it");
            if std::env::var_os(strait_tests::privileged::NO_SKIP).is_some() {
                panic!("{test}: {why}");
            }
            eprintln!("SKIP {test}: {why}");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    Some(docs)
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let v = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"));
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{kind}/{name}: {e}"))
}

fn all<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d.clone()).unwrap_or_else(|e| panic!("{kind}: {e}")))
        .collect()
}

fn arg<'c>(c: &'c Container, flag: &str) -> Option<&'c str> {
    c.args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
}

fn check_daemonset(docs: &[Value]) -> DaemonSet {
    let ds: DaemonSet = one(docs, "DaemonSet", "strait");
    assert_eq!(ds.metadata.namespace.as_deref(), Some("strait-system"));
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("strait"));
    let c = &pod.containers[0];
    assert!(c.image.as_deref().unwrap().contains("strait"));
    assert_eq!(c.args.as_ref().unwrap()[..2], ["run", "--in-cluster"]);
    // Ports: the outbound listener and the admin API.
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert!(
        ports.contains(&15001) && ports.contains(&15000),
        "{ports:?}"
    );
    assert_eq!(arg(c, "--outbound"), Some("$(HOST_IP):15001"));
    // Dual-stack nodes get the IPv6 listener; IPv4-only ones none.
    assert_eq!(arg(c, "--outbound6"), Some("auto"));
    assert_eq!(arg(c, "--admin"), Some("127.0.0.1:15000"));
    // Readiness on /ready of the admin API.
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/ready"));
    assert_eq!(ready.host.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        ready.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15000)
    );
    // The grace period covers the drain.
    let drain_ms: i64 = arg(c, "--drain-ms").unwrap().parse().unwrap();
    assert!(pod.termination_grace_period_seconds.unwrap() * 1000 >= drain_ms + 5000);
    // Capabilities, not privileged.
    let sc = c.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let add = caps.add.clone().unwrap();
    for cap in ["BPF", "NET_ADMIN", "SYS_ADMIN", "SYS_NICE"] {
        assert!(add.iter().any(|a| a == cap), "{cap} missing: {add:?}");
    }
    // bpffs and the host's cgroup tree, where --pods-cgroup points.
    let host_paths: Vec<String> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    assert!(host_paths.contains(&"/sys/fs/bpf".into()), "{host_paths:?}");
    assert!(
        host_paths.contains(&"/sys/fs/cgroup".into()),
        "{host_paths:?}"
    );
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/sys/fs/bpf"));
    assert!(arg(c, "--pods-cgroup")
        .unwrap()
        .starts_with("/host/sys/fs/cgroup/kubepods"));
    ds
}

/// The daemon's ClusterRole: get/list/watch of exactly what the Kubernetes
/// source watches, and one write: Events (create, patch) to report invalid
/// resources.
fn check_rbac(docs: &[Value]) {
    let role: ClusterRole = one(docs, "ClusterRole", "strait");
    let mut rules = role.rules.unwrap();
    let events = rules
        .iter()
        .position(|r| r.api_groups.as_deref() == Some(&["events.k8s.io".to_string()][..]))
        .expect("a rule for Events");
    let ev = rules.remove(events);
    assert_eq!(ev.resources.as_deref(), Some(&["events".to_string()][..]));
    assert_eq!(ev.verbs, ["create", "patch"]);
    for r in &rules {
        assert_eq!(
            r.verbs,
            ["get", "list", "watch"],
            "the daemon only reads: {r:?}"
        );
        assert!(!r.resources.iter().flatten().any(|x| x == "*"));
    }
    let granted = |group: &str, plural: &str| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == plural)
        })
    };
    for k in strait::sources::kube::KINDS {
        assert!(
            granted(k.group, k.plural),
            "{}/{} not readable",
            k.group,
            k.plural
        );
    }
    let granted_count: usize = rules
        .iter()
        .map(|r| r.resources.as_ref().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        granted_count,
        strait::sources::kube::KINDS.len(),
        "more than the source reads"
    );
}

#[test]
fn the_default_overlay_renders_crds_rbac_and_a_daemonset_with_ports_probes_and_capabilities() {
    let Some(docs) = render("deploy_default", "overlays/default") else {
        return;
    };
    let crds: Vec<CustomResourceDefinition> = all(&docs, "CustomResourceDefinition");
    let names: Vec<&str> = crds
        .iter()
        .map(|c| c.metadata.name.as_deref().unwrap())
        .collect();
    for n in [
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "authorizationpolicies.security.istio.io",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    check_daemonset(&docs);
    check_rbac(&docs);
    let ns: Value = one(&docs, "Namespace", "strait-system");
    assert_eq!(ns["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
    assert!(all::<Value>(&docs, "Deployment").is_empty());
}

/// `strait run`'s own flag parser.
#[derive(clap::Parser)]
struct Strait {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per test
enum Cmd {
    Run(strait::daemon::cli::RunCmd),
    #[command(subcommand)]
    Ca(CaCmd),
}

/// `strait ca serve`'s own flag parser.
#[derive(clap::Subcommand)]
enum CaCmd {
    Serve(Box<strait::daemon::cli::CaServeCmd>),
}

#[test]
fn the_daemonsets_arguments_are_accepted_by_strait_run() {
    let Some(docs) = render("deploy_args", "overlays/default") else {
        return;
    };
    let ds = check_daemonset(&docs);
    let c = &ds.spec.unwrap().template.spec.unwrap().containers[0];
    // The kubelet expands $(VAR) from the container's env.
    let args = c.args.clone().unwrap().into_iter().map(|a| {
        a.replace("$(NODE_NAME)", "node-a")
            .replace("$(HOST_IP)", "10.0.0.1")
    });
    let parsed =
        <Strait as clap::Parser>::try_parse_from(std::iter::once("strait".to_string()).chain(args))
            .unwrap_or_else(|e| panic!("strait rejects the DaemonSet's args: {e}"));
    let Cmd::Run(run) = parsed.cmd else {
        panic!("not strait run")
    };
    let run = run.into_args();
    assert_eq!(run.node, "node-a");
    assert!(
        run.kube.as_ref().is_some_and(|k| k.kubeconfig.is_none()),
        "in-cluster"
    );
    assert_eq!(run.outbound.to_string(), "10.0.0.1:15001");
    // `auto`: port 15001 on one of this machine's IPv6 addresses, or none.
    if let Some(a) = run.outbound6 {
        assert_eq!(a.port(), 15001);
        assert!(!a.ip().is_loopback() && !a.ip().is_unicast_link_local());
    }
    assert_eq!(run.drain.as_millis(), 5000);
}

#[test]
fn the_cgroupfs_overlay_points_at_the_kubepods_cgroup() {
    let Some(docs) = render("deploy_cgroupfs", "overlays/cgroupfs") else {
        return;
    };
    let ds = check_daemonset(&docs);
    let c = &ds.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        arg(c, "--pods-cgroup"),
        Some("/host/sys/fs/cgroup/kubepods")
    );
}

#[test]
fn the_mtls_overlay_adds_the_ca_with_tokenreview_rbac_and_the_daemons_ca_flags() {
    let Some(docs) = render("deploy_mtls", "overlays/mtls") else {
        return;
    };
    let ds = check_daemonset(&docs);
    check_rbac(&docs);
    let c = &ds
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(
        arg(c, "--ca-address"),
        Some("https://strait-ca.strait-system.svc:15012")
    );
    let ca: Deployment = one(&docs, "Deployment", "strait-ca");
    assert_eq!(ca.metadata.namespace.as_deref(), Some("strait-system"));
    let pod = ca.spec.unwrap().template.spec.unwrap();
    let cc = &pod.containers[0];
    assert_eq!(cc.args.as_ref().unwrap()[..2], ["ca", "serve"]);
    assert_eq!(arg(cc, "--listen"), Some("0.0.0.0:15012"));
    // What `strait ca serve` itself makes of the args: Kubernetes auth
    // in-cluster (TokenReview), Istio's audience, the DaemonSet's account
    // as the only node account, monitoring reachable by the kubelet.
    let parsed = <Strait as clap::Parser>::try_parse_from(
        std::iter::once("strait".to_string()).chain(cc.args.clone().unwrap()),
    )
    .unwrap_or_else(|e| panic!("strait ca serve rejects the CA Deployment's args: {e}"));
    let Cmd::Ca(CaCmd::Serve(serve)) = parsed.cmd else {
        panic!("not strait ca serve")
    };
    let serve = (*serve).into_args().unwrap();
    match &serve.auth {
        strait::daemon::ca::CaAuthArgs::Kube {
            kubeconfig,
            audiences,
            trusted_node_accounts,
        } => {
            assert!(kubeconfig.is_none(), "in-cluster");
            assert_eq!(audiences, &["istio-ca"]);
            let ds_account = ("strait-system".to_string(), ds_pod_service_account(&docs));
            assert_eq!(trusted_node_accounts, &[ds_account]);
        }
        other => panic!("the CA does not use the API server: {other:?}"),
    }
    assert_eq!(serve.monitoring.to_string(), "0.0.0.0:15014");
    // The daemon's token is for the audience the CA reviews.
    let ds_pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let projected = ds_pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.projected.as_ref())
        .expect("a projected service-account token");
    let sat = projected
        .sources
        .iter()
        .flatten()
        .find_map(|s| s.service_account_token.as_ref())
        .unwrap();
    assert_eq!(sat.audience.as_deref(), Some("istio-ca"));
    let ready = cc
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/ready"));
    assert_eq!(
        ready.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15014)
    );
    assert!(cc.image.as_deref().unwrap().starts_with("localhost/strait"));
    assert_eq!(
        pod.volumes.unwrap()[0]
            .secret
            .as_ref()
            .unwrap()
            .secret_name
            .as_deref(),
        Some("cacerts"),
        "root from Istio's cacerts Secret"
    );
    let svc: Service = one(&docs, "Service", "strait-ca");
    let ports: Vec<i32> = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, vec![15012]);
    let role: ClusterRole = one(&docs, "ClusterRole", "strait-ca");
    let rules = role.rules.unwrap();
    assert!(rules.iter().any(|r| r
        .api_groups
        .iter()
        .flatten()
        .any(|g| g == "authentication.k8s.io")
        && r.resources.iter().flatten().any(|x| x == "tokenreviews")
        && r.verbs == ["create"]));
    assert!(rules
        .iter()
        .all(|r| r.verbs.iter().all(|v| v != "*" && v != "delete")));
}

/// The DaemonSet's service account.
fn ds_pod_service_account(docs: &[Value]) -> String {
    let ds: DaemonSet = one(docs, "DaemonSet", "strait");
    ds.spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .service_account_name
        .unwrap()
}

#[test]
fn the_crds_are_istios_current_set() {
    let ours = std::fs::read(deploy().join("crds/crd-all.gen.yaml")).unwrap();
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio/crds/crd-all.gen.yaml");
    let Ok(theirs) = std::fs::read(&shared) else {
        eprintln!(
            "SKIP the_crds_are_istios_current_set: {} not found",
            shared.display()
        );
        return;
    };
    assert!(
        ours == theirs,
        "deploy/crds/crd-all.gen.yaml differs from Istio's set in shared/istio/crds"
    );
}
