//! Flags of `strait run` and `strait cleanup`.
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use strait_config::load::Limits;

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
    /// Namespace of the `istio` ConfigMap whose `mesh` key is the mesh
    /// config (istiod's own namespace), with --kubeconfig/--in-cluster.
    #[arg(long, value_name = "NS", default_value = "istio-system")]
    pub mesh_config_namespace: String,
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
    /// IPv6 outbound listener, `[ADDR]:PORT`: where the kernel redirects
    /// TCP to IPv6 ClusterIPs that need the proxy (REDIRECT mode) and to
    /// meshed pods' IPv6 addresses. Without it those connections are
    /// refused (fail closed). Pods in their own network namespaces need an
    /// IPv6 address of the node they can reach, not `[::1]`. `auto`: port
    /// 15001 on the node's IPv6 address (see [`Outbound6::Auto`]), none
    /// on a node without one.
    #[arg(long, value_name = "ADDR|auto")]
    pub outbound6: Option<Outbound6>,
    /// Longest wait for in-flight requests at shutdown, milliseconds
    /// (Istio's terminationDrainDuration is 5 s).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub drain_ms: u64,
    /// Do not print access-log lines.
    #[arg(long)]
    pub no_access_log: bool,
    /// Deprecated no-op: in-pod inbound capture is on by default (see
    /// `--no-inbound-capture`). Accepted so existing scripts keep working.
    #[arg(long, hide = true, conflicts_with = "no_inbound_capture")]
    pub inbound_capture: bool,
    /// Turn off the in-pod inbound capture (ztunnel's in-pod model, on by
    /// default): without it PeerAuthentication STRICT is not enforced in
    /// the kernel and connections made straight to pod IPs are NOT checked
    /// against AuthorizationPolicy or RequestAuthentication (the daemon
    /// warns at start and after every reload, naming the pods with
    /// policies).
    #[arg(long)]
    pub no_inbound_capture: bool,
    /// Do not exempt kubelet probes: by default the in-pod capture lets
    /// plain text from the node's own address (its source towards the
    /// pod) to a port a container's liveness/readiness/startup probe names
    /// through to the pod even when the port is STRICT or policy-covered
    /// (as Istio ambient exempts probes). With this flag such probes are
    /// captured like any other client.
    #[arg(long)]
    pub no_probe_exemption: bool,
    /// Attach the XDP program to this node uplink: external VIPs are
    /// balanced over their nodes (IPIP or ip6ip6, direct return) and denied source
    /// prefixes dropped at the driver.
    #[arg(long, value_name = "IFACE")]
    pub xdp_uplink: Option<String>,
    /// Outer source address of tunnelled packets (default: the uplink's
    /// IPv4 address).
    #[arg(long, value_name = "IP", requires = "xdp_uplink")]
    pub xdp_source: Option<std::net::Ipv4Addr>,
    /// Outer source address of ip6ip6-tunnelled packets to IPv6 VIPs
    /// (default: the uplink's first global IPv6 address; none: IPv6 VIPs
    /// are not balanced, with a warning).
    #[arg(long, value_name = "IPV6", requires = "xdp_uplink")]
    pub xdp_source6: Option<std::net::Ipv6Addr>,
    /// MAC of the uplink's IPv4 gateway for IPIP-tunnelled packets
    /// (default: the ARP entry of the uplink's IPv4 default gateway).
    #[arg(long, value_name = "MAC", requires = "xdp_uplink", value_parser = crate::datapath::parse_mac)]
    pub xdp_gateway_mac: Option<[u8; 6]>,
    /// MAC of the uplink's IPv6 gateway for ip6ip6-tunnelled packets
    /// (default: the NDP neighbour entry of the uplink's IPv6 default
    /// gateway; none found: packets to IPv6 VIPs are dropped, with a
    /// warning, never sent to the IPv4 gateway's MAC).
    #[arg(long, value_name = "MAC", requires = "xdp_uplink", value_parser = crate::datapath::parse_mac)]
    pub xdp_gateway_mac6: Option<[u8; 6]>,
    /// When a pinned kernel map (from an earlier strait) has a layout this
    /// build can neither use nor migrate, replace it with an empty one and
    /// refill it from the configuration, instead of refusing to start.
    #[arg(long)]
    pub reset_maps: bool,
    /// Redirect the same-node hops through the proxy (a meshed pod's
    /// connection to this node's proxy, the proxy's delivery into a local
    /// pod) socket to socket with a sockhash and an `sk_msg` program,
    /// skipping the TCP/IP stack between them (IPv4; Linux 5.10+). Off by
    /// default: the receiving socket's queue is not bounded by its receive
    /// buffer on this path (see README).
    #[arg(long)]
    pub sockmap: bool,
    /// Scheduler slice each proxy worker thread asks for, microseconds
    /// (`sched_setattr` `SCHED_OTHER` with `sched_runtime`; Linux ≥ 6.12,
    /// 100 to 100,000). A short slice gives a worker that wakes for a
    /// request an earlier EEVDF deadline than the backend or another
    /// proxy on its CPU, so it runs sooner (tail latency). 0: the kernel's
    /// default slice. When the kernel refuses or ignores the request the
    /// daemon warns and runs with the default.
    #[arg(long, value_name = "US", default_value_t = 0, value_parser = parse_slice_us)]
    pub worker_slice_us: u64,
    /// Scheduling priority of the proxy worker threads (only those).
    /// `auto` (default): `SCHED_FIFO` at priority 1 while a worker uses
    /// under a quarter of its CPU, the fair class while it is busier
    /// (checked every 50 ms), so a woken worker runs ahead of the pods'
    /// tasks at the loads where latency counts and a busy one shares the
    /// CPU; if the kernel refuses (no `CAP_SYS_NICE`, a cgroup without
    /// real-time runtime) the daemon warns and runs at its own priority.
    /// `inherit`: the daemon's own. `nice:N` (-20 to 19), `fifo:P`
    /// (`SCHED_FIFO` at P, 1 to 99): fixed; a refusal of a value given
    /// here, `auto` included, fails the start. See README "Run it on a
    /// node".
    #[arg(long, value_name = "auto|inherit|nice:N|fifo:P")]
    pub worker_priority: Option<crate::serve::sched::WorkerPriority>,
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
    /// Largest config file read, bytes; a larger file is reported and
    /// skipped (its last good version keeps serving).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_file_bytes)]
    pub max_config_file_bytes: u64,
    /// Most YAML documents in one config file.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_documents)]
    pub max_config_documents: usize,
    /// Deepest nesting of YAML mappings/sequences in one document.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_depth)]
    pub max_yaml_depth: usize,
    #[command(flatten)]
    pub identity: IdentityFlags,
}

