//! Upgrading pinned program links in place: a restarted (or upgraded)
//! daemon swaps its freshly loaded program into each link an earlier run
//! pinned, with `BPF_LINK_UPDATE` (Linux 5.7+ for cgroup links). The hook
//! never goes without a program, so no connection escapes balancing
//! during the swap, and the programs that run are always the ones of the
//! binary that writes the maps (Cilium replaces its programs the same way;
//! aya exposes the call only for XDP and TC links, so it is made here).
//!
//! Maps are kept across the swap only when their layout is unchanged or
//! migrated: `layout::plan` decides for every pinned map before any is
//! touched (and refuses to start on a layout it cannot migrate), so a swap
//! is never half-applied. The uplink's XDP link is swapped the same way.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `bpf(2)` commands used here (`include/uapi/linux/bpf.h`).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `union bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    /// Explicit padding: the kernel refuses non-zero bytes past the
    /// command's last field, and implicit padding is uninitialised.
    pad: u32,
}

/// `union bpf_attr` for `BPF_LINK_UPDATE`.
#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `bpf(cmd, attr, size_of::<A>())`: the raw system call for the commands
/// aya does not expose (here and in [`super::migrate`]).
pub(super) fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised `repr(C)` value of the
    // layout the command expects, and its exact size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const A,
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Makes the link pinned at `pin` run `prog` from now on, atomically.
///
/// Errors: the pin cannot be opened, or the kernel refuses the update (a
/// program of another type or attach type; a kernel without
/// `BPF_LINK_UPDATE` for this link type).
pub(super) fn replace_program(pin: &Path, prog: BorrowedFd<'_>) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let get = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &get)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_OBJ_GET {}: {e}", pin.display())))?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor we now own.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let update = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &update)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_LINK_UPDATE: {e}")))?;
    Ok(())
}
