//! Least privilege after setup: once the eBPF programs are attached, the
//! maps pinned, bpffs mounted and the listeners bound, `strait run` keeps
//! only the capabilities serving needs and sets `no_new_privs`.
//!
//! What serving does at run time: it writes the kernel maps through the
//! file descriptors it already holds (service, backend, Maglev and
//! workload tables on every reload), reads the config directory, and
//! accepts and opens TCP connections. Map writes need `CAP_BPF` on kernels
//! where `kernel.unprivileged_bpf_disabled` gates every `bpf()` command
//! (5.10–6.4). Enrollment attaches and detaches the socket programs on
//! pod cgroups as pods join or leave the mesh (`BPF_LINK_CREATE` on a
//! cgroup needs `CAP_NET_ADMIN`, like istio-cni's in-pod redirection), so
//! [`KEEP`] is `CAP_BPF` and `CAP_NET_ADMIN` (measured: reloads that
//! rewrite the kernel tables work with them, see the `e2e_hardening`
//! tests; label flips attach and detach, see `node_enrollment`). Every other capability is removed from
//! the effective, permitted, inheritable, ambient and bounding sets, and
//! `no_new_privs` stops an `execve` from regaining any. With workload
//! identities (a CA) or the in-pod inbound capture (on unless
//! `--no-inbound-capture`), `CAP_SYS_ADMIN` is kept too: the HBONE and
//! plaintext inbound listeners and the deliveries are sockets opened
//! inside each meshed pod's network namespace (`setns`), as ztunnel's
//! in-pod mode, which keeps `SYS_ADMIN`. With `--worker-priority`,
//! `CAP_SYS_NICE` is kept for the workers to take it.
//!
//! Capabilities are per thread: this must run before the process starts
//! any thread that outlives setup (the tokio runtime, the proxy workers, the
//! file watcher); threads created later inherit the reduced sets.
use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities kept for serving.
pub const KEEP: &[Capability] = &[Capability::CAP_BPF, Capability::CAP_NET_ADMIN];

/// Drops every capability but [`KEEP`] (and `CAP_SYS_ADMIN` when
/// `keep_sys_admin`: with workload identities or the in-pod inbound
/// capture the daemon opens sockets inside pods' network namespaces,
/// which needs `setns`, as ztunnel's in-pod mode keeps `SYS_ADMIN`) and
/// sets `no_new_privs`. `CAP_SYS_NICE` is kept when `keep_sys_nice`:
/// `--worker-priority` sets each proxy worker thread's priority when the
/// workers start, after this.
///
/// Errors: a `capset`/`prctl` call failed (the message names it); the
/// daemon then refuses to serve rather than serve with full privileges.
pub fn drop_privileges(keep_sys_admin: bool, keep_sys_nice: bool) -> anyhow::Result<()> {
    let mut keep: CapsHashSet = KEEP.iter().copied().collect();
    if keep_sys_admin {
        keep.insert(Capability::CAP_SYS_ADMIN);
    }
    if keep_sys_nice {
        keep.insert(Capability::CAP_SYS_NICE);
    }
    let err = |what: &str, e: caps::errors::CapsError| {
        anyhow::anyhow!("dropping capabilities ({what}): {e}")
    };
    // The bounding set first: removing from it needs CAP_SETPCAP, which
    // is about to go.
    let bounding = caps::read(None, CapSet::Bounding).map_err(|e| err("read bounding", e))?;
    for cap in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(|e| err("bounding", e))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| err("inheritable", e))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| err("read permitted", e))?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Effective, &kept).map_err(|e| err("effective", e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| err("permitted", e))?;
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| anyhow::anyhow!("setting no_new_privs: {e}"))?;
    Ok(())
}
