//! The bookinfo demo (`cargo xtask demo`) and the harness the end-to-end
//! tests share with it: a simulated node running bookinfo under
//! `strait run` ([`mesh::Mesh`]) and Istio's traffic-management steps with
//! their expected outcomes ([`steps`]).
pub mod mesh;
pub mod steps;

use std::path::Path;

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
