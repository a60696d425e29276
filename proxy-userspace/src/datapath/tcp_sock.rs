//! Where the running kernel keeps the socket fields the sockops program
//! reads to count a kernel-balanced connection closed with its exact
//! bytes at the first state change where they are final
//! (`proxy-ebpf/src/tcp_stats.rs`): `struct tcp_sock`'s `write_seq` (bytes
//! queued, not only sent), `struct sock`'s `sk_shutdown` (closed for
//! reading) and `struct sock_common`'s `skc_cookie` (the socket cookie,
//! without a helper call). The sockops context has neither; the program loads them
//! through the socket's BTF pointer at these offsets, which the loader
//! writes into its read-only globals. They come from the kernel's own type
//! information (BTF, `/sys/kernel/btf/vmlinux`; Linux 5.4+ built with
//! `CONFIG_DEBUG_INFO_BTF`, as every distribution kernel is) — what
//! libbpf's CO-RE relocations do for C programs, which Rust eBPF has no
//! compiler support for.
//!
//! The file (~5 MB) is streamed, never held: one pass over the string
//! section finds the four names, one over the type section the two
//! members, and a pass per typedef level their sizes. aya's own BTF parser
//! (`aya_obj::btf`) keeps struct members private, and parsing the whole
//! file into memory is what `super::btf` avoids for the daemon's peak RSS.
//! Format: <https://docs.kernel.org/bpf/btf.html>.
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// The kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the offsets could not be found.
#[derive(Debug, thiserror::Error)]
pub enum TcpSockError {
    /// The BTF file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The data is not BTF this parser understands.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A structure or field is missing, is a bit field, or has a size
    /// other than the program reads.
    #[error("{0}")]
    Field(String),
}

/// Byte offsets from the start of the socket (`struct sock` opens `struct
/// tcp_sock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSockOffsets {
    /// `struct tcp_sock`'s `write_seq` (`u32`).
    pub write_seq: u32,
    /// `struct sock`'s `sk_shutdown` (`u8`).
    pub sk_shutdown: u32,
    /// `struct sock_common`'s `skc_cookie` (`atomic64_t`, 8 bytes: the
    /// socket cookie; `struct sock_common` opens `struct sock`, as the
    /// kernel requires), read instead of calling `bpf_get_socket_cookie`.
    pub sk_cookie: u32,
}

