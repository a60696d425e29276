//! Tier 3: `strait run` startup errors exit non-zero with one clear line
//! saying what is wrong and what to do.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use strait_tests::demo::mesh;

fn strait() -> PathBuf {
    mesh::sibling("strait").unwrap()
}

/// The error line, asserting a non-zero exit and exactly one error line
/// (`strait: error: ...`, the last thing printed; info logs may precede it).
fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "exited 0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("strait: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line, got:\n{stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(errors[0]),
        "the error is not the last line:\n{stderr}"
    );
    errors[0].to_string()
}

fn config_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strait-startup-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_missing_config_directory_is_named() {
    let out = Command::new(strait())
        .args(["run", "--config", "/nonexistent/strait-config"])
        .output()
        .unwrap();
    let line = one_line_error(&out);
    assert!(
        line.contains("/nonexistent/strait-config") && line.contains("--config"),
        "{line}"
    );
}

#[test]
fn not_root_says_so() {
    let Some(_p) = strait_tests::privileged::require("not_root_says_so") else {
        return;
    };
    let dir = config_dir("nonroot");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(strait())
        .arg("run")
        .arg("--config")
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let line = one_line_error(&out);
    assert!(line.contains("needs root"), "{line}");
}

#[test]
fn a_taken_admin_port_is_named() {
    let Some(_p) = strait_tests::privileged::require("a_taken_admin_port_is_named") else {
        return;
    };
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = config_dir("port");
    let out = Command::new(strait())
        .args([
            "run",
            "--node",
            "startup-port-test",
            "--admin",
            &addr.to_string(),
            "--config",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let line = one_line_error(&out);
    assert!(
        line.contains(&addr.to_string()) && line.contains("--admin"),
        "{line}"
    );
}

#[test]
fn bad_flags_are_rejected_by_the_parser() {
    let out = Command::new(strait())
        .args(["run", "--config", "/tmp", "--outbound", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap exits 2 on bad flags");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--outbound"), "{stderr}");
}
