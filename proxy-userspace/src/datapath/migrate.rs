//! Copying a pinned map's entries into a map of a newer layout (a larger
//! capacity), entry by entry and without knowing the entries' types: the
//! key and value bytes are moved as the kernel hands them out
//! (`BPF_MAP_GET_NEXT_KEY`, `BPF_MAP_LOOKUP_ELEM`, `BPF_MAP_UPDATE_ELEM`).
//! Per-CPU values are copied for every possible CPU.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::relink::bpf;

/// `bpf(2)` commands (`include/uapi/linux/bpf.h`).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
/// `BPF_NOEXIST`: only create, never overwrite.
const BPF_NOEXIST: u64 = 1;
/// `BPF_ANY`.
const BPF_ANY: u64 = 0;

/// `union bpf_attr` for the `BPF_MAP_*_ELEM` commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    /// Explicit padding (the kernel refuses non-zero bytes it does not
    /// know, and implicit padding is uninitialised).
    pad: u32,
    key: u64,
    /// `value` or `next_key`.
    value: u64,
    flags: u64,
}

/// How to write copied entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Overwrite {
    /// Every entry of the source replaces the destination's.
    Yes,
    /// Only keys the destination lacks are written (a second pass after
    /// the programs moved to the destination: what they wrote meanwhile
    /// wins).
    No,
}

/// Bytes of one lookup's value: per-CPU maps return one 8-byte-aligned
/// slot per possible CPU.
fn value_len(value_size: u32, per_cpu: bool) -> io::Result<usize> {
    if !per_cpu {
        return Ok(value_size as usize);
    }
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    Ok((value_size as usize).div_ceil(8) * 8 * cpus)
}

/// Copies every entry of `from` into `to` (both maps of the same type, key
/// and value size); returns how many were written.
///
/// Errors: a system call fails (e.g. `to` is full: `E2BIG`/`ENOSPC`); the
/// entries copied so far stay.
pub(super) fn copy(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    key_size: u32,
    value_size: u32,
    per_cpu: bool,
    overwrite: Overwrite,
) -> io::Result<usize> {
    let mut key = vec![0u8; key_size.max(1) as usize];
    let mut next = vec![0u8; key_size.max(1) as usize];
    let mut value = vec![0u8; value_len(value_size, per_cpu)?.max(1)];
    let mut first = true;
    let mut copied = 0;
    loop {
        let attr = ElemAttr {
            map_fd: from.as_raw_fd() as u32,
            pad: 0,
            // A null key asks for the first key.
            key: if first { 0 } else { key.as_ptr() as u64 },
            value: next.as_mut_ptr() as u64,
            flags: 0,
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(copied),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_GET_NEXT_KEY: {e}"),
                ))
            }
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        let lookup = ElemAttr {
            map_fd: from.as_raw_fd() as u32,
            pad: 0,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            flags: 0,
        };
        match bpf(BPF_MAP_LOOKUP_ELEM, &lookup) {
            Ok(_) => {}
            // Evicted (LRU) or deleted since the key was listed.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_LOOKUP_ELEM: {e}"),
                ))
            }
        }
        let update = ElemAttr {
            map_fd: to.as_raw_fd() as u32,
            pad: 0,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            flags: match overwrite {
                Overwrite::Yes => BPF_ANY,
                Overwrite::No => BPF_NOEXIST,
            },
        };
        match bpf(BPF_MAP_UPDATE_ELEM, &update) {
            Ok(_) => copied += 1,
            Err(e) if overwrite == Overwrite::No && e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_UPDATE_ELEM: {e}"),
                ))
            }
        }
    }
}
