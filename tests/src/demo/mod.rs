//! The bookinfo demo (`cargo xtask demo`) and the harness the end-to-end
//! tests share with it: a simulated node running bookinfo under
//! `strait run` ([`mesh::Mesh`]) and Istio's traffic-management steps with
//! their expected outcomes ([`steps`]).
pub mod kube_api;
pub mod mesh;
pub mod steps;

use std::path::{Path, PathBuf};

pub use mesh::{Mesh, MeshOptions, Sample};
pub use steps::{bookinfo_steps, evaluate, table, Check, Expect, Row, Step};

/// Applies `step` (its file replaces the routing file `routing.yaml`), runs
/// its checks and returns the rows.
pub fn run_step(mesh: &Mesh, samples_dir: &Path, step: &Step) -> anyhow::Result<Vec<Row>> {
    mesh.set_config("routing.yaml", &[&samples_dir.join(step.file)])?;
    let mut rows = Vec::new();
    for check in &step.checks {
        let headers: Vec<(&str, &str)> = check.user.map(|u| ("end-user", u)).into_iter().collect();
        let samples = mesh.productpage(check.n, &headers)?;
        rows.push(evaluate(check, &samples));
    }
    Ok(rows)
}

/// `../shared/istio` beside the repository (Istio's own files, test input).
/// When it is missing: `SKIP` with a reason, or a panic when
/// `STRAIT_NO_SKIP` is set (CI always has it).
pub fn istio_samples(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio");
    if dir.join("bookinfo/platform/bookinfo.yaml").is_file() {
        return Some(dir);
    }
    let reason = format!("Istio's samples are not at {}", dir.display());
    if std::env::var_os(crate::privileged::NO_SKIP).is_some() {
        panic!("{test}: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
    None
}

/// Istio's JWT samples (`../shared/istio/jwt/` beside the repository or
/// beside the worktrees' directory: `jwks.json` and the token files).
/// When they are missing: `SKIP` with a reason, or a panic when
/// `STRAIT_NO_SKIP` is set.
pub fn istio_jwt(test: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for up in ["../../shared/istio/jwt", "../../../shared/istio/jwt"] {
        let d = root.join(up);
        if d.join("jwks.json").is_file() {
            return Some(d);
        }
    }
    let reason = "Istio's JWT samples are not in ../shared/istio/jwt/";
    if std::env::var_os(crate::privileged::NO_SKIP).is_some() {
        panic!("{test}: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
    None
}

/// The file `name` of `dir` (see [`istio_jwt`]) without surrounding white
/// space: a token, or the JWKS. Panics when it cannot be read.
pub fn jwt_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
        .trim()
        .to_string()
}

/// The harness options for a test: this workspace's binaries (the test
/// executable's siblings), the given platform and config files.
pub fn test_options(
    platform: PathBuf,
    config: Vec<PathBuf>,
    node_index: u8,
) -> anyhow::Result<MeshOptions> {
    Ok(MeshOptions {
        strait: mesh::sibling("strait")?,
        app: mesh::sibling("bookinfo-app")?,
        platform,
        config,
        app_timeout_ms: None,
        node_index,
        identity: true,
    })
}

/// Istio's bookinfo networking sample `file` under [`istio_samples`]'s
/// directory `istio`.
pub fn istio_net(istio: &Path, file: &str) -> PathBuf {
    istio.join("bookinfo/networking").join(file)
}

/// Istio's bookinfo (`bookinfo/platform/bookinfo.yaml` under `istio`, see
/// [`istio_samples`]) on node `node_index` under `strait run`, with the
/// networking sample `destination_rule` (e.g. `destination-rule-all.yaml`).
pub fn start_istio_bookinfo(
    p: &crate::privileged::Privileged,
    istio: &Path,
    destination_rule: &str,
    node_index: u8,
) -> anyhow::Result<Mesh> {
    let opts = test_options(
        istio.join("bookinfo/platform/bookinfo.yaml"),
        vec![istio_net(istio, destination_rule)],
        node_index,
    )?;
    Mesh::start(p, opts)
}

/// Sets the mesh's `routing.yaml` to Istio's `virtual-service-all-v1.yaml`
/// followed by the networking samples `extra` (see [`istio_net`]).
/// Panics when the files cannot be written.
pub fn route_istio(mesh: &Mesh, istio: &Path, extra: &[&str]) {
    let files: Vec<PathBuf> = std::iter::once("virtual-service-all-v1.yaml")
        .chain(extra.iter().copied())
        .map(|f| istio_net(istio, f))
        .collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    mesh.set_config("routing.yaml", &refs)
        .expect("write routing.yaml");
}

/// The bookinfo samples of this crate (`tests/samples/bookinfo`).
pub fn bookinfo_samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo")
}

/// Bookinfo (all traffic to v1) plus `ratings-tcp`, a Service in front of
/// ratings with a `tcp-` port and no VirtualService, so the kernel balances
/// it on its own (mode L4); without a CA (with workload identities, a
/// service whose endpoints are meshed pods goes through the proxy for
/// mutual TLS). Returns the mesh and `ratings-tcp`'s cluster IP.
pub fn start_with_kernel_balanced_ratings(
    p: &crate::privileged::Privileged,
    node_index: u8,
) -> anyhow::Result<(Mesh, std::net::Ipv4Addr)> {
    use anyhow::Context;
    let s = bookinfo_samples();
    let mut platform = std::fs::read_to_string(s.join("platform.yaml"))?;
    platform.push_str("\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: ratings-tcp\n  namespace: default\nspec:\n  selector:\n    app: ratings\n  ports:\n  - name: tcp-ratings\n    port: 9080\n");
    let file = std::env::temp_dir().join(format!(
        "strait-e2e-platform-{}-{node_index}.yaml",
        std::process::id()
    ));
    std::fs::write(&file, platform)?;
    let mut opts = test_options(
        file.clone(),
        vec![s.join("destination-rules.yaml"), s.join("all-v1.yaml")],
        node_index,
    )?;
    opts.identity = false;
    let mesh = Mesh::start(p, opts);
    let _ = std::fs::remove_file(&file);
    let mesh = mesh?;
    let vip = mesh
        .node()
        .service("default", "ratings-tcp")
        .and_then(|s| s.cluster_ip)
        .context("ratings-tcp has no cluster IP")?;
    Ok((mesh, vip))
}

/// Runs `checks` against the mesh as it is now; panics with the step name,
/// the table and the daemon's log tail when one fails.
pub fn assert_checks(mesh: &Mesh, name: &str, checks: &[Check]) {
    let mut rows = Vec::new();
    for check in checks {
        let headers: Vec<(&str, &str)> = check.user.map(|u| ("end-user", u)).into_iter().collect();
        let samples = mesh
            .productpage(check.n, &headers)
            .expect("requests to productpage");
        rows.push(evaluate(check, &samples));
    }
    let step = Step {
        title: "",
        file: "",
        checks: checks.to_vec(),
    };
    let text = table(0, &step, &rows);
    assert!(
        rows.iter().all(|r| r.problem.is_none()),
        "{name}:{text}\ndaemon log:\n{}",
        mesh.log_tail(30)
    );
}
