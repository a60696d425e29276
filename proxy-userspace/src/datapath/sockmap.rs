//! Same-node hops without the TCP stack (`strait run --sockmap`, issue 20):
//! attaches the `sk_msg` program `sockmap_redirect` to the sockhash
//! `SOCKMAP` and the sockops program `sockmap_daemon_ops` to the daemon's
//! own cgroup (see proxy-ebpf/src/sockmap.rs for who is inserted and
//! why). The pods cgroup's sockops program inserts the pods' ends only
//! when the object was loaded with `SOCKMAP_ON` set
//! ([`super::DatapathConfig::sockmap`]).
//!
//! Neither is pinned: both live as long as the daemon's [`aya::Ebpf`]
//! (the links stay in their programs), so a daemon that exits leaves no
//! redirect behind; the pairs of a later daemon go into its own map.
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use anyhow::Context;
use aya::{
    maps::SockHash,
    programs::{links::CgroupAttachMode, SkMsg, SockOps},
    Ebpf,
};
use proxy_common::SockPair;

use super::tcp_sock::{open_vmlinux_btf, Stream, TcpSockError, STRUCT};

/// Program names in the eBPF object.
pub const SK_MSG: &str = "sockmap_redirect";
/// The sockops program for the daemon's own cgroup.
pub const DAEMON_OPS: &str = "sockmap_daemon_ops";
/// The LRU hash of senders that stay on TCP for good.
pub const SOCKMAP_TCP: &str = "SOCKMAP_TCP";

/// The daemon's own cgroup v2 directory: the `0::` line of
/// `/proc/self/cgroup` under the cgroup2 mount.
///
/// Errors: no cgroup2 mount, or no unified-hierarchy line.
pub fn own_cgroup() -> anyhow::Result<PathBuf> {
    let mount = crate::sys::cgroup2_mount().context("no cgroup2 filesystem is mounted")?;
    let text = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let rel = parse_own_cgroup(&text).context("no cgroup v2 line in /proc/self/cgroup")?;
    Ok(mount.join(rel))
}

fn parse_own_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/'))
}

/// Attaches the redirect: `sockmap_redirect` to `SOCKMAP`, then
/// `sockmap_daemon_ops` to `cgroup` (the daemon's own) as a BPF link
/// (links attach in multi mode, so programs of other tools on that cgroup
/// and the pods cgroup's programs below it are unaffected).
///
/// Errors: the map or a program is missing, the kernel refuses to load or
/// attach one (kernels before 4.17 have no `sk_msg`). The caller logs and
/// runs without the redirect.
pub fn start(ebpf: &mut Ebpf, cgroup: &Path) -> anyhow::Result<()> {
    attach_redirect(ebpf)?;
    let cg = std::fs::File::open(cgroup)
        .with_context(|| format!("opening the daemon's cgroup {}", cgroup.display()))?;
    let ops: &mut SockOps = ebpf
        .program_mut(DAEMON_OPS)
        .context("program sockmap_daemon_ops missing from the eBPF object")?
        .try_into()?;
    if ops.fd().is_err() {
        ops.load().context("loading sockmap_daemon_ops")?;
    }
    ops.attach(cg, CgroupAttachMode::Single).with_context(|| {
        format!(
            "attaching sockmap_daemon_ops to the daemon's cgroup {}",
            cgroup.display()
        )
    })?;
    Ok(())
}

/// Attaches `sockmap_redirect` to `SOCKMAP` (no sockops program: callers
/// other than [`start`], e.g. tests, insert sockets themselves with
/// [`insert`]).
///
/// Errors: the map or the program is missing, or the kernel refuses to
/// load or attach it.
pub fn attach_redirect(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let map = ebpf
        .map(proxy_common::SOCKMAP)
        .context("map SOCKMAP missing from the eBPF object")?;
    let map: SockHash<_, SockPair> = SockHash::try_from(map)?;
    let map_fd = map.fd().try_clone().context("duplicating the SOCKMAP fd")?;
    let prog: &mut SkMsg = ebpf
        .program_mut(SK_MSG)
        .context("program sockmap_redirect missing from the eBPF object")?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load().context("loading sockmap_redirect")?;
    }
    prog.attach(&map_fd)
        .context("attaching sockmap_redirect to SOCKMAP")?;
    Ok(())
}