/// Workload-identity flags of `strait run`.
#[derive(Args, Debug, Clone)]
pub struct IdentityFlags {
    /// Istio's CA API to get the node's workload certificates from
    /// (`strait ca serve` or istiod), https://HOST:PORT (ztunnel's CA_ADDRESS).
    #[arg(long, value_name = "URL", requires_all = ["ca_root", "ca_token_file"], conflicts_with = "ca_dir")]
    pub ca_address: Option<String>,
    /// PEM root that verifies the CA's TLS certificate (ztunnel's CA_ROOT_CA).
    #[arg(long, value_name = "FILE", requires = "ca_address")]
    pub ca_root: Option<PathBuf>,
    /// File holding the node's bearer token (ztunnel's AUTH_TOKEN); read
    /// before every request.
    #[arg(long, value_name = "FILE", requires = "ca_address")]
    pub ca_token_file: Option<PathBuf>,
    /// Run the CA inside the daemon (single node, demo): Istio's plugged-in
    /// CA files in DIR, or a self-signed root generated there once.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Where the embedded CA serves Istio's CA API.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:15012",
        requires = "ca_dir"
    )]
    pub ca_listen: SocketAddr,
    /// Tokens of other nodes the embedded CA serves (`TOKEN NODE-NAME` lines).
    #[arg(long, value_name = "FILE", requires = "ca_dir")]
    pub ca_tokens: Option<PathBuf>,
    /// Longest certificate lifetime the embedded CA issues.
    #[arg(long, value_name = "DURATION", default_value = "2160h", value_parser = parse_duration, requires = "ca_dir")]
    pub ca_max_ttl: Duration,
    /// Trust domain of the workload identities (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).
    #[arg(long, value_name = "DOMAIN", default_value = crate::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Lifetime asked for each workload certificate (ztunnel's SECRET_TTL);
    /// renewed at half of it.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub secret_ttl: Duration,
    /// `clusterid` sent to the CA (ztunnel's CLUSTER_ID).
    #[arg(long, value_name = "ID", default_value = "Kubernetes")]
    pub cluster_id: String,
}

