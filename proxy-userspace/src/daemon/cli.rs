//! Flags of `strait run` and `strait cleanup`.
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// `strait run`: serve the node until SIGTERM/SIGINT.
#[derive(Args, Debug, Clone)]
pub struct RunCmd {
    /// Directory of Istio and Kubernetes YAML; hot-reloaded.
    #[arg(long, short = 'c', value_name = "DIR", required_unless_present_any = ["kubeconfig", "in_cluster"], conflicts_with_all = ["kubeconfig", "in_cluster"])]
    pub config: Option<PathBuf>,
    /// Read the configuration from the Kubernetes API server of this
    /// kubeconfig (its current context), watching it.
    #[arg(long, value_name = "PATH", conflicts_with = "in_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Read the configuration from the API server of the cluster this pod
    /// runs in (its service account), watching it.
    #[arg(long)]
    pub in_cluster: bool,
    /// Node name (default: the host name). Kernel maps are pinned under
    /// <bpffs>/strait/<node>/.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// cgroup v2 directory holding the pods' processes (default:
    /// <cgroup2 mount>/strait-<node>/pods, created if missing).
    #[arg(long, value_name = "PATH")]
    pub pods_cgroup: Option<PathBuf>,
    /// bpffs mount point (mounted if missing).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,
    /// Admin API address (/ready, /healthz, /config_dump, /clusters, /stats/prometheus).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// Outbound listener: where the kernel redirects meshed connections
    /// (Istio's port 15001). Pods in their own network namespaces need an
    /// address of the node they can reach.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15001")]
    pub outbound: SocketAddrV4,
    /// Longest wait for in-flight requests at shutdown, milliseconds
    /// (Istio's terminationDrainDuration is 5 s).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub drain_ms: u64,
    /// Do not print access-log lines.
    #[arg(long)]
    pub no_access_log: bool,
}

impl RunCmd {
    /// The daemon settings, with defaults filled in.
    pub fn into_args(self) -> super::RunArgs {
        let kube = (self.kubeconfig.is_some() || self.in_cluster).then(|| super::KubeArgs {
            kubeconfig: self.kubeconfig,
        });
        super::RunArgs {
            config: self.config.unwrap_or_default(),
            kube,
            node: self.node.unwrap_or_else(hostname),
            pods_cgroup: self.pods_cgroup,
            bpffs: self.bpffs,
            admin: self.admin,
            outbound: self.outbound,
            drain: Duration::from_millis(self.drain_ms),
            access_log: !self.no_access_log,
        }
    }
}

/// `strait cleanup`: detach the node's programs, remove its pinned maps and
/// the default pods cgroup `strait run` created (when empty).
#[derive(Args, Debug, Clone)]
pub struct CleanupCmd {
    /// Node name (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// bpffs mount point.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,
}

impl CleanupCmd {
    /// Removes `<bpffs>/strait/<node>/` (pinned links first, so the programs
    /// detach once no process holds them).
    pub fn run(self) -> anyhow::Result<()> {
        let node = self.node.unwrap_or_else(hostname);
        let dir = crate::datapath::DatapathConfig {
            bpffs: self.bpffs,
            ..crate::datapath::DatapathConfig::new(node.clone())
        }
        .pin_dir();
        crate::datapath::remove_pins(&dir)?;
        println!("removed {}", dir.display());
        if let Some(cg) = crate::sys::cgroup2_mount() {
            let node_cg = cg.join(format!("strait-{node}"));
            // rmdir only succeeds on empty cgroups: pods still running stay.
            if std::fs::remove_dir(node_cg.join("pods")).is_ok() {
                let _ = std::fs::remove_dir(&node_cg);
                println!("removed {}", node_cg.display());
            }
        }
        Ok(())
    }
}

/// The host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Installs the `tracing` subscriber on stderr at `level` (`RUST_LOG`
/// overrides it, e.g. `RUST_LOG=strait=debug`).
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