/// Puts the established TCP socket `sock` into `SOCKMAP` under `key` (its
/// own 4-tuple), as the sockops programs do: marked in `SOCKMAP_TCP` when
/// its peer is (the peer's send raced this insert), else with a stale mark
/// of that 4-tuple cleared. For tests and tools.
///
/// Errors: a map is missing, the socket is not an established TCP socket,
/// or the map is full.
pub fn insert(
    ebpf: &mut Ebpf,
    key: SockPair,
    sock: &impl std::os::fd::AsRawFd,
) -> anyhow::Result<()> {
    if let Some(map) = ebpf.map_mut(SOCKMAP_TCP) {
        let mut tcp: aya::maps::HashMap<_, SockPair, u8> = aya::maps::HashMap::try_from(map)?;
        if tcp.get(&key.peer(), 0).is_ok() {
            tcp.insert(key, 1, 0)?;
        } else {
            let _ = tcp.remove(&key);
        }
    }
    let map = ebpf
        .map_mut(proxy_common::SOCKMAP)
        .context("map SOCKMAP missing from the eBPF object")?;
    let mut map: SockHash<_, SockPair> = SockHash::try_from(map)?;
    map.insert(key, sock.as_raw_fd(), 0)
        .context("inserting into SOCKMAP")?;
    Ok(())
}

/// Whether the socket stored under `key` has been moved to TCP for good
/// (its send found no peer: `SOCKMAP_TCP`, see proxy-ebpf/src/sockmap.rs).
/// Errors: the map is missing.
pub fn on_tcp(ebpf: &Ebpf, key: &SockPair) -> anyhow::Result<bool> {
    let map = ebpf
        .map(SOCKMAP_TCP)
        .context("map SOCKMAP_TCP missing from the eBPF object")?;
    let map: aya::maps::HashMap<_, SockPair, u8> = aya::maps::HashMap::try_from(map)?;
    Ok(map.get(key, 0).is_ok())
}

/// The pairs in `SOCKMAP` now (each socket's own 4-tuple), for the admin
/// endpoint and tests. Errors: the map is missing.
pub fn pairs(ebpf: &Ebpf) -> anyhow::Result<Vec<SockPair>> {
    let map = ebpf
        .map(proxy_common::SOCKMAP)
        .context("map SOCKMAP missing from the eBPF object")?;
    let map: SockHash<_, SockPair> = SockHash::try_from(map)?;
    Ok(map.keys().filter_map(Result::ok).collect())
}

/// Byte offsets in the running kernel's `struct sock` of the two fields
/// `sockmap_redirect` reads on the receiving socket to bound the redirect
/// (proxy-ebpf/src/sockmap.rs, `receiver_full`): `sk_backlog.rmem_alloc`
/// (`int`, the receive memory, which counts redirected data too) and
/// `sk_rcvbuf` (`int`). From the kernel's BTF, as
/// [`super::tcp_sock::TcpSockOffsets`] (same streaming reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockMemOffsets {
    /// Offset of `sk_backlog.rmem_alloc`.
    pub rmem_alloc: u32,
    /// Offset of `sk_rcvbuf`.
    pub rcvbuf: u32,
}

impl SockMemOffsets {
    /// The offsets of the running kernel (`/sys/kernel/btf/vmlinux`).
    ///
    /// Errors: the file cannot be read, or as [`Self::from_btf`].
    pub fn of_kernel() -> Result<Self, TcpSockError> {
        Self::from_btf(open_vmlinux_btf()?)
    }

