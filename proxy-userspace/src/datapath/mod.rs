//! The kernel data path from userspace: load the embedded eBPF object,
//! attach its programs to the pods cgroup, pin them, and keep the service
//! tables in step with the mesh snapshot.
//!
//! The daemon uses [`Datapath`]:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use strait::datapath::{Datapath, DatapathConfig};
//! let mut dp = Datapath::new(&DatapathConfig::new("node-a"))?;
//! dp.attach(std::path::Path::new("/sys/fs/cgroup/kubepods"))?;
//! let services = Vec::new(); // snapshot.l4 services
//! let report = dp.apply(&services)?;
//! # let _ = report; Ok(()) }
//! ```
//!
//! [`load`] gives an unpinned copy of the object for one-off tools and the
//! XDP `BPF_PROG_TEST_RUN` tests.
mod batch;
mod bpffs;
mod btf;
mod counters;
mod deny4;
mod deny6;
mod deny_rules;
mod grace;
pub mod inpod;
mod inpod_v6;
mod kfunc;
mod layout;
mod loader;
mod maglev;
mod maps;
mod migrate;
mod neigh;
mod orig_dst;
mod relink;
mod slots;
pub mod sockmap;
mod tables;
mod tcp_sock;
mod uplink;
mod uplink_mtu;
mod xdp;
mod xlb;
mod xlb6;
mod xlb_book;
mod xlb_table;
mod xlb_vips;

pub use bpffs::{ensure_mounted as ensure_bpffs, is_bpffs, DEFAULT_BPFFS};
pub use deny_rules::kernel_deny_rules;
pub use loader::{remove_pins, Datapath, DatapathConfig, KernelEntries, ServiceCounters};
pub use neigh::gateway_mac6;
pub use orig_dst::OriginalDestinations;
pub use proxy_common::{TcpStats, TcpStatsKey, TcpStatsKey6, XlbStats};
pub use strait_config::snapshot::{L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service};
pub use tables::ApplyReport;
pub use uplink::{
    parse_mac, resolve as resolve_uplink, resolve6 as resolve_uplink6, PendingGateway6, Resolved6,
};
pub use uplink_mtu::{interface_mtu, link_mtu, MtuRead, MtuWatch};
pub use xdp::{deny_source, load_xdp_deny, DenyReport, DenyScope, DenyTries, SourcePrefix};
pub use xlb::{
    configure_uplink, external_vips, ipv6_uplink, load_xdp_drop, load_xdp_lb, set_uplink_mtu,
    without_ipv6_reals, xlb_stats, ExternalVip, ExternalVips, UplinkConfig, XlbReport,
};
pub use xlb6::{configure_uplink6, external_vips6, ExternalVip6, ExternalVips6, UplinkConfig6};

use anyhow::{bail, Context};
use aya::Ebpf;

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at build time
/// (8-byte aligned, as the ELF parser requires). Empty when the binary was
/// built without it.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strait-ebpf.o"));

/// Program names in the eBPF object.
pub mod programs {
    /// `cgroup/connect4` socket load balancer.
    pub const CONNECT4: &str = "connect4";
    /// `cgroup/connect6`: the same for IPv6 sockets, over the IPv4 tables
    /// for IPv4-mapped destinations and the IPv6 tables for native ones.
    pub const CONNECT6: &str = "connect6";
    /// `cgroup/sendmsg4`: unconnected UDP to a VIP.
    pub const SENDMSG4: &str = "sendmsg4";
    /// `cgroup/recvmsg4`: UDP replies appear from the VIP.
    pub const RECVMSG4: &str = "recvmsg4";
    /// `cgroup/getpeername4`: balanced sockets report the VIP.
    pub const GETPEERNAME4: &str = "getpeername4";
    /// `cgroup/sendmsg6`, `recvmsg6`, `getpeername6`: the UDP and peer-name
    /// hooks of IPv6 sockets (IPv4-mapped and native IPv6 destinations).
    pub const SENDMSG6: &str = "sendmsg6";
    /// See [`SENDMSG6`].
    pub const RECVMSG6: &str = "recvmsg6";
    /// See [`SENDMSG6`].
    pub const GETPEERNAME6: &str = "getpeername6";
    /// `sockops`: copies a redirected connection's original destination to
    /// a key of the client's address.
    pub const SOCKOPS: &str = "orig_dst_sockops";
    /// `cgroup/sock_release`: counts kernel-balanced TCP connections closed
    /// (`proxy-ebpf/src/tcp_release.rs`); loaded and attached beside
    /// [`SOCKET`] when the counters are on and the kernel has the kfuncs
    /// it calls, else closes are counted by [`SOCKOPS`]' state callback.
    pub const TCP_STATS_RELEASE: &str = "tcp_stats_release";
    /// Every program [`super::Datapath::attach`] attaches to the pods cgroup.
    pub const SOCKET: [&str; 9] = [
        CONNECT4,
        CONNECT6,
        SENDMSG4,
        SENDMSG6,
        RECVMSG4,
        RECVMSG6,
        GETPEERNAME4,
        GETPEERNAME6,
        SOCKOPS,
    ];
    /// XDP source-prefix deny filter.
    pub const XDP_DENY: &str = "xdp_deny";
    /// The uplink program: deny filter, then the external VIP balancer.
    pub const XDP_LB: &str = "xdp_lb";
    /// Drops every packet (benchmark floor).
    pub const XDP_DROP: &str = "xdp_drop";
    /// Transmits every packet unchanged (benchmark floor of `XDP_TX`).
    pub const XDP_TX: &str = "xdp_tx";
}

/// Parses and loads the embedded eBPF object into the kernel (maps created,
/// programs not yet loaded or attached).
///
/// Errors: the binary was built without the object, or the kernel refuses
/// the maps (no BPF support, not root, memlock limit).
pub fn load() -> anyhow::Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        bail!("this strait binary was built without its eBPF object: run `cargo xtask build-ebpf` and rebuild");
    }
    load_object(EBPF_OBJECT)
}

/// [`load`] for another build's eBPF object (`object`: the ELF bytes,
/// 8-byte aligned), for benchmarks that compare two builds of the kernel
/// programs in one process (`bench-xdp --object`). Its maps must have the
/// layouts this build's userspace writes.
///
/// Errors: as [`load`], or the bytes are not an eBPF object.
pub fn load_object(object: &[u8]) -> anyhow::Result<Ebpf> {
    raise_memlock();
    btf::loader(object)
        .load(object)
        .context("loading the eBPF object (needs root and a kernel with BPF)")
}

/// Lifts RLIMIT_MEMLOCK for kernels before 5.11 that still charge BPF maps to
/// it; harmless on newer kernels.
pub(crate) fn raise_memlock() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    let _ = setrlimit(Resource::Memlock, unlimited);
}
