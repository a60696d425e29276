//! `cargo xtask demo`: bookinfo on a simulated node under `strait run`,
//! walked through Istio's traffic-management tasks with Strait's own sample
//! configs (tests/samples/bookinfo). Prints a table per step, checks it
//! against the expected outcome, cleans up, and exits non-zero if any step
//! misbehaves.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use strait_tests::demo::{self, mesh, Mesh, MeshOptions};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let started = Instant::now();
    let Some(p) = strait_tests::privileged::require("strait-demo") else {
        anyhow::bail!("the demo needs root, BPF and cgroup v2 (see above)");
    };
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo");
    println!("Starting a simulated node with bookinfo (productpage, details, reviews v1/v2/v3, ratings) and `strait run`...");
    let mesh = Mesh::start(
        &p,
        MeshOptions {
            strait: mesh::sibling("strait")?,
            app: mesh::sibling("bookinfo-app")?,
            platform: samples.join("platform.yaml"),
            config: vec![samples.join("destination-rules.yaml")],
            app_timeout_ms: None,
            node_index: 200,
            identity: true,
        },
    )?;
    println!(
        "Ready in {:.1} s. Requests go to productpage's ClusterIP from a client pod.",
        started.elapsed().as_secs_f64()
    );
    let mut ok = true;
    for (i, step) in demo::bookinfo_steps().iter().enumerate() {
        let rows = demo::run_step(&mesh, &samples, step)?;
        print!("{}", demo::table(i + 1, step, &rows));
        ok &= rows.iter().all(|r| r.problem.is_none());
    }
    let metrics = mesh.admin_text("/stats/prometheus")?;
    let requests = metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .count();
    println!("\nistio_requests_total series on the admin API: {requests}");
    // Workload certificates the embedded CA issued (admin /certs).
    let certs: serde_json::Value =
        serde_json::from_str(&mesh.admin_text("/certs")?).unwrap_or_default();
    let certs = certs["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!(
        "Workload certificates from the CA embedded in `strait run --ca-dir` ({}):",
        certs.len()
    );
    for c in &certs {
        println!(
            "  {}  serial {}  valid until {}",
            c["identity"].as_str().unwrap_or("?"),
            c["serial_number"].as_str().unwrap_or("?"),
            c["expiration_time"].as_str().unwrap_or("?")
        );
    }
    if !ok {
        println!(
            "\nSome steps misbehaved; the daemon's last log lines:\n{}",
            mesh.log_tail(30)
        );
    }
    drop(mesh);
    println!(
        "\n{} in {:.1} s; everything the demo created is removed.",
        if ok {
            "All steps behaved as Istio's tasks describe"
        } else {
            "FAILED"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}