    /// The offsets described by the raw BTF in `r`.
    ///
    /// Errors: `r` is not BTF, has no `struct sock` with the fields, or
    /// gives one of them another size than 4 bytes or makes it a bit field.
    pub fn from_btf<R: Read + Seek>(r: R) -> Result<Self, TcpSockError> {
        let mut b = Stream::new(r)?;
        let names = b.names(&["sock", "sk_rcvbuf", "sk_backlog", "rmem_alloc"])?;
        type Member = Option<(u32, u32, u32)>;
        let member = |kf: bool, off: u32, ty: u32| {
            if kf {
                (off & 0xff_ffff, off >> 24, ty)
            } else {
                (off, 0, ty)
            }
        };
        let (mut rcvbuf, mut backlog): (Member, Member) = (None, None);
        b.walk(|s, _, kind, kf, vlen, name, _| {
            if kind != STRUCT || rcvbuf.is_some() || !names[0].contains(&name) {
                return Ok(false);
            }
            for _ in 0..vlen {
                let (n, ty, off) = (s.u32()?, s.u32()?, s.u32()?);
                if names[1].contains(&n) {
                    rcvbuf = Some(member(kf, off, ty));
                } else if names[2].contains(&n) {
                    backlog = Some(member(kf, off, ty));
                }
            }
            Ok(true)
        })?;
        let missing = |m: &str| TcpSockError::Field(format!("no struct sock member {m}"));
        let rcvbuf = rcvbuf.ok_or_else(|| missing("sk_rcvbuf"))?;
        let backlog = backlog.ok_or_else(|| missing("sk_backlog"))?;
        let mut rmem: Member = None;
        b.walk(|s, id, kind, kf, vlen, _, _| {
            if id != backlog.2 || kind != STRUCT {
                return Ok(false);
            }
            for _ in 0..vlen {
                let (n, ty, off) = (s.u32()?, s.u32()?, s.u32()?);
                if names[3].contains(&n) {
                    rmem = Some(member(kf, off, ty));
                }
            }
            Ok(true)
        })?;
        let rmem = rmem.ok_or_else(|| missing("sk_backlog.rmem_alloc"))?;
        let mut bytes = |what: &str, (bits, bitfield, ty): (u32, u32, u32)| {
            if bits % 8 != 0 || bitfield != 0 {
                return Err(TcpSockError::Field(format!(
                    "struct sock member {what} is a bit field"
                )));
            }
            match b.size_of(ty)? {
                Some(4) => Ok(bits / 8),
                have => Err(TcpSockError::Field(format!(
                    "struct sock member {what} has {have:?} bytes, 4 expected"
                ))),
            }
        };
        let rcvbuf = bytes("sk_rcvbuf", rcvbuf)?;
        let rmem_alloc = bytes(
            "sk_backlog.rmem_alloc",
            (backlog.0 + rmem.0, rmem.1, rmem.2),
        )?;
        Ok(Self { rmem_alloc, rcvbuf })
    }
}

/// The values for the object's `SOCK_RMEM_ALLOC` and `SOCK_RCVBUF`
/// globals: the running kernel's [`SockMemOffsets`], or zeros (no bound on
/// the redirect, one warning) when the BTF lacks them or the daemon may not
/// read kernel memory from BPF (`bpf_probe_read_kernel` and storing socket
/// addresses need `CAP_PERFMON` or `CAP_SYS_ADMIN`).
pub fn bound_offsets() -> [u32; 2] {
    if !perfmon_capable() {
        tracing::warn!(
            "sockmap: a redirected hop is not bounded by its receiver's buffer (needs CAP_PERFMON or CAP_SYS_ADMIN)"
        );
        return [0; 2];
    }
    match SockMemOffsets::of_kernel() {
        Ok(o) => [o.rmem_alloc, o.rcvbuf],
        Err(e) => {
            tracing::warn!(
                "sockmap: a redirected hop is not bounded by its receiver's buffer (no socket offsets from the kernel's BTF: {e})"
            );
            [0; 2]
        }
    }
}

/// The value for the object's `SOCK_SND_ALLOWANCE`: what a receiver may
/// hold unread beyond its receive buffer before its sender moves to TCP —
/// the most TCP lets a writer queue in its send buffer, the third value of
/// `/proc/sys/net/ipv4/tcp_wmem` (4 MiB by default, also when unreadable).
/// So a redirected connection pins at most about what a TCP one can
/// (receiver's buffer + writer's send buffer) before TCP's window stops
/// its writer.
pub fn send_allowance() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Whether this process has `CAP_PERFMON` (38) or `CAP_SYS_ADMIN` (21) in
/// its effective set (`/proc/self/status` `CapEff`).
fn perfmon_capable() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 38 | 1 << 21) != 0)
}