/// Parses `24h`, `90s`, `1h30m` (Go durations, as Istio's settings).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = strait_config::duration::parse(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s}: at least 1s"));
    }
    Ok(d)
}

impl IdentityFlags {
    fn into_args(self) -> Option<super::identity::IdentityArgs> {
        use super::identity::{CaMode, IdentityArgs};
        let mode = if let Some(dir) = self.ca_dir {
            CaMode::Embedded {
                dir,
                listen: self.ca_listen,
                tokens: self.ca_tokens,
                settings: crate::identity::ca::CaSettings {
                    default_ttl: self.secret_ttl.min(self.ca_max_ttl),
                    max_ttl: self.ca_max_ttl,
                },
            }
        } else {
            CaMode::Remote {
                address: self.ca_address?,
                root: self.ca_root?,
                token_file: self.ca_token_file?,
            }
        };
        Some(IdentityArgs {
            mode,
            trust_domain: self.trust_domain,
            secret_ttl: self.secret_ttl,
            cluster_id: self.cluster_id,
        })
    }
}

/// `strait ca serve`: Istio's CA API for the mesh's nodes.
#[derive(Args, Debug, Clone)]
pub struct CaServeCmd {
    /// Istio's plugged-in CA files (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem), or an empty/new directory where a self-signed root
    /// is generated once and kept.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Where to serve istio.v1.auth.IstioCertificateService (TLS; Istio's port 15012).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:15012")]
    pub listen: SocketAddr,
    /// Node tokens: `TOKEN NODE-NAME` per line; re-read on every request
    /// (without Kubernetes).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["kubeconfig", "in_cluster"], conflicts_with_all = ["kubeconfig", "in_cluster"], requires = "config")]
    pub tokens: Option<PathBuf>,
    /// Config directory (as `strait run --config`): its Pods' spec.nodeName
    /// and serviceAccountName say which identities each node may obtain
    /// (without Kubernetes).
    #[arg(long, short = 'c', value_name = "DIR", conflicts_with_all = ["kubeconfig", "in_cluster"], requires = "tokens")]
    pub config: Option<PathBuf>,
    /// Under Kubernetes, from this kubeconfig (its current context):
    /// callers present service-account tokens, checked with a TokenReview;
    /// pods and their nodes come from the API server.
    #[arg(long, value_name = "PATH", conflicts_with = "in_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The same with the pod's own service account (the CA Deployment).
    #[arg(long)]
    pub in_cluster: bool,
    /// Service accounts (NAMESPACE/NAME, comma-separated or repeated) whose
    /// pod-bound tokens may obtain identities of pods on their pod's node
    /// (istiod's CA_TRUSTED_NODE_ACCOUNTS). Other tokens get only their own
    /// identity.
    #[arg(long, value_name = "NS/SA", value_delimiter = ',', default_value = crate::sources::kube::ca_auth::DEFAULT_NODE_ACCOUNT, value_parser = crate::sources::kube::ca_auth::parse_account)]
    pub trusted_node_accounts: Vec<(String, String)>,
    /// Audience a service-account token must be valid for (repeatable;
    /// istiod's TOKEN_AUDIENCES).
    #[arg(long = "token-audience", value_name = "AUD", default_value = crate::sources::kube::ca_auth::DEFAULT_AUDIENCE)]
    pub token_audiences: Vec<String>,
    /// Trust domain.
    #[arg(long, value_name = "DOMAIN", default_value = crate::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Lifetime when a request asks for none (Istio's DEFAULT_WORKLOAD_CERT_TTL).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub default_ttl: Duration,
    /// Longest lifetime; longer requests are refused (Istio's MAX_WORKLOAD_CERT_TTL).
    #[arg(long, value_name = "DURATION", default_value = "2160h", value_parser = parse_duration)]
    pub max_ttl: Duration,
    /// Metrics (/metrics, /stats/prometheus), /ready and /config_dump (istiod's monitoring port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    pub monitoring: SocketAddr,
    /// Extra DNS name or IP in the CA's TLS certificate (repeatable); it
    /// always has istiod.istio-system.svc, localhost, 127.0.0.1 and the listen IP.
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_names: Vec<String>,
}

