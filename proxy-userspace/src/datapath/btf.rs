//! An aya loader that does not parse the kernel's BTF when the embedded
//! object has no use for it (issue 20: the daemon's peak RSS).
//!
//! aya 0.14's `EbpfLoader::new()` always reads `/sys/kernel/btf/vmlinux`
//! (~5 MB) and parses it into ~15 MB of heap, even when the loader is then
//! told `.btf(None)` (aya-rs/aya#1172; later aya releases load it lazily,
//! aya-rs/aya#1644). Strait's programs (cgroup sock_addr, sock_ops,
//! sk_lookup, XDP) carry no CO-RE relocation and attach to no BTF-typed
//! hook, so the parse is pure start-up cost: it set the daemon's peak RSS.
//!
//! [`loader`] therefore builds the loader on a short-lived thread that first
//! moves into a mount namespace of its own (`unshare(CLONE_FS |
//! CLONE_NEWNS)`, only that thread's view of the file system changes) and
//! covers `/sys/kernel/btf` with an empty read-only tmpfs there: aya's read
//! fails and it proceeds without kernel BTF, exactly as on a kernel built
//! without it. The namespace goes away with the thread. When the object
//! needs BTF, or the namespace cannot be made (no `CAP_SYS_ADMIN`), the
//! loader is aya's default.
use aya::EbpfLoader;

/// Where aya reads the kernel's BTF.
const KERNEL_BTF_DIR: &str = "/sys/kernel/btf";

/// Whether `object` (an eBPF ELF) has CO-RE relocations, which need the
/// kernel's BTF to resolve. An object that does not parse counts as
/// needing it (aya then reports the parse error itself).
pub(crate) fn needs_kernel_btf(object: &[u8]) -> bool {
    aya_obj::Object::parse(object).map_or(true, |o| o.has_btf_relocations())
}

/// A loader for `object`: with the kernel's BTF if `object` needs it (aya's
/// default), else without it and without having parsed it (see the module
/// docs). Never fails: the fallback is aya's default loader with its BTF
/// dropped.
pub(crate) fn loader(object: &[u8]) -> EbpfLoader<'static> {
    if needs_kernel_btf(object) {
        return EbpfLoader::new();
    }
    let built = std::thread::Builder::new()
        .name("strait-ebpf-load".into())
        .spawn(|| {
            let hidden = hide_kernel_btf();
            if let Err(e) = &hidden {
                tracing::debug!(
                    "kernel BTF not hidden from the eBPF loader ({e}): it is parsed and dropped"
                );
            }
            (EbpfLoader::new(), hidden.is_ok())
        })
        .ok()
        .and_then(|t| t.join().ok());
    let (mut loader, hidden) = built.unwrap_or_else(|| (EbpfLoader::new(), false));
    if !hidden {
        loader.btf(None);
    }
    loader
}

/// In the calling thread only: a private mount namespace in which
/// [`KERNEL_BTF_DIR`] is an empty read-only tmpfs. Call it on a thread
/// that ends soon after (the change stays with the thread).
fn hide_kernel_btf() -> rustix::io::Result<()> {
    use rustix::mount::{mount, mount_change, MountFlags, MountPropagationFlags};
    use rustix::thread::UnshareFlags;
    // SAFETY: FILES is not unshared, so every thread keeps seeing the same
    // file descriptors; FS and NEWNS only change this thread's cwd/root and
    // mount table, which nothing else on this short-lived thread relies on.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS)? };
    // Nothing mounted below may propagate back to the node's namespace.
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )?;
    mount(
        "none",
        KERNEL_BTF_DIR,
        "tmpfs",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strait_object_needs_no_kernel_btf() {
        // Built without the object (no `cargo xtask build-ebpf`): nothing
        // to check.
        if super::super::EBPF_OBJECT.is_empty() {
            return;
        }
        assert!(
            !needs_kernel_btf(super::super::EBPF_OBJECT),
            "the eBPF object has CO-RE relocations: the daemon now parses the kernel BTF at start (≈15 MB peak RSS)"
        );
    }

    /// The thread that hides the BTF no longer sees it; the rest of the
    /// process (and the node) still does. Needs root (CAP_SYS_ADMIN).
    #[test]
    fn hides_kernel_btf_from_its_own_thread_only() {
        let vmlinux = std::path::Path::new(KERNEL_BTF_DIR).join("vmlinux");
        if !crate::sys::is_root() || !vmlinux.exists() {
            let why = "needs root and a kernel with /sys/kernel/btf/vmlinux";
            assert!(std::env::var_os("STRAIT_NO_SKIP").is_none(), "{why}");
            eprintln!("skipped: {why}");
            return;
        }
        let path = vmlinux.clone();
        let seen_by_loader_thread = std::thread::spawn(move || {
            hide_kernel_btf().expect("private mount namespace");
            path.exists()
        })
        .join()
        .unwrap();
        assert!(!seen_by_loader_thread);
        assert!(vmlinux.exists(), "hidden for the whole process");
    }

    #[test]
    fn unparsable_object_counts_as_needing_btf() {
        assert!(needs_kernel_btf(b"not an ELF object"));
    }
}