// BTF kinds (`include/uapi/linux/btf.h`).
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
pub(super) const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
pub(super) const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// The running kernel's raw BTF ([`VMLINUX_BTF`]), opened for reading.
///
/// Errors: [`TcpSockError::Read`] naming the file.
pub(super) fn open_vmlinux_btf() -> Result<std::fs::File, TcpSockError> {
    let path = Path::new(VMLINUX_BTF);
    std::fs::File::open(path).map_err(|source| TcpSockError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The fields looked up: (struct, member, size in bytes).
const FIELDS: [(&str, &str, u32); 3] = [
    ("tcp_sock", "write_seq", 4),
    ("sock", "sk_shutdown", 1),
    ("sock_common", "skc_cookie", 8),
];

impl TcpSockOffsets {
    /// The offsets of the running kernel ([`VMLINUX_BTF`]).
    ///
    /// Errors: as [`Self::from_btf`], or the file cannot be opened.
    pub fn of_kernel() -> Result<Self, TcpSockError> {
        Self::from_btf(open_vmlinux_btf()?)
    }

    /// The offsets described by the raw BTF in `r` (little- or
    /// big-endian).
    ///
    /// Errors: `r` cannot be read or parsed, or lacks a field, or gives
    /// it another size than the program reads, or makes it a bit field.
    pub fn from_btf<R: Read + Seek>(r: R) -> Result<Self, TcpSockError> {
        let out = Stream::new(r)?.offsets(&FIELDS)?;
        Ok(Self {
            write_seq: out[0],
            sk_shutdown: out[1],
            sk_cookie: out[2],
        })
    }
}

/// What the `cgroup/sock_release` counter (`proxy-ebpf/src/tcp_release.rs`)
/// needs from the running kernel's BTF: the ids of the kfuncs it calls
/// and of `struct tcp_sock`, and the byte offsets it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRelease {
    /// `FUNC` ids of `bpf_cast_to_kern_ctx` and `bpf_rdonly_cast`.
    pub kfuncs: [u32; 2],
    /// The program's `TCP_RELEASE_BTF`: `struct tcp_sock`'s type id, then
    /// the offsets of [`RELEASE_FIELDS`] in order.
    pub btf: [u32; 14],
}

/// The fields the release counter reads, in its `TCP_RELEASE_BTF` order:
/// (struct, member, size in bytes).
pub const RELEASE_FIELDS: [(&str, &str, u32); 13] = [
    ("sock_common", "skc_cookie", 8),
    ("tcp_sock", "bpf_sock_ops_cb_flags", 1),
    ("tcp_sock", "bytes_acked", 8),
    ("tcp_sock", "bytes_received", 8),
    ("tcp_sock", "snd_una", 4),
    ("tcp_sock", "write_seq", 4),
    ("tcp_sock", "snd_nxt", 4),
    ("tcp_sock", "bytes_sent", 8),
    ("tcp_sock", "bytes_retrans", 8),
    ("sock_common", "skc_flags", 8),
    ("sock_common", "skc_rcv_saddr", 4),
    ("sock_common", "skc_v6_rcv_saddr", 16),
    ("tcp_sock", "pushed_seq", 4),
];

impl TcpRelease {
    /// The running kernel's ([`VMLINUX_BTF`]).
    ///
    /// Errors: as [`Self::from_btf`], or the file cannot be opened.
    pub fn of_kernel() -> Result<Self, TcpSockError> {
        Self::from_btf(open_vmlinux_btf()?)
    }

    /// From the raw BTF in `r`.
    ///
    /// Errors: `r` cannot be parsed; a kfunc (Linux < 6.2), `struct
    /// tcp_sock` or a field is missing, or a field has another size.
    pub fn from_btf<R: Read + Seek>(r: R) -> Result<Self, TcpSockError> {
        let mut b = Stream::new(r)?;
        let wanted = [
            (FUNC, "bpf_cast_to_kern_ctx"),
            (FUNC, "bpf_rdonly_cast"),
            (STRUCT, "tcp_sock"),
        ];
        let ids = b.type_ids(&wanted)?;
        let mut id = [0u32; 3];
        for (i, (_, name)) in wanted.iter().enumerate() {
            id[i] = ids[i]
                .ok_or_else(|| TcpSockError::Field(format!("no {name} in the kernel's BTF")))?;
        }
        let offsets = b.offsets(&RELEASE_FIELDS)?;
        let mut btf = [0u32; 14];
        btf[0] = id[2];
        btf[1..].copy_from_slice(&offsets);
        Ok(Self {
            kfuncs: [id[0], id[1]],
            btf,
        })
    }
}

/// A BTF file read front to back, pass by pass (also used by
/// `super::sockmap` for `struct sock`'s receive memory).
pub(super) struct Stream<R> {
    pub(super) r: BufReader<R>,
    big_endian: bool,
    types: (u64, u64),
    pub(super) strings: (u64, u64),
}

impl<R: Read + Seek> Stream<R> {
    pub(super) fn new(r: R) -> Result<Self, TcpSockError> {
        let mut r = BufReader::with_capacity(64 * 1024, r);
        let mut hdr = [0u8; 24];
        r.read_exact(&mut hdr)
            .map_err(|_| TcpSockError::Malformed("truncated header"))?;
        let big_endian = match hdr[..2] {
            [0x9f, 0xeb] => false,
            [0xeb, 0x9f] => true,
            _ => return Err(TcpSockError::Malformed("bad magic")),
        };
        let word = |i: usize| {
            let b = [hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]];
            u64::from(if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            })
        };
        let hdr_len = word(4);
        Ok(Self {
            r,
            big_endian,
            types: (hdr_len + word(8), word(12)),
            strings: (hdr_len + word(16), word(20)),
        })
    }

    pub(super) fn seek(&mut self, pos: u64) -> Result<(), TcpSockError> {
        self.r
            .seek(SeekFrom::Start(pos))
            .map(|_| ())
            .map_err(|_| TcpSockError::Malformed("section out of bounds"))
    }

    pub(super) fn u32(&mut self) -> Result<u32, TcpSockError> {
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b)
            .map_err(|_| TcpSockError::Malformed("truncated type section"))?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn skip(&mut self, n: u64) -> Result<(), TcpSockError> {
        self.r
            .seek_relative(n as i64)
            .map_err(|_| TcpSockError::Malformed("truncated type section"))
    }

    /// The string offsets of each of `wanted` in the string section
    /// (a name may be stored more than once: each is a list), read in
    /// 8 KiB chunks.
    ///
    /// Errors: the string section lies past the end of the file.
    pub(super) fn names(&mut self, wanted: &[&str]) -> Result<Vec<Vec<u32>>, TcpSockError> {
        let mut out = vec![Vec::new(); wanted.len()];
        self.seek(self.strings.0)?;
        let mut rest = self.strings.1;
        let mut cur = Vec::with_capacity(32);
        let mut start = 0u32;
        let mut pos = 0u32;
        let mut chunk = [0u8; 8192];
        while rest > 0 {
            let n = (rest as usize).min(chunk.len());
            self.r
                .read_exact(&mut chunk[..n])
                .map_err(|_| TcpSockError::Malformed("string section out of bounds"))?;
            rest -= n as u64;
            for &c in &chunk[..n] {
                if c == 0 {
                    for (i, w) in wanted.iter().enumerate() {
                        if cur == w.as_bytes() {
                            out[i].push(start);
                        }
                    }
                    cur.clear();
                    start = pos + 1;
                } else if cur.len() <= 32 {
                    // Past 32 bytes a name matches none of the wanted ones
                    // whatever follows.
                    cur.push(c);
                }
                pos += 1;
            }
        }
        Ok(out)
    }

    /// Walks the type section, calling `each(id, kind, kind_flag, vlen,
    /// name, size_or_type)` per record; `each` returns `true` to read the
    /// members of a struct or union itself (`vlen` × (name, type, offset)
    /// through [`Self::u32`]), else they are skipped.
    pub(super) fn walk(
        &mut self,
        mut each: impl FnMut(&mut Self, u32, u32, bool, u32, u32, u32) -> Result<bool, TcpSockError>,
    ) -> Result<(), TcpSockError> {
        self.seek(self.types.0)?;
        let end = self.types.1;
        let mut at = 0u64;
        let mut id = 1u32;
        while at < end {
            let name = self.u32()?;
            let info = self.u32()?;
            let st = self.u32()?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = u64::from(match kind {
                INT | VAR | DECL_TAG => 4,
                ARRAY => 12,
                STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
                ENUM | FUNC_PROTO => 8 * vlen,
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
                _ => return Err(TcpSockError::Malformed("unknown type kind")),
            });
            let read = each(self, id, kind, info >> 31 == 1, vlen, name, st)?;
            if !read {
                self.skip(extra)?;
            }
            at += 12 + extra;
            id += 1;
        }
        Ok(())
    }

    /// Byte offsets of `fields` — (struct, member, size in bytes) — each
    /// from the start of its struct, in order.
    ///
    /// Errors: the type section cannot be read, or a member is missing,
    /// is a bit field or has another size.
    pub(super) fn offsets(
        &mut self,
        fields: &[(&str, &str, u32)],
    ) -> Result<Vec<u32>, TcpSockError> {
        let wanted: Vec<&str> = fields.iter().flat_map(|(st, m, _)| [*st, *m]).collect();
        let names = self.names(&wanted)?;
        let found = self.find_members(&names, fields.len())?;
        let mut out = Vec::with_capacity(fields.len());
        for (i, (st, member, size)) in fields.iter().enumerate() {
            let (bits, bitfield, ty) = found[i]
                .ok_or_else(|| TcpSockError::Field(format!("no struct {st} member {member}")))?;
            if bits % 8 != 0 || bitfield != 0 {
                return Err(TcpSockError::Field(format!(
                    "struct {st} member {member} is a bit field"
                )));
            }
            let have = self.size_of(ty)?;
            if have != Some(*size) {
                return Err(TcpSockError::Field(format!(
                    "struct {st} member {member} has {have:?} bytes, {size} expected"
                )));
            }
            out.push(bits / 8);
        }
        Ok(out)
    }

    /// Per field `f < n` (`names[2f]`: its struct's name offsets,
    /// `names[2f + 1]`: its member's): (bit offset, bit-field size, type
    /// id) of the member in the first struct of that name that has it,
    /// directly or in one of its anonymous unions or structs (as
    /// `sock_common`'s `skc_flags`).
    #[allow(clippy::type_complexity)]
    fn find_members(
        &mut self,
        names: &[Vec<u32>],
        n: usize,
    ) -> Result<Vec<Option<(u32, u32, u32)>>, TcpSockError> {
        let mut found = vec![None; n];
        // Per field: the anonymous members of its struct, (type, bit offset).
        let mut anon: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
        let mut seen = vec![false; n];
        self.walk(|s, _id, kind, kind_flag, vlen, name, _| {
            if kind != STRUCT {
                return Ok(false);
            }
            let fs: Vec<usize> = (0..n)
                .filter(|&f| !seen[f] && names[2 * f].contains(&name))
                .collect();
            if fs.is_empty() {
                return Ok(false);
            }
            for _ in 0..vlen {
                let (m, ty, off) = (s.u32()?, s.u32()?, s.u32()?);
                let off = if kind_flag {
                    (off & 0xff_ffff, off >> 24)
                } else {
                    (off, 0)
                };
                for &f in &fs {
                    if m == 0 && off.1 == 0 {
                        anon[f].push((ty, off.0));
                    } else if found[f].is_none() && names[2 * f + 1].contains(&m) {
                        found[f] = Some((off.0, off.1, ty));
                    }
                }
            }
            for &f in &fs {
                // The first struct of that name only.
                seen[f] = true;
            }
            Ok(true)
        })?;
        // Anonymous members, one nesting level per pass (`sock_common`'s
        // `skc_rcv_saddr` is in a struct in a union).
        for _ in 0..3 {
            if (0..n).all(|f| found[f].is_some() || anon[f].is_empty()) {
                break;
            }
            let mut next: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
            self.walk(|s, id, kind, kind_flag, vlen, _, _| {
                if kind != STRUCT && kind != UNION {
                    return Ok(false);
                }
                let fs: Vec<(usize, u32)> = (0..n)
                    .filter(|&f| found[f].is_none())
                    .filter_map(|f| anon[f].iter().find(|(t, _)| *t == id).map(|&(_, o)| (f, o)))
                    .collect();
                if fs.is_empty() {
                    return Ok(false);
                }
                for _ in 0..vlen {
                    let (m, ty, off) = (s.u32()?, s.u32()?, s.u32()?);
                    let off = if kind_flag {
                        (off & 0xff_ffff, off >> 24)
                    } else {
                        (off, 0)
                    };
                    for &(f, base) in &fs {
                        if m == 0 && off.1 == 0 {
                            next[f].push((ty, base + off.0));
                        } else if found[f].is_none() && names[2 * f + 1].contains(&m) {
                            found[f] = Some((base + off.0, off.1, ty));
                        }
                    }
                }
                Ok(true)
            })?;
            anon = next;
        }
        Ok(found)
    }

    /// The type id of the first record of each `(kind, name)` in `wanted`
    /// (`None`: absent).
    ///
    /// Errors: the type section cannot be read.
    pub(super) fn type_ids(
        &mut self,
        wanted: &[(u32, &str)],
    ) -> Result<Vec<Option<u32>>, TcpSockError> {
        let strs: Vec<&str> = wanted.iter().map(|(_, n)| *n).collect();
        let names = self.names(&strs)?;
        let mut out = vec![None; wanted.len()];
        self.walk(|_, id, kind, _, _, name, _| {
            for (i, (k, _)) in wanted.iter().enumerate() {
                if out[i].is_none() && *k == kind && names[i].contains(&name) {
                    out[i] = Some(id);
                }
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// Byte size of type `id` (an integer, enum or pointer), through
    /// typedefs and qualifiers.
    pub(super) fn size_of(&mut self, mut id: u32) -> Result<Option<u32>, TcpSockError> {
        for _ in 0..16 {
            let mut next = None;
            let mut size = None;
            self.walk(|_, i, kind, _, _, _, st| {
                if i == id {
                    match kind {
                        TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => next = Some(st),
                        INT | ENUM | ENUM64 | STRUCT | UNION => size = Some(st),
                        PTR => size = Some(8),
                        _ => {}
                    }
                }
                Ok(false)
            })?;
            match (size, next) {
                (Some(s), _) => return Ok(Some(s)),
                (None, Some(n)) => id = n,
                (None, None) => return Ok(None),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Cursor;

    /// A little-endian raw BTF blob (header, type section, string
    /// section): `names` go into the string table and `types` gets their
    /// offsets, in order, and returns the type section's words.
    pub(in crate::datapath) fn raw_btf(
        names: &[&str],
        types: impl FnOnce(&[u32]) -> Vec<u32>,
    ) -> Vec<u8> {
        let mut strings = b"\0".to_vec();
        let mut n = Vec::with_capacity(names.len());
        for x in names {
            n.push(strings.len() as u32);
            strings.extend_from_slice(x.as_bytes());
            strings.push(0);
        }
        let types: Vec<u8> = types(&n).iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(w.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    /// A little-endian BTF blob: `u8`/`u32` integers, a typedef, `struct
    /// sock` and `struct tcp_sock` with the fields (`shutdown_bits`: 0, or
    /// `sk_shutdown` as a bit field of that many bits).
    fn blob(write_seq_size: u32, shutdown_bits: u32) -> Vec<u8> {
        let names = [
            "u8",
            "u32",
            "__u32",
            "sock",
            "sk_err",
            "sk_shutdown",
            "tcp_sock",
            "inet_conn",
            "write_seq",
            "sock_common",
            "s64",
            "skc_cookie",
        ];
        raw_btf(&names, |n| {
            let mut t: Vec<u32> = Vec::new();
            t.extend([n[0], INT << 24, 1, 8]); // 1: u8
            t.extend([n[1], INT << 24, write_seq_size, write_seq_size * 8]); // 2: u32
            t.extend([n[2], TYPEDEF << 24, 2]); // 3: __u32 → u32
            t.extend([n[9], FWD << 24, 0]); // 4: a forward declaration
                                            // 5: struct sock { u32 sk_err at 284; u8 sk_shutdown at 575 }
            let kf = if shutdown_bits > 0 { 1 << 31 } else { 0 };
            t.extend([n[3], kf | (STRUCT << 24) | 2, 784]);
            t.extend([n[4], 2, 284 * 8]);
            t.extend([n[5], 1, (shutdown_bits << 24) | (575 * 8)]);
            // 6: struct tcp_sock { struct sock inet_conn; __u32 write_seq at 1576 }
            t.extend([n[6], (STRUCT << 24) | 2, 2304]);
            t.extend([n[7], 5, 0]);
            t.extend([n[8], 3, 1576 * 8]);
            t.extend([n[10], INT << 24, 8, 64]); // 7: s64
                                                 // 8: struct sock_common { s64 skc_cookie at 48 }
            t.extend([n[9], (STRUCT << 24) | 1, 136]);
            t.extend([n[11], 7, 48 * 8]);
            t
        })
    }

    #[test]
    fn offsets_come_from_the_named_structs_through_typedefs() {
        let o = TcpSockOffsets::from_btf(Cursor::new(blob(4, 0))).unwrap();
        assert_eq!(
            o,
            TcpSockOffsets {
                write_seq: 1576,
                sk_shutdown: 575,
                sk_cookie: 48,
            }
        );
    }

    #[test]
    fn a_field_of_another_size_or_a_bit_field_is_refused() {
        let e = TcpSockOffsets::from_btf(Cursor::new(blob(8, 0))).unwrap_err();
        assert!(e.to_string().contains("write_seq has Some(8) bytes"), "{e}");
        let e = TcpSockOffsets::from_btf(Cursor::new(blob(4, 2))).unwrap_err();
        assert!(e.to_string().contains("sk_shutdown is a bit field"), "{e}");
        assert!(TcpSockOffsets::from_btf(Cursor::new(b"not btf".to_vec())).is_err());
        let mut cut = blob(4, 0);
        cut.truncate(60);
        assert!(TcpSockOffsets::from_btf(Cursor::new(cut)).is_err());
    }

    #[test]
    fn the_running_kernels_offsets_are_found() {
        if !Path::new(VMLINUX_BTF).exists() {
            assert!(
                std::env::var_os("STRAIT_NO_SKIP").is_none(),
                "STRAIT_NO_SKIP: no {VMLINUX_BTF}"
            );
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let o = TcpSockOffsets::of_kernel().unwrap();
        // `sk_shutdown` lies in `struct sock`, `write_seq` past it in
        // `struct tcp_sock`.
        assert!((136..1024).contains(&o.sk_shutdown), "{o:?}");
        assert!((1024..4096).contains(&o.write_seq), "{o:?}");
        // `skc_cookie` lies in `struct sock_common`, which opens `struct
        // sock`, before `sk_shutdown`.
        assert!((8..o.sk_shutdown).contains(&o.sk_cookie), "{o:?}");
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    /// The running kernel's BTF, when it has one, gives every offset and
    /// the kfunc ids.
    #[test]
    fn the_running_kernel_has_the_release_fields() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIP: no {VMLINUX_BTF}");
            return;
        }
        let r = TcpRelease::of_kernel();
        eprintln!("{r:?}");
        let r = r.unwrap();
        assert!(r.kfuncs.iter().all(|&k| k != 0));
        assert!(r.btf.iter().skip(2).all(|&o| o != 0), "{r:?}");
    }
}
