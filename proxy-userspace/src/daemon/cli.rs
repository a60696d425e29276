//! Flags of `strait run` and `strait cleanup`.
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// `strait run`: serve the node until SIGTERM/SIGINT.
#[derive(Args, Debug, Clone)]
pub struct RunCmd {
    /// Directory of Istio and Kubernetes YAML; hot-reloaded.
    #[arg(long, short = 'c', value_name = "DIR")]
    pub config: PathBuf,
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
    /// Longest time a client may take to send a request head, from its
    /// first byte, milliseconds (Envoy's `request_headers_timeout`); a
    /// slower client gets 408 and is disconnected. 0: no limit (also for
    /// the other timeouts below).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub request_headers_timeout_ms: u64,
    /// Longest wait for more of a request body being read before routing,
    /// milliseconds (Envoy's `stream_idle_timeout`, 5 min).
    #[arg(long, value_name = "MS", default_value_t = 300_000)]
    pub stream_idle_timeout_ms: u64,
    /// A client connection with no request for this long is closed,
    /// milliseconds (Envoy's HTTP `idle_timeout`, 1 h).
    #[arg(long, value_name = "MS", default_value_t = 3_600_000)]
    pub idle_timeout_ms: u64,
    /// Most client connections served at once; more get Envoy's overload
    /// reply (503) or are closed. 0: no cap.
    #[arg(long, value_name = "N", default_value_t = 32_768)]
    pub max_connections: usize,
}

impl RunCmd {
    /// The daemon settings, with defaults filled in.
    pub fn into_args(self) -> super::RunArgs {
        super::RunArgs {
            config: self.config,
            node: self.node.unwrap_or_else(hostname),
            pods_cgroup: self.pods_cgroup,
            bpffs: self.bpffs,
            admin: self.admin,
            outbound: self.outbound,
            drain: Duration::from_millis(self.drain_ms),
            access_log: !self.no_access_log,
            proxy: crate::proxy::ProxySettings {
                request_headers_timeout: ms_or_off(self.request_headers_timeout_ms),
                stream_idle_timeout: ms_or_off(self.stream_idle_timeout_ms),
                idle_timeout: ms_or_off(self.idle_timeout_ms),
                max_connections: if self.max_connections == 0 {
                    usize::MAX
                } else {
                    self.max_connections
                },
                ..Default::default()
            },
        }
    }
}

/// `ms` milliseconds; 0 turns the timeout off, as in Envoy (ten years).
fn ms_or_off(ms: u64) -> Duration {
    if ms == 0 {
        Duration::from_secs(10 * 365 * 86_400)
    } else {
        Duration::from_millis(ms)
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