impl CaServeCmd {
    /// The CA settings.
    pub fn into_args(self) -> anyhow::Result<super::ca::CaServeArgs> {
        anyhow::ensure!(
            self.default_ttl <= self.max_ttl,
            "--default-ttl is longer than --max-ttl"
        );
        let auth = match (self.tokens, self.config) {
            (Some(tokens), Some(config)) => super::ca::CaAuthArgs::Files { tokens, config },
            _ => super::ca::CaAuthArgs::Kube {
                kubeconfig: self.kubeconfig,
                audiences: self.token_audiences,
                trusted_node_accounts: self.trusted_node_accounts,
            },
        };
        Ok(super::ca::CaServeArgs {
            ca_dir: self.ca_dir,
            listen: self.listen,
            auth,
            trust_domain: self.trust_domain,
            settings: crate::identity::ca::CaSettings {
                default_ttl: self.default_ttl,
                max_ttl: self.max_ttl,
            },
            monitoring: self.monitoring,
            server_names: self.server_names,
        })
    }
}

impl RunCmd {
    /// The daemon settings, with defaults filled in.
    pub fn into_args(self) -> super::RunArgs {
        let node = self.node.unwrap_or_else(hostname);
        if self.inbound_capture {
            tracing::info!("--inbound-capture is deprecated and has no effect: in-pod inbound capture is on by default (--no-inbound-capture turns it off)");
        }
        let kube = (self.kubeconfig.is_some() || self.in_cluster).then_some(super::KubeArgs {
            kubeconfig: self.kubeconfig,
            watch: crate::sources::kube::WatchOptions {
                mesh_config_namespace: self.mesh_config_namespace,
                events_from: Some(node.clone()),
            },
        });
        super::RunArgs {
            config: self.config.unwrap_or_default(),
            kube,
            node,
            pods_cgroup: self.pods_cgroup,
            bpffs: self.bpffs,
            admin: self.admin,
            outbound: self.outbound,
            outbound6: match self.outbound6 {
                None => None,
                Some(Outbound6::Addr(a)) => Some(a),
                Some(Outbound6::Auto) => {
                    let a = node_ipv6(*self.outbound.ip()).map(|ip| {
                        std::net::SocketAddrV6::new(ip, proxy_common::ports::OUTBOUND, 0, 0)
                    });
                    match a {
                        Some(a) => tracing::info!("--outbound6 auto: listening on {a}"),
                        None => tracing::info!("--outbound6 auto: the node has no IPv6 address; IPv6 redirection stays off (TCP to IPv6 addresses that need the proxy is refused)"),
                    }
                    a
                }
            },
            drain: Duration::from_millis(self.drain_ms),
            access_log: !self.no_access_log,
            inbound_capture: !self.no_inbound_capture,
            probe_exemption: !self.no_probe_exemption,
            xdp_uplink: self.xdp_uplink,
            xdp_source: self.xdp_source,
            xdp_source6: self.xdp_source6,
            xdp_gateway_mac: self.xdp_gateway_mac,
            xdp_gateway_mac6: self.xdp_gateway_mac6,
            reset_maps: self.reset_maps,
            sockmap: self.sockmap,
            identity: self.identity.into_args(),
            proxy: crate::serve::ProxySettings {
                request_headers_timeout: ms_or_off(self.request_headers_timeout_ms),
                stream_idle_timeout: ms_or_off(self.stream_idle_timeout_ms),
                idle_timeout: ms_or_off(self.idle_timeout_ms),
                worker_slice: (self.worker_slice_us > 0)
                    .then(|| Duration::from_micros(self.worker_slice_us)),
                worker_priority: match self.worker_priority {
                    None => Some(crate::serve::sched::WorkerPriority::Auto),
                    Some(crate::serve::sched::WorkerPriority::Inherit) => None,
                    p => p,
                },
                worker_priority_required: self.worker_priority.is_some(),
                max_connections: if self.max_connections == 0 {
                    usize::MAX
                } else {
                    self.max_connections
                },
                ..Default::default()
            },
            limits: Limits {
                max_file_bytes: self.max_config_file_bytes,
                max_documents: self.max_config_documents,
                max_depth: self.max_yaml_depth,
            },
        }
    }
}

