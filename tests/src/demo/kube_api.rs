//! A real Kubernetes API server for end-to-end tests: etcd (Debian's
//! `etcd-server`) and the kube-apiserver binary `KUBE_APISERVER` names,
//! both on 127.0.0.1 inside a simulated node's network namespace (where
//! the daemon can reach them and nothing else can), with a static admin
//! token, `AlwaysAllow` authorization and no controllers (no kubelet, no
//! controller-manager: Pods and EndpointSlices are created by hand, as the
//! node's config files describe them).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::node::Node;

/// The environment variable naming the kube-apiserver binary.
pub const KUBE_APISERVER: &str = "KUBE_APISERVER";

const ETCD_PORT: u16 = 23790;
const API_PORT: u16 = 16443;
const TOKEN: &str = "strait-e2e-admin-token";

/// Why the API-server tests cannot run here, if they cannot: no
/// `KUBE_APISERVER`, no `etcd` or no `kubectl`.
pub fn unavailable() -> Option<String> {
    let Some(bin) = std::env::var_os(KUBE_APISERVER) else {
        return Some(format!(
            "{KUBE_APISERVER} is not set (name a kube-apiserver binary to run this test; Debian packages none and it cannot be built here without Go)"
        ));
    };
    if !Path::new(&bin).is_file() {
        return Some(format!(
            "{KUBE_APISERVER}={} is not a file",
            Path::new(&bin).display()
        ));
    }
    for tool in ["etcd", "kubectl", "openssl"] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} is not installed (cargo xtask setup installs it)"
            ));
        }
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

/// etcd and kube-apiserver running in a node; killed on drop (the node's
/// cgroup removal kills them too).
pub struct ApiServer {
    children: Vec<Child>,
    dir: PathBuf,
    /// A kubeconfig for the admin token (server `https://127.0.0.1:16443`,
    /// reachable from the node's namespace).
    pub kubeconfig: PathBuf,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl ApiServer {
    /// Starts etcd and `apiserver` in `node` and waits (60 s at most) for
    /// `/readyz`.
    pub fn start(node: &Node, apiserver: &Path) -> anyhow::Result<Self> {
        let dir = node.tmp_dir().join("kube");
        std::fs::create_dir_all(dir.join("certs"))?;
        let sa_key = dir.join("sa.key");
        let ok = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&sa_key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!("openssl genrsa failed");
        }
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{TOKEN},admin,admin,\"system:masters\"\n"),
        )?;
        let log = |name: &str| -> anyhow::Result<(std::fs::File, std::fs::File)> {
            let f = std::fs::File::create(dir.join(format!("{name}.log")))?;
            Ok((f.try_clone()?, f))
        };
        let mut children = Vec::new();
        let (o, e) = log("etcd")?;
        children.push(
            node.command("etcd")?
                .arg("--data-dir")
                .arg(dir.join("etcd"))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{ETCD_PORT}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{ETCD_PORT}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{}", ETCD_PORT + 1),
                ])
                .stdout(o)
                .stderr(e)
                .spawn()
                .context("starting etcd")?,
        );
        let (o, e) = log("kube-apiserver")?;
        let mut server = Self {
            children,
            kubeconfig: dir.join("kubeconfig"),
            dir: dir.clone(),
        };
        server.children.push(
            node.command(apiserver)?
                .args([
                    &format!("--etcd-servers=http://127.0.0.1:{ETCD_PORT}"),
                    "--bind-address=127.0.0.1",
                    &format!("--secure-port={API_PORT}"),
                    "--authorization-mode=AlwaysAllow",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    "--disable-admission-plugins=ServiceAccount",
                ])
                .arg(format!("--cert-dir={}", dir.join("certs").display()))
                .arg(format!(
                    "--token-auth-file={}",
                    dir.join("tokens.csv").display()
                ))
                .arg(format!("--service-account-key-file={}", sa_key.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    sa_key.display()
                ))
                .stdout(o)
                .stderr(e)
                .spawn()
                .context("starting kube-apiserver")?,
        );
        std::fs::write(
            &server.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{API_PORT}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: admin}}\ncurrent-context: e2e\nusers:\n- name: admin\n  user: {{token: {TOKEN}}}\n"
            ),
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(out) = server.kubectl(node, &["get", "--raw", "/readyz"]) {
                if out.trim() == "ok" {
                    return Ok(server);
                }
            }
            for c in &mut server.children {
                if let Some(status) = c.try_wait()? {
                    bail!("{status}: {}", server.logs());
                }
            }
            if Instant::now() > deadline {
                bail!("kube-apiserver not ready after 60 s: {}", server.logs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn logs(&self) -> String {
        ["etcd", "kube-apiserver"]
            .iter()
            .map(|n| {
                let t =
                    std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                format!(
                    "--- {n}:\n{}",
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs kubectl with this server's kubeconfig inside `node`; its
    /// standard output, or an error quoting standard error.
    pub fn kubectl(&self, node: &Node, args: &[&str]) -> anyhow::Result<String> {
        let out = node
            .command("kubectl")?
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply` of the node's config directory, as a cluster would
    /// hold it: Namespaces, ServiceAccounts and Services (with the node's
    /// ClusterIPs), Pods (their `status` written through the status
    /// subresource, as a kubelet does), EndpointSlices (as the
    /// EndpointSlice controller would).
    pub fn apply_node_config(&self, node: &Node, dir: &Path) -> anyhow::Result<()> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        // Services (and their namespaces) first, then pods, then slices.
        files.sort_by_key(|p| {
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (
                !n.starts_with("k8s-services"),
                !n.starts_with("k8s-pods"),
                n,
            )
        });
        for f in &files {
            self.kubectl(node, &["apply", "-f", &f.display().to_string()])?;
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("k8s-pods") {
                self.patch_pod_status(node, f)?;
            }
        }
        Ok(())
    }

    fn patch_pod_status(&self, node: &Node, file: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc)?;
            if v["kind"] != "Pod" {
                continue;
            }
            let patch = serde_json::json!({"status": v["status"]}).to_string();
            self.kubectl(
                node,
                &[
                    "patch",
                    "pod",
                    v["metadata"]["name"].as_str().unwrap_or_default(),
                    "-n",
                    v["metadata"]["namespace"].as_str().unwrap_or("default"),
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch,
                ],
            )?;
        }
        Ok(())
    }
}