/// The eBPF object loaded with the redirect on (`SOCKMAP_ON`, the bound's
/// offsets) and `sockmap_redirect` attached, no sockops program attached:
/// for tests and tools that insert sockets themselves ([`insert`]).
///
/// Errors: as [`super::load`] and [`attach_redirect`].
pub fn load_redirect() -> anyhow::Result<Ebpf> {
    if super::EBPF_OBJECT.is_empty() {
        anyhow::bail!("this strait binary was built without its eBPF object");
    }
    super::raise_memlock();
    let [rmem, rcvbuf] = bound_offsets();
    let mut loader = super::btf::loader(super::EBPF_OBJECT);
    loader.override_global("SOCKMAP_ON", &1u8, true);
    loader.override_global("SOCK_RMEM_ALLOC", &rmem, true);
    loader.override_global("SOCK_RCVBUF", &rcvbuf, true);
    let allowance = send_allowance();
    loader.override_global("SOCK_SND_ALLOWANCE", &allowance, true);
    let mut ebpf = loader
        .load(super::EBPF_OBJECT)
        .context("loading the eBPF object")?;
    attach_redirect(&mut ebpf)?;
    Ok(ebpf)
}

#[cfg(test)]
mod tests {
    use super::super::tcp_sock::tests::raw_btf;
    use super::{parse_own_cgroup, SockMemOffsets};
    use std::io::Cursor;

    /// A little-endian BTF blob with `struct sock { int sk_rcvbuf at 172;
    /// struct { atomic_t rmem_alloc at 0; int len at 4 } sk_backlog at
    /// 184 }` (`rcvbuf_size`: the size of `int`).
    fn blob(rcvbuf_size: u32) -> Vec<u8> {
        const INT: u32 = 1;
        const STRUCT: u32 = 4;
        const TYPEDEF: u32 = 8;
        let names = [
            "int",
            "counter",
            "atomic_t",
            "rmem_alloc",
            "len",
            "sock",
            "sk_rcvbuf",
            "sk_backlog",
            "long",
        ];
        raw_btf(&names, |n| {
            let mut t: Vec<u32> = Vec::new();
            t.extend([n[0], INT << 24, 4, 32]); // 1: int
            t.extend([0, (STRUCT << 24) | 1, 4, n[1], 1, 0]); // 2: struct { int counter }
            t.extend([n[2], TYPEDEF << 24, 2]); // 3: atomic_t
            t.extend([0, (STRUCT << 24) | 2, 24, n[3], 3, 0, n[4], 1, 32]); // 4: sk_backlog's
            t.extend([n[8], INT << 24, rcvbuf_size, rcvbuf_size * 8]); // 5
            t.extend([n[5], (STRUCT << 24) | 2, 800]); // 6: struct sock
            t.extend([n[6], 5, 172 * 8, n[7], 4, 184 * 8]);
            t
        })
    }

    #[test]
    fn receive_memory_offsets_come_from_struct_sock_and_its_backlog() {
        let o = SockMemOffsets::from_btf(Cursor::new(blob(4))).unwrap();
        assert_eq!(
            o,
            SockMemOffsets {
                rmem_alloc: 184,
                rcvbuf: 172
            }
        );
        let e = SockMemOffsets::from_btf(Cursor::new(blob(8))).unwrap_err();
        assert!(e.to_string().contains("sk_rcvbuf has Some(8) bytes"), "{e}");
        assert!(SockMemOffsets::from_btf(Cursor::new(b"not btf".to_vec())).is_err());
    }

    #[test]
    fn the_running_kernels_receive_memory_offsets_are_found() {
        if !std::path::Path::new(super::super::tcp_sock::VMLINUX_BTF).exists() {
            assert!(
                std::env::var_os("STRAIT_NO_SKIP").is_none(),
                "STRAIT_NO_SKIP: no kernel BTF"
            );
            eprintln!("skipped: no kernel BTF");
            return;
        }
        let o = SockMemOffsets::of_kernel().unwrap();
        assert!((64..1024).contains(&o.rmem_alloc), "{o:?}");
        assert!((64..1024).contains(&o.rcvbuf), "{o:?}");
        assert_ne!(o.rmem_alloc, o.rcvbuf);
    }

    #[test]
    fn own_cgroup_is_the_unified_line() {
        let text = "12:cpu,cpuacct:/x\n0::/strait-n1/node\n";
        assert_eq!(parse_own_cgroup(text), Some("strait-n1/node"));
        assert_eq!(parse_own_cgroup("0::/\n"), Some(""));
        assert_eq!(parse_own_cgroup("1:name=systemd:/\n"), None);
    }
}
