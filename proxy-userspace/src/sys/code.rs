//! The executable's read-only pages (issue 20: RSS per node).
//!
//! A daemon's resident set counts every page of its executable it has
//! mapped, and a page stays mapped once a fault brought it in (with the
//! 64 KiB around it, the kernel's `fault_around_bytes`). Start-up runs
//! code and reads data that serving never touches again: the configuration
//! parser and schema check, the eBPF object loader, certificate requests.
//! [`release_code_pages`] unmaps the executable's read-only segments
//! (`.text`, `.rodata`, the ELF tables) from the process with
//! `madvise(MADV_DONTNEED)` — what `mi_collect` does for freed heap — so
//! afterwards only the pages the daemon runs or reads again are mapped.
//! The file's pages stay in the page cache (shared with every process
//! running the binary, reclaimable); a page needed again is mapped back by
//! a minor fault (no I/O while it is cached).
//!
//! Only segments the ELF program headers declare without `PF_W` are
//! touched, plus the RELRO range (`PT_GNU_RELRO`: `.data.rel.ro`, the
//! GOT, read-only once start-up's relocations are applied) — never
//! `.data` or `.bss` — and within them only pages `/proc/self/pagemap`
//! shows as file pages: a private copy (a debugger's or a uprobe's
//! breakpoint written into `.text`, a RELRO page the loader relocated, as
//! every one of a position-independent executable's is) is kept, since
//! `MADV_DONTNEED` would discard it. In the shipped build (`cargo xtask
//! dist`: a fixed load address, nothing to relocate) RELRO's pages are
//! file pages, released like `.rodata`.
use std::io::{Read, Seek, SeekFrom};

/// `STRAIT_RELEASE_CODE_PAGES=0` in the daemon's environment keeps the
/// pages mapped (the behaviour before; for A/B measurements and for a
/// debugger that sets breakpoints through `/proc/<pid>/mem`).
pub const RELEASE_ENV: &str = "STRAIT_RELEASE_CODE_PAGES";

/// Whether the daemon releases its start-up code pages ([`RELEASE_ENV`]
/// is not `0`).
pub fn release_enabled() -> bool {
    std::env::var_os(RELEASE_ENV).is_none_or(|v| v != "0")
}

/// `/proc/<pid>/pagemap` entry bits (`Documentation/admin-guide/mm/pagemap.rst`).
const PM_PRESENT: u64 = 1 << 63;
/// Set for a file page or shared anonymous page; clear for a private
/// (anonymous or copied-on-write) page.
const PM_FILE: u64 = 1 << 61;

/// One read-only `PT_LOAD` segment of the running executable, in memory:
/// `[start, end)`, page-aligned inward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First byte (page-aligned).
    pub start: usize,
    /// One past the last byte (page-aligned).
    pub end: usize,
}

