//! `cargo xtask symbol-order [--binary PATH]`: regenerates
//! `proxy-userspace/link/strait.order`, the functions a node's daemon runs,
//! which `proxy-userspace/build.rs` hands to the linker so they are laid
//! out first and together (issue 20: RSS per node).
//!
//! Why: the kernel maps a file-backed fault together with the cached pages
//! around it (`fault_around_bytes`, 64 KiB), and readahead has usually put
//! the whole executable in the page cache. So every 64 KiB block of `.text`
//! in which the daemon ever runs one function becomes resident; with the
//! linker's default order, code that runs is spread over nearly all of
//! them.
//!
//! Which binary: `cargo xtask dist`'s (the one that ships: static glibc,
//! `xtask/src/dist.rs`), built with `-align-all-functions` on top. Its
//! flags go to the final `rustc` only, so every symbol keeps the name a
//! plain `cargo build --profile dist` gives it and the list matches both.
//!
//! How: the `dist` binary is copied onto a scratch ext4 file system on a
//! loop device whose read-ahead is 0, so a page enters the page cache only
//! when the daemon touches it and fault-around maps nothing else. The two
//! daemons of `bench-mesh` (one quick round of the Strait rows: start-up,
//! configuration, certificates, L4 and L7 over HBONE, new connections) run
//! from that copy while a thread polls `mincore(2)` on it. Every function
//! whose entry page was touched is listed, in the order the pages were
//! first touched (then by address). Page granularity over-approximates:
//! a function sharing a touched page with one that ran is listed too;
//! running this again on a binary linked with the list refines it.
//!
//! Serving first: the daemon unmaps its start-up code before it turns
//! LIVE (`proxy-userspace/src/sys/code.rs`), so what stays resident while
//! it serves is the 64 KiB blocks serving runs code in. When bench-mesh
//! starts its first warm-up (both daemons LIVE), the copy's pages that no
//! process maps are dropped from the page cache (`POSIX_FADV_DONTNEED`);
//! every page resident from then on is serving's, and those functions are
//! listed first (by first touch after that point), start-up's after them.
//!
//! Per node: each of bench-mesh's two daemons runs its own copy of the
//! binary (`strait-a`, `strait-b` on the scratch file system, chosen by a
//! wrapper script from `--node`), so the pages each one touches are told
//! apart. Node A serves the source side (capture, L7 routing, the HBONE
//! client), node B the destination side (the HBONE server, delivery to
//! the pod), and they share the runtime, TLS and HTTP/2 framing. Serving's
//! functions are listed in three groups: those both nodes ran, then those
//! only A ran, then those only B ran. A daemon that serves one side then
//! has the first two or the first and third groups resident, instead of
//! 64 KiB blocks of both sides' code interleaved in first-touch order; a
//! daemon that serves both sides has the same union as before.
//!
//! Exact: the binary measured is built with every function on its own
//! 4 KiB page ([`build_page_aligned`]), so a touched page is one function
//! that ran, not its neighbours too (an earlier version measured the
//! shipped layout, and a function sharing a page with one that ran was
//! listed with it, on every later run as well).
//! Needs root (loop device, namespaces), `nm` and `readelf` (binutils).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::build_ebpf;
use crate::cmd::{output, root, sh, step};

/// Where the list lives (read by proxy-userspace/build.rs).
pub const ORDER_FILE: &str = "proxy-userspace/link/strait.order";

