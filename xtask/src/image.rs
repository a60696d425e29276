//! `cargo xtask image`: the OCI image the DaemonSet runs, built with
//! Debian's `buildah` and no registry: `FROM scratch` with the `strait`
//! binary and the shared libraries `ldd` lists for it (none for the
//! shipped build, `cargo xtask dist`, which links glibc in; glibc,
//! libgcc_s, libm and the dynamic loader for a dynamically linked one). The image is committed as
//! `localhost/strait:<version>`, `strait --version` is run inside it
//! (buildah's chroot isolation: no OCI runtime needed), and it is written
//! as an OCI archive to load into a node's runtime
//! (`ctr -n k8s.io images import`, `podman load`).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::cmd::{output, root, sh, step};

/// The image name the manifests in deploy/ use.
pub const IMAGE: &str = "localhost/strait";

fn buildah() -> Command {
    let mut c = Command::new("buildah");
    // vfs works in any container or VM (no overlay mounts needed); a
    // STORAGE_DRIVER from the environment wins.
    if std::env::var_os("STORAGE_DRIVER").is_none() {
        c.args(["--storage-driver", "vfs"]);
    }
    c
}

/// The libraries the dynamic loader needs for `bin` (`ldd` output), with
/// the loader itself; symlinks are kept as the paths the loader opens.
fn libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let run = Command::new("ldd")
        .arg(bin)
        .output()
        .context("cannot start ldd")?;
    let out = String::from_utf8_lossy(&run.stdout);
    // A static executable: glibc's ldd prints "statically linked" (a
    // static PIE) or "not a dynamic executable" (exit 1).
    let all = format!("{out}{}", String::from_utf8_lossy(&run.stderr));
    if all.contains("statically linked") || all.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !run.status.success() {
        bail!("ldd {} failed with {}", bin.display(), run.status);
    }
    let mut libs = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        if line.contains("statically linked") {
            return Ok(Vec::new());
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Builds the image from `binary` (default: `cargo xtask dist`'s build for
/// the `dist` profile, else `cargo build --profile <profile> -p strait`)
/// and writes `<root>/target/strait-image.tar`.
pub fn run(profile: &str, binary: Option<PathBuf>) -> anyhow::Result<()> {
    crate::setup::debian_packages(&["buildah"])?;
    let bin = match binary {
        Some(b) => b,
        None if profile == "dist" => crate::dist::build("the image's")?,
        None => {
            step(&format!("build strait ({profile} profile)"));
            sh(Command::new("cargo").current_dir(root()).args([
                "build",
                "-p",
                "strait",
                "--profile",
                profile,
            ]))?;
            let dir = if profile == "dev" { "debug" } else { profile };
            root().join("target").join(dir).join("strait")
        }
    };
    let version = output(Command::new(&bin).arg("--version"))
        .with_context(|| format!("{} --version failed", bin.display()))?;
    let tag = version
        .split_whitespace()
        .nth(1)
        .context("strait --version printed no version")?
        .to_string();
    let image = format!("{IMAGE}:{tag}");
    step(&format!("image {image} from {}", bin.display()));
    let ctr = output(buildah().args(["from", "scratch"]))
        .context("buildah from scratch failed")?
        .trim()
        .to_string();
    let result = (|| -> anyhow::Result<()> {
        sh(buildah()
            .args(["copy", "--chmod", "0755", &ctr])
            .arg(&bin)
            .arg("/usr/local/bin/strait"))?;
        for lib in libraries(&bin)? {
            let real = std::fs::canonicalize(&lib)?;
            sh(buildah().args(["copy", &ctr]).arg(&real).arg(&lib))?;
        }
        sh(buildah().args([
            "config",
            "--entrypoint",
            r#"["/usr/local/bin/strait"]"#,
            "--label",
            &format!("org.opencontainers.image.version={tag}"),
            "--label",
            "org.opencontainers.image.title=strait",
            &ctr,
        ]))?;
        step("strait --version inside the image");
        let inside = output(buildah().args([
            "run",
            "--isolation",
            "chroot",
            &ctr,
            "--",
            "/usr/local/bin/strait",
            "--version",
        ]))
        .context("running strait --version in the image failed")?;
        if inside.trim() != version.trim() {
            bail!("the image's strait says {inside:?}, expected {version:?}");
        }
        eprintln!("    {}", inside.trim());
        sh(buildah().args(["commit", "--format", "oci", &ctr, &image]))?;
        let archive = root().join("target").join("strait-image.tar");
        let _ = std::fs::remove_file(&archive);
        sh(buildah()
            .args(["push", &image])
            .arg(format!("oci-archive:{}:{image}", archive.display())))?;
        step(&format!("wrote {} ({image})", archive.display()));
        Ok(())
    })();
    let _ = output(buildah().args(["rm", &ctr]));
    result
}