/// The main executable's loadable segments without write permission and
/// its RELRO range (`PT_GNU_RELRO`, read-only after start-up's
/// relocations; `dl_iterate_phdr`'s first object is the executable
/// itself), rounded inward to whole pages so no page shared with a
/// writable range is included.
pub fn read_only_segments() -> Vec<Segment> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Vec<Segment>` passed below, and
        // `info` points at the loader's record of one object for the
        // duration of this call, its `dlpi_phnum` headers at `dlpi_phdr`.
        let (out, info) = unsafe { (&mut *(data as *mut Vec<Segment>), &*info) };
        let page = page_size();
        // SAFETY: see above.
        let headers =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        for h in headers {
            let read_only = h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0;
            if !read_only && h.p_type != libc::PT_GNU_RELRO {
                continue;
            }
            let lo = info.dlpi_addr as usize + h.p_vaddr as usize;
            let hi = lo + h.p_memsz as usize;
            let (start, end) = (lo.div_ceil(page) * page, hi / page * page);
            if start < end {
                out.push(Segment { start, end });
            }
        }
        1 // the first object (the executable) only
    }
    let mut out = Vec::new();
    // SAFETY: the callback only reads the loader's records and writes `out`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each),
            &mut out as *mut Vec<Segment> as *mut libc::c_void,
        )
    };
    out
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// Unmaps the executable's read-only file pages from this process (see the
/// module docs); returns how many bytes were advised. Pages that are not
/// file pages (private copies) and pages not resident are left alone. A
/// failure to read `/proc/self/pagemap` releases nothing (returns 0).
///
/// Costs one `madvise` per run of releasable pages and, afterwards, a
/// minor fault per 64 KiB block of code the process runs again. Call at
/// the end of a phase whose code will not run again soon (start-up), not
/// on a request path.
pub fn release_code_pages() -> usize {
    let page = page_size();
    let Ok(mut pagemap) = std::fs::File::open("/proc/self/pagemap") else {
        return 0;
    };
    let mut released = 0;
    for seg in read_only_segments() {
        let pages = (seg.end - seg.start) / page;
        let Some(raw) = pagemap_entries(&mut pagemap, seg, page) else {
            return released;
        };
        let entry = |i: usize| raw[i];
        // Runs of pages that are present file pages.
        let mut i = 0;
        while i < pages {
            if !releasable(entry(i)) {
                i += 1;
                continue;
            }
            let first = i;
            while i < pages && releasable(entry(i)) {
                i += 1;
            }
            let (addr, len) = (seg.start + first * page, (i - first) * page);
            // SAFETY: `[addr, addr + len)` lies in a read-only, file-backed
            // segment of the executable and holds only file pages (no
            // private copies), so MADV_DONTNEED drops nothing but the
            // mapping: the next access maps the same file page again.
            let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
            if rc == 0 {
                released += len;
            }
        }
    }
    released
}

/// The `/proc/self/pagemap` entries (one `u64` per page) of `seg`;
/// `None` when they cannot be read.
fn pagemap_entries(pagemap: &mut std::fs::File, seg: Segment, page: usize) -> Option<Vec<u64>> {
    let mut raw = vec![0u8; (seg.end - seg.start) / page * 8];
    pagemap
        .seek(SeekFrom::Start((seg.start / page * 8) as u64))
        .and_then(|_| pagemap.read_exact(&mut raw))
        .ok()?;
    Some(
        raw.chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

/// A page that is mapped and a file page (not a private copy).
fn releasable(entry: u64) -> bool {
    entry & PM_PRESENT != 0 && entry & PM_FILE != 0
}

/// The executable's resident bytes in its read-only segments, from
/// `/proc/self/pagemap` (for tests and logs).
pub fn resident_code_bytes() -> usize {
    let page = page_size();
    let Ok(mut pagemap) = std::fs::File::open("/proc/self/pagemap") else {
        return 0;
    };
    let mut resident = 0;
    for seg in read_only_segments() {
        let Some(raw) = pagemap_entries(&mut pagemap, seg, page) else {
            return 0;
        };
        resident += raw.iter().filter(|e| *e & PM_PRESENT != 0).count() * page;
    }
    resident
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test executable has a read-only code segment holding this very
    /// function, and its `.data` is not in any returned segment.
    #[test]
    fn finds_the_code_segment_and_no_writable_one() {
        static mut WRITABLE: u64 = 7;
        let segs = read_only_segments();
        let code = finds_the_code_segment_and_no_writable_one as *const () as usize;
        assert!(
            segs.iter().any(|s| (s.start..s.end).contains(&code)),
            "{segs:x?} {code:#x}"
        );
        let data = &raw const WRITABLE as usize;
        assert!(
            !segs.iter().any(|s| (s.start..s.end).contains(&data)),
            "{segs:x?} {data:#x}"
        );
    }

    /// A static holding a pointer lives in RELRO (`.data.rel.ro`), which
    /// is listed; after a release it still reads its value — whether its
    /// page was relocated (a PIE, as test executables are: a private
    /// copy, kept) or is a clean file page (a fixed-address build:
    /// released and mapped back).
    #[test]
    fn relro_is_listed_and_keeps_its_values() {
        static NAMES: [&str; 2] = ["relro", "kept"];
        let at = std::hint::black_box(&raw const NAMES) as usize;
        let segs = read_only_segments();
        assert!(
            segs.iter().any(|s| (s.start..s.end).contains(&at)),
            "{segs:x?} {at:#x}"
        );
        release_code_pages();
        assert_eq!(std::hint::black_box(&NAMES), &["relro", "kept"]);
    }

    /// Released code runs again (mapped back from the page cache), the
    /// resident code shrinks, and a static in `.data` keeps its value.
    #[test]
    fn released_code_still_runs_and_resident_code_shrinks() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static STATE: AtomicU64 = AtomicU64::new(1);
        STATE.store(42, Ordering::Relaxed);
        let before = resident_code_bytes();
        assert!(before > 0, "pagemap readable");
        let released = release_code_pages();
        let after = resident_code_bytes();
        assert!(released > 0);
        assert!(
            after < before,
            "resident code {before} -> {after} after releasing {released}"
        );
        // Code and read-only data are mapped back on use.
        let s: String = format!("{:?}", vec![1u32, 2, 3]);
        assert_eq!(s, "[1, 2, 3]");
        assert_eq!(STATE.load(Ordering::Relaxed), 42);
    }
}