pub fn run(binary: Option<PathBuf>) -> anyhow::Result<()> {
    crate::bench::install::ensure(true)?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let binary = match binary {
        Some(b) => b,
        None => {
            build_ebpf::run(true)?;
            build_page_aligned(&target)?
        }
    };
    crate::bench::mesh::build_harness()?;
    let scratch = Scratch::new(&binary)?;
    let touched = watch_while(&scratch.copies, |serving| {
        step("bench-mesh, one quick round of the Strait rows, from the scratch copy");
        sh_marking_serving(
            serving,
            Command::new(target.join("release/bench-mesh"))
                .arg("--strait")
                .arg(&scratch.wrapper)
                .arg("--backend")
                .arg(target.join("release/bench-backend"))
                .arg("--ca")
                .arg(root().join("../shared/hbone/ztunnel-test-ca"))
                .args(["--secs", "2", "--latency-secs", "2", "--rounds", "1"])
                .args(["--only", "strait-l4-hbone", "--only", "strait-l7-hbone"])
                .stdout(std::process::Stdio::null()),
        )
    })?;
    drop(scratch);
    let (names, stats) = ordered_functions(&binary, &touched)?;
    let path = root().join(ORDER_FILE);
    std::fs::write(&path, names.join("\n") + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    let serving_pages = |node: usize| touched.iter().filter(|t| t.serving[node].is_some()).count();
    step(&format!(
        "{} pages of the binary touched, {} / {} of them while serving (nodes A / B); {} of {} functions ({:.2} of {:.2} MB of code; serving's {:.2} MB first: {:.2} both nodes', {:.2} A's, {:.2} B's) listed in {}",
        touched.iter().filter(|t| t.start_up.is_some()).count(),
        serving_pages(0),
        serving_pages(1),
        names.len(),
        stats.functions,
        stats.listed_bytes as f64 / 1e6,
        stats.code_bytes as f64 / 1e6,
        stats.serving_bytes.iter().sum::<u64>() as f64 / 1e6,
        stats.serving_bytes[0] as f64 / 1e6,
        stats.serving_bytes[1] as f64 / 1e6,
        stats.serving_bytes[2] as f64 / 1e6,
        path.display()
    ));
    Ok(())
}

/// The `--node` of bench-mesh's source-side daemon (its other one is B).
const NODE_A: &str = "mesh-a";

/// LLVM's `-align-all-functions` for the measured binary: 2^12, one 4 KiB
/// page.
const PAGE_ALIGN_LOG2: u32 = 12;

/// Builds the `dist` binary with every function starting on its own 4 KiB
/// page (LLVM's `-align-all-functions=12`, given to the final crate's
/// rustc, which does all the fat-LTO code generation), and moves it to
/// `target/dist/strait-page-aligned`. A function's entry page is then
/// touched exactly when it runs: listed from an ordinary build, a page
/// shared with a function that ran would list its neighbours too, and they
/// would stay in the serving group on every later run (still sharing pages
/// with it). The same crates and metadata as the shipped `dist` build, so
/// the same mangled names; its `.text` is ~4 KiB per function (hundreds of
/// MB), only ever read page by page. The next ordinary `dist` build
/// relinks (its flags differ).
fn build_page_aligned(target: &Path) -> anyhow::Result<PathBuf> {
    let align = format!("llvm-args=-align-all-functions={PAGE_ALIGN_LOG2}");
    crate::dist::build_with(
        "page-aligned functions: the binary whose symbols are listed",
        &["-C", &align],
    )?;
    let aligned = target.join("dist/strait-page-aligned");
    std::fs::rename(target.join("dist/strait"), &aligned)
        .with_context(|| format!("moving the page-aligned build to {}", aligned.display()))?;
    Ok(aligned)
}

/// A loop-mounted scratch ext4 with read-ahead 0 holding one copy of the
/// binary per node (`copies`: A's, B's) and `wrapper`, a script that runs
/// node A's copy for `--node mesh-a` and B's otherwise; unmounted and
/// removed on drop.
struct Scratch {
    dir: PathBuf,
    loop_dev: String,
    wrapper: PathBuf,
    copies: [PathBuf; 2],
}

impl Scratch {
    fn new(binary: &Path) -> anyhow::Result<Scratch> {
        let size = std::fs::metadata(binary)
            .with_context(|| format!("{}", binary.display()))?
            .len();
        let dir = std::env::temp_dir().join(format!("strait-order-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("mnt"))?;
        let image = dir.join("fs.img");
        std::fs::File::create(&image)?.set_len(size * 3 + (32 << 20))?;
        sh(Command::new("mkfs.ext4").arg("-q").arg(&image))?;
        let loop_dev = output(Command::new("losetup").args(["-f", "--show"]).arg(&image))
            .map(|s| s.trim().to_string())
            .filter(|s| s.starts_with("/dev/loop"))
            .context("losetup -f --show")?;
        let mnt = dir.join("mnt");
        let s = Scratch {
            wrapper: mnt.join("strait"),
            copies: [mnt.join("strait-a"), mnt.join("strait-b")],
            dir,
            loop_dev,
        };
        sh(Command::new("mount").arg(&s.loop_dev).arg(&mnt))?;
        let dev = s.loop_dev.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/block/{dev}/queue/read_ahead_kb"), "0")
            .context("read-ahead of the loop device")?;
        for copy in &s.copies {
            std::fs::copy(binary, copy)?;
        }
        std::fs::write(
            &s.wrapper,
            format!(
                "#!/bin/sh\ncase \" $* \" in *\" --node {NODE_A} \"*) exec '{}' \"$@\";; esac\nexec '{}' \"$@\"\n",
                s.copies[0].display(),
                s.copies[1].display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&s.wrapper, std::fs::Permissions::from_mode(0o755))?;
        // Remounting drops the copies' pages from the page cache.
        sh(Command::new("umount").arg(&mnt))?;
        sh(Command::new("mount").arg(&s.loop_dev).arg(&mnt))?;
        Ok(s)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.join("mnt")).status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_dev])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// When a page of the watched copies was first seen in the page cache:
/// the poll number overall (either copy), and per node (A's copy, B's) the
/// poll number once serving began (see the module docs; `None`: never).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Touch {
    start_up: Option<u32>,
    serving: [Option<u32>; 2],
}

/// Runs `f` while polling which pages of `files` (the same binary, one
/// copy per node) are in the page cache; per page, the poll in which it
/// was first seen in either copy, and per copy the poll in which it was
/// first seen after `f` set the flag it is given (serving began: the
/// copies' unmapped pages are dropped from the cache at that moment).
fn watch_while(
    files: &[PathBuf; 2],
    f: impl FnOnce(&AtomicBool) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Touch>> {
    let caches = [Resident::open(&files[0])?, Resident::open(&files[1])?];
    let mut first: Vec<Touch> = vec![Touch::default(); caches[0].pages];
    let stop = Arc::new(AtomicBool::new(false));
    let serving = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut poll = 0u32;
            let mut dropped = false;
            loop {
                let done = stop.load(Ordering::Relaxed);
                if !dropped && serving.load(Ordering::Relaxed) {
                    // Only pages no process maps leave the cache.
                    caches.iter().for_each(Resident::drop_unmapped);
                    dropped = true;
                }
                for (node, cache) in caches.iter().enumerate() {
                    for (page, hit) in cache.pages_in_cache().into_iter().enumerate() {
                        if !hit {
                            continue;
                        }
                        let t = &mut first[page];
                        t.start_up.get_or_insert(poll);
                        if dropped {
                            t.serving[node].get_or_insert(poll);
                        }
                    }
                }
                if done {
                    return;
                }
                poll += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = f(&serving);
        stop.store(true, Ordering::Relaxed);
        let _ = poller.join();
        r
    });
    result?;
    if first.iter().all(|t| t.start_up.is_none()) {
        bail!("no page of {} was touched", files[0].display());
    }
    if first.iter().all(|t| t.serving == [None, None]) {
        bail!("bench-mesh never began its warm-up: no serving phase seen");
    }
    Ok(first)
}

/// Runs `cmd` like [`sh`], passing its stderr through and setting
/// `serving` at its first `bench-mesh: warm-up` line (both daemons LIVE).
fn sh_marking_serving(serving: &AtomicBool, cmd: &mut Command) -> anyhow::Result<()> {
    use std::io::BufRead;
    eprintln!("    $ {cmd:?}");
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if let Some(err) = child.stderr.take() {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.starts_with("bench-mesh: warm-up") {
                serving.store(true, Ordering::Relaxed);
            }
            eprintln!("{line}");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// A read-only mapping of a file, for `mincore(2)` (which never faults).
struct Resident {
    file: std::fs::File,
    addr: *mut libc::c_void,
    len: usize,
    pages: usize,
}

// SAFETY: the mapping is only passed to mincore, which reads no memory.
unsafe impl Sync for Resident {}

impl Resident {
    fn open(file: &Path) -> anyhow::Result<Resident> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(file)?;
        let len = f.metadata()?.len() as usize;
        // SAFETY: a fresh shared read-only mapping of a regular file; the
        // memory is never read, only queried with mincore.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            bail!(
                "mmap {}: {}",
                file.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Resident {
            file: f,
            addr,
            len,
            pages: len.div_ceil(4096),
        })
    }

    /// Drops the file's cached pages that no process maps
    /// (`POSIX_FADV_DONTNEED`: mapped pages stay).
    fn drop_unmapped(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: advice on our own open file descriptor.
        unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }

    fn pages_in_cache(&self) -> Vec<bool> {
        let mut v = vec![0u8; self.pages];
        // SAFETY: addr/len is our mapping; v has one byte per page.
        let r = unsafe { libc::mincore(self.addr, self.len, v.as_mut_ptr()) };
        if r != 0 {
            return vec![false; self.pages];
        }
        v.into_iter().map(|b| b & 1 == 1).collect()
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        // SAFETY: unmaps our own mapping once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

#[derive(Debug, Default, PartialEq)]
struct Stats {
    functions: usize,
    code_bytes: u64,
    listed_bytes: u64,
    /// Of `listed_bytes`, the functions whose entry page serving touched:
    /// on both nodes, on node A only, on node B only.
    serving_bytes: [u64; 3],
}

/// The mangled names of `binary`'s functions whose entry page was touched:
/// serving's on both nodes, then serving's on node A only, then on node B
/// only, then start-up's; each group by first touch then address, each
/// name once.
fn ordered_functions(binary: &Path, touched: &[Touch]) -> anyhow::Result<(Vec<String>, Stats)> {
    let readelf =
        output(Command::new("readelf").arg("-lW").arg(binary)).context("readelf -lW (binutils)")?;
    let nm = output(
        Command::new("nm")
            .args(["-S", "--defined-only"])
            .arg(binary),
    )
    .context("nm (binutils)")?;
    Ok(order(&segments(&readelf), &nm, touched))
}

/// `(file offset, virtual address, file size)` of each LOAD segment of
/// `readelf -lW` output.
fn segments(readelf: &str) -> Vec<(u64, u64, u64)> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    readelf
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"LOAD") && f.len() >= 5)
                .then(|| Some((hex(f[1])?, hex(f[2])?, hex(f[4])?)))
                .flatten()
        })
        .collect()
}