/// `--worker-slice-us`: 0, or within the kernel's range
/// ([`crate::serve::slice::SLICE_RANGE`]), which it would otherwise clamp
/// silently.
fn parse_slice_us(v: &str) -> Result<u64, String> {
    let us: u64 = v.parse().map_err(|e| format!("{e}"))?;
    let (lo, hi) = crate::serve::slice::SLICE_RANGE;
    let d = Duration::from_micros(us);
    if us != 0 && (d < lo || d > hi) {
        return Err(format!(
            "{us} µs is outside the kernel's slice range ({} to {} µs; 0 for the default)",
            lo.as_micros(),
            hi.as_micros()
        ));
    }
    Ok(us)
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

/// `--outbound6`: an address, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound6 {
    /// This address.
    Addr(std::net::SocketAddrV6),
    /// Port 15001 on the node's IPv6 address: a global-scope (or unique
    /// local) address of the interface holding the IPv4 `--outbound`
    /// address, else of any interface; none when the node has none (what
    /// the DaemonSet passes: harmless on an IPv4-only node).
    Auto,
}

impl std::str::FromStr for Outbound6 {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Outbound6::Auto);
        }
        s.parse()
            .map(Outbound6::Addr)
            .map_err(|e| format!("{e}: expected [IPV6]:PORT or auto"))
    }
}

/// The node's IPv6 address for [`Outbound6::Auto`]: not loopback,
/// link-local, multicast or unspecified; on the interface holding `v4`
/// when it has one.
pub fn node_ipv6(v4: std::net::Ipv4Addr) -> Option<std::net::Ipv6Addr> {
    let addrs: Vec<(String, std::net::IpAddr)> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|a| {
            let s = a.address?;
            let ip = if let Some(v) = s.as_sockaddr_in() {
                std::net::IpAddr::V4(v.ip())
            } else {
                std::net::IpAddr::V6(s.as_sockaddr_in6()?.ip())
            };
            Some((a.interface_name, ip))
        })
        .collect();
    let usable = |ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped().is_some())
        }
        std::net::IpAddr::V4(_) => false,
    };
    let iface = addrs
        .iter()
        .find(|(_, ip)| *ip == std::net::IpAddr::V4(v4))
        .map(|(i, _)| i.clone());
    let pick = |same: bool| {
        addrs
            .iter()
            .filter(|(i, ip)| usable(ip) && (!same || Some(i) == iface.as_ref()))
            .find_map(|(_, ip)| match ip {
                std::net::IpAddr::V6(a) => Some(*a),
                std::net::IpAddr::V4(_) => None,
            })
    };
    pick(true).or_else(|| pick(false))
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

#[cfg(test)]
mod outbound6_tests {
    use super::Outbound6;

    #[test]
    fn outbound6_takes_an_ipv6_address_or_auto() {
        assert_eq!("auto".parse::<Outbound6>(), Ok(Outbound6::Auto));
        assert_eq!(
            "[fd00::1]:15001".parse::<Outbound6>(),
            Ok(Outbound6::Addr("[fd00::1]:15001".parse().unwrap()))
        );
        let e = "10.0.0.1:15001".parse::<Outbound6>().unwrap_err();
        assert!(e.contains("expected [IPV6]:PORT or auto"), "{e}");
    }
}

#[cfg(test)]
mod worker_priority_tests {
    use super::RunCmd;
    use crate::serve::sched::WorkerPriority;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunCmd,
    }

    /// `(worker_priority, worker_priority_required)` for these flags.
    fn settings(flags: &[&str]) -> (Option<WorkerPriority>, bool) {
        let mut argv = vec!["strait", "--config", "/nonexistent"];
        argv.extend_from_slice(flags);
        let a = Cli::try_parse_from(argv).unwrap().run.into_args();
        (a.proxy.worker_priority, a.proxy.worker_priority_required)
    }

    /// The default is `auto`, not required (a refusal is a warning); a
    /// value given on the command line is required; `inherit` leaves the
    /// workers alone; a bad value is refused by the parser.
    #[test]
    fn default_is_auto_and_a_given_value_is_required() {
        assert_eq!(settings(&[]), (Some(WorkerPriority::Auto), false));
        assert_eq!(
            settings(&["--worker-priority", "auto"]),
            (Some(WorkerPriority::Auto), true)
        );
        assert_eq!(
            settings(&["--worker-priority", "fifo:3"]),
            (Some(WorkerPriority::Fifo(3)), true)
        );
        assert_eq!(settings(&["--worker-priority", "inherit"]), (None, true));
        let e = Cli::try_parse_from(["strait", "--config", "/x", "--worker-priority", "rr:1"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("expected auto, inherit, nice:N"), "{e}");
    }
}
