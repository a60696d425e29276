//! Reading a whole per-CPU array in one system call
//! (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+), for the kernel TCP counters the
//! daemon reads every 2 s (`TCP_STATS_DIRECT`: 1,024 slots, which one
//! `BPF_MAP_LOOKUP_ELEM` per slot made a burst of 1,024 system calls).
//! aya 0.14 has no batch operations; this is the raw call, as
//! `super::migrate` makes its element calls.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `BPF_MAP_LOOKUP_BATCH` (`include/uapi/linux/bpf.h`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
struct BatchAttr {
    /// Where the previous call stopped (null: from the start).
    in_batch: u64,
    /// Where this call stopped (a key-sized token).
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: room for this many entries; out: how many were written.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every value of the per-CPU array `fd` of `entries` slots of `T`, slot
/// by slot, each as one `T` per possible CPU (`cpus` of them; the kernel
/// hands per-CPU values out in 8-byte-aligned slots).
///
/// Errors: the call fails (`EINVAL` on a kernel without batch operations
/// for arrays: callers fall back to one lookup per slot), or returns
/// fewer entries than `entries`.
pub(super) fn per_cpu_array<T: Copy>(
    fd: BorrowedFd<'_>,
    entries: u32,
    cpus: usize,
) -> io::Result<Vec<Vec<T>>> {
    let stride = std::mem::size_of::<T>().div_ceil(8) * 8;
    let n = entries as usize;
    let mut keys = vec![0u32; n];
    let mut values = vec![0u8; n * stride * cpus];
    let mut token = 0u32;
    let token_ptr = std::ptr::addr_of_mut!(token) as u64;
    let mut done = 0usize;
    let mut first = true;
    while done < n {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token_ptr },
            out_batch: token_ptr,
            keys: keys[done..].as_mut_ptr() as u64,
            values: values[done * stride * cpus..].as_mut_ptr() as u64,
            count: (n - done) as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        first = false;
        let r = lookup_batch(&mut attr);
        let got = attr.count as usize;
        done += got;
        match r {
            Ok(_) if got > 0 => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
            Ok(_) => break,
        }
    }
    if done != n {
        return Err(io::Error::other(format!(
            "BPF_MAP_LOOKUP_BATCH returned {done} of {n} array slots"
        )));
    }
    Ok((0..n)
        .map(|slot| {
            (0..cpus)
                .map(|cpu| {
                    let at = (slot * cpus + cpu) * stride;
                    // SAFETY: `at + size_of::<T>()` lies in `values`; `T`
                    // is a plain-data map value (`Copy`, any bytes valid
                    // for the callers' integer structs); unaligned read.
                    unsafe { std::ptr::read_unaligned(values[at..].as_ptr().cast::<T>()) }
                })
                .collect()
        })
        .collect())
}

/// `bpf(BPF_MAP_LOOKUP_BATCH, attr)`; the kernel writes `attr.count`, the
/// token and the buffers back.
fn lookup_batch(attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a live, fully initialised `repr(C)` value of the
    // layout the command expects, its exact size is passed, and every
    // pointer in it names a live buffer of the size `count` implies.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