fn order(segments: &[(u64, u64, u64)], nm: &str, touched: &[Touch]) -> (Vec<String>, Stats) {
    let offset = |va: u64| {
        segments
            .iter()
            .find(|(_, v, len)| (*v..v + len).contains(&va))
            .map(|(off, v, _)| va - v + off)
    };
    let mut stats = Stats::default();
    // (group: 0 = serving on both nodes / 1 = on A only / 2 = on B only /
    // 3 = start-up only, first touch in that phase, address, name)
    let mut hit: Vec<(u8, u32, u64, &str)> = Vec::new();
    for line in nm.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, size, kind, name] = f[..] else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        let (Ok(addr), Ok(size)) = (u64::from_str_radix(addr, 16), u64::from_str_radix(size, 16))
        else {
            continue;
        };
        let Some(off) = offset(addr).filter(|_| size > 0) else {
            continue;
        };
        stats.functions += 1;
        stats.code_bytes += size;
        let Some(t) = touched.get((off / 4096) as usize) else {
            continue;
        };
        let group = match t.serving {
            [Some(a), Some(b)] => Some((0, a.min(b))),
            [Some(a), None] => Some((1, a)),
            [None, Some(b)] => Some((2, b)),
            [None, None] => t.start_up.map(|poll| (3, poll)),
        };
        if let Some((group, poll)) = group {
            stats.listed_bytes += size;
            if let Some(b) = stats.serving_bytes.get_mut(usize::from(group)) {
                *b += size;
            }
            hit.push((group, poll, addr, name));
        }
    }
    hit.sort();
    let mut seen = std::collections::HashSet::new();
    let names = hit
        .into_iter()
        .filter(|(_, _, _, n)| seen.insert(*n))
        .map(|(_, _, _, n)| n.to_string())
        .collect();
    (names, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const READELF: &str = "
Program Headers:
  Type           Offset   VirtAddr           PhysAddr           FileSiz  MemSiz   Flg Align
  PHDR           0x000040 0x0000000000000040 0x0000000000000040 0x000310 0x000310 R   0x8
  LOAD           0x000000 0x0000000000000000 0x0000000000000000 0x425c48 0x425c48 R   0x1000
  LOAD           0x425c80 0x0000000000426c80 0x0000000000426c80 0x11da160 0x11da160 R E 0x1000
";

    #[test]
    fn functions_on_touched_entry_pages_are_listed_serving_first_by_node_then_by_first_touch_then_address(
    ) {
        let segs = segments(READELF);
        assert_eq!(segs.len(), 2);
        // File pages: 0x426 holds 0x427000.., 0x427 holds 0x428000...
        let nm = "\
0000000000427010 0000000000000020 t late_a
0000000000427100 0000000000000020 T early
0000000000428010 0000000000002000 t late_b
0000000000429010 0000000000000020 t first_touched
0000000000427200 0000000000000000 t zero_sized
0000000001700000 0000000000000020 d data
0000000000427300 0000000000000010 t early
000000000042b010 0000000000000020 t serving_late
000000000042c010 0000000000000020 t serving_early
000000000042d010 0000000000000040 t only_a
000000000042e010 0000000000000080 t only_b
";
        let start_up = |poll| Touch {
            start_up: Some(poll),
            serving: [None, None],
        };
        let page = |addr: usize| (addr - 0x1000) / 4096;
        let mut touched = vec![Touch::default(); 0x500];
        touched[page(0x427010)] = start_up(3);
        touched[page(0x428010)] = start_up(3);
        // late_b's second page is touched earlier, but only its entry page counts.
        touched[page(0x429010)] = start_up(1);
        // Serving's pages come first whatever their start-up touch: those
        // both nodes ran (ordered by the earlier node's first touch), then
        // node A's, then node B's, each whenever it was first touched.
        touched[page(0x42b010)] = Touch {
            start_up: Some(0),
            serving: [Some(9), Some(12)],
        };
        touched[page(0x42c010)] = Touch {
            start_up: Some(7),
            serving: [Some(11), Some(7)],
        };
        touched[page(0x42d010)] = Touch {
            start_up: Some(0),
            serving: [Some(20), None],
        };
        touched[page(0x42e010)] = Touch {
            start_up: Some(0),
            serving: [None, Some(1)],
        };
        let (names, stats) = order(&segs, nm, &touched);
        assert_eq!(
            names,
            [
                "serving_early",
                "serving_late",
                "only_a",
                "only_b",
                "first_touched",
                "late_a",
                "early",
                "late_b"
            ]
        );
        assert_eq!(stats.functions, 9);
        assert_eq!(stats.listed_bytes, 0x20 * 5 + 0x10 + 0x2000 + 0x40 + 0x80);
        assert_eq!(stats.serving_bytes, [0x20 * 2, 0x40, 0x80]);
    }
}
