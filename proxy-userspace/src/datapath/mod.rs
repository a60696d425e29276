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
//! The free functions below ([`load`], [`attach_connect4`],
//! [`put_l4_service`]) load an unpinned copy for one-off tools and tests.
use std::path::Path;

mod bpffs;
mod loader;
mod maglev;
mod maps;
mod orig_dst;
mod slots;
mod tables;

pub use bpffs::{ensure_mounted as ensure_bpffs, is_bpffs, DEFAULT_BPFFS};
pub use loader::{remove_pins, Datapath, DatapathConfig, KernelEntries, ServiceCounters};
pub use orig_dst::OriginalDestinations;
pub use strait_config::snapshot::{L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service};
pub use tables::ApplyReport;

use anyhow::{bail, Context};
use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie},
    programs::{links::CgroupAttachMode, CgroupSockAddr, Xdp},
    Ebpf,
};
use proxy_common::{Backend, BackendKey, ServiceKey, ServiceValue};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at build time
/// (8-byte aligned, as the ELF parser requires). Empty when the binary was
/// built without it.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strait-ebpf.o"));

/// Program names in the eBPF object.
pub mod programs {
    /// `cgroup/connect4` socket load balancer.
    pub const CONNECT4: &str = "connect4";
    /// `cgroup/connect6`: the same for IPv4-mapped IPv6 destinations.
    pub const CONNECT6: &str = "connect6";
    /// `cgroup/sendmsg4`: unconnected UDP to a VIP.
    pub const SENDMSG4: &str = "sendmsg4";
    /// `cgroup/recvmsg4`: UDP replies appear from the VIP.
    pub const RECVMSG4: &str = "recvmsg4";
    /// `cgroup/getpeername4`: balanced sockets report the VIP.
    pub const GETPEERNAME4: &str = "getpeername4";
    /// `cgroup/sendmsg6`, `recvmsg6`, `getpeername6`: the UDP and peer-name
    /// hooks for IPv4-mapped IPv6 destinations.
    pub const SENDMSG6: &str = "sendmsg6";
    /// See [`SENDMSG6`].
    pub const RECVMSG6: &str = "recvmsg6";
    /// See [`SENDMSG6`].
    pub const GETPEERNAME6: &str = "getpeername6";
    /// `sockops`: copies a redirected connection's original destination to
    /// a key of the client's address.
    pub const SOCKOPS: &str = "orig_dst_sockops";
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
    raise_memlock();
    Ebpf::load(EBPF_OBJECT).context("loading the eBPF object (needs root and a kernel with BPF)")
}

/// Lifts RLIMIT_MEMLOCK for kernels before 5.11 that still charge BPF maps to
/// it; harmless on newer kernels.
pub(crate) fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Loads the `cgroup/connect4` program and attaches it to the cgroup v2
/// directory `cgroup` (every process below it gets socket load balancing).
pub fn attach_connect4(ebpf: &mut Ebpf, cgroup: &Path) -> anyhow::Result<()> {
    let prog: &mut CgroupSockAddr = ebpf
        .program_mut(programs::CONNECT4)
        .context("connect4 program missing from the eBPF object")?
        .try_into()?;
    prog.load()?;
    let dir = std::fs::File::open(cgroup)
        .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    prog.attach(dir, CgroupAttachMode::Single)
        .with_context(|| format!("attaching connect4 to {}", cgroup.display()))?;
    Ok(())
}

/// Loads the XDP deny program (not attached) and returns it, e.g. for
/// `BPF_PROG_TEST_RUN`.
pub fn load_xdp_deny(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(programs::XDP_DENY)
        .context("xdp_deny program missing from the eBPF object")?
        .try_into()?;
    prog.load()?;
    Ok(prog)
}

/// Writes one L4 service (random choice) and its backends into an object
/// from [`load`]: `vip` and `backends` are `(ip, port)` in host order;
/// `svc_id` names the backend set. [`Datapath::apply`] is the daemon's way.
pub fn put_l4_service(
    ebpf: &mut Ebpf,
    vip: std::net::SocketAddrV4,
    proto: u8,
    svc_id: u32,
    backends: &[std::net::SocketAddrV4],
) -> anyhow::Result<()> {
    {
        let mut map: HashMap<_, BackendKey, Backend> = HashMap::try_from(
            ebpf.map_mut(proxy_common::BACKENDS)
                .context("BACKENDS map")?,
        )?;
        for (slot, b) in backends.iter().enumerate() {
            let key = BackendKey {
                svc_id,
                slot: slot as u32,
            };
            let val = Backend {
                ip: proxy_common::ipv4_to_be(u32::from(*b.ip())),
                port: proxy_common::port_to_be(b.port()),
                pad: 0,
            };
            map.insert(key, val, 0)?;
        }
    }
    let mut services: HashMap<_, ServiceKey, ServiceValue> = HashMap::try_from(
        ebpf.map_mut(proxy_common::SERVICES)
            .context("SERVICES map")?,
    )?;
    let key = ServiceKey {
        vip: proxy_common::ipv4_to_be(u32::from(*vip.ip())),
        port: proxy_common::port_to_be(vip.port()),
        proto,
        pad: 0,
    };
    let val = ServiceValue {
        svc_id,
        backend_count: backends.len() as u32,
        mode: proxy_common::mode::L4,
        lb: proxy_common::lb::RANDOM,
        flags: 0,
        pad: 0,
    };
    services.insert(key, val, 0)?;
    Ok(())
}

/// Adds an IPv4 source prefix (`addr` in host order, `prefix_len` bits) to
/// the XDP deny list.
pub fn deny_source(
    ebpf: &mut Ebpf,
    addr: std::net::Ipv4Addr,
    prefix_len: u32,
    policy_id: u32,
) -> anyhow::Result<()> {
    let mut trie: LpmTrie<_, u32, u32> =
        LpmTrie::try_from(ebpf.map_mut(proxy_common::DENY_V4).context("DENY_V4 map")?)?;
    trie.insert(&Key::new(prefix_len, u32::from(addr).to_be()), policy_id, 0)?;
    Ok(())
}
