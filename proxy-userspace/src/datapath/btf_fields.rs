//! Byte offsets of (possibly nested) struct members and function type ids
//! in the kernel's BTF, read with the streaming reader of
//! [`super::tcp_sock`] (a few passes over the file, nothing of it kept):
//! what the `tcp_destroy_sock` raw tracepoint needs to count a
//! kernel-balanced connection closed (`proxy-ebpf/src/tcp_destroy.rs`). A member of an anonymous struct
//! or union (`struct sock_common`'s `skc_daddr`, …) is found through it, as
//! C names it. Format: <https://docs.kernel.org/bpf/btf.html>.
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek};

use super::tcp_sock::{Stream, TcpSockError, STRUCT};

const UNION: u32 = 5;
const FUNC: u32 = 12;

/// A member: (name offset, type id, bit offset, bit-field size).
type Member = (u32, u32, u32, u32);

/// The byte offset of each `(struct, member, size)` of `fields` in its
/// struct, through anonymous members, and the BTF type id of each function
/// named in `funcs`.
///
/// Errors: `r` cannot be read or parsed, a field is missing, is a bit
/// field or has another size, a function is missing.
pub(super) fn resolve<R: Read + Seek>(
    r: R,
    fields: &[(&str, &str, u32)],
    funcs: &[&str],
) -> Result<(Vec<u32>, Vec<u32>), TcpSockError> {
    let mut b = Stream::new(r)?;
    let mut wanted: Vec<&str> = Vec::new();
    for (s, m, _) in fields {
        wanted.push(s);
        wanted.push(m);
    }
    wanted.extend_from_slice(funcs);
    let names = names(&mut b, &wanted)?;
    let name_of = |w: &str| -> &Vec<u32> { &names[wanted.iter().position(|x| *x == w).unwrap()] };
    // Pass: the named structs' members and the functions.
    let mut structs: HashMap<&str, Vec<Member>> = HashMap::new();
    let mut func_ids: Vec<Option<u32>> = vec![None; funcs.len()];
    let struct_names: Vec<&str> = fields.iter().map(|f| f.0).collect();
    b.walk(|s, id, kind, kind_flag, vlen, name, _| {
        if kind == FUNC {
            for (i, f) in funcs.iter().enumerate() {
                if func_ids[i].is_none() && name_of(f).contains(&name) {
                    func_ids[i] = Some(id);
                }
            }
            return Ok(false);
        }
        if kind != STRUCT {
            return Ok(false);
        }
        let Some(st) = struct_names
            .iter()
            .find(|n| !structs.contains_key(**n) && name_of(n).contains(&name))
        else {
            return Ok(false);
        };
        structs.insert(st, members(s, vlen, kind_flag)?);
        Ok(true)
    })?;
    // Anonymous members, level by level (three deep is plenty).
    let mut anon: HashMap<u32, Vec<Member>> = HashMap::new();
    let mut todo: HashSet<u32> = structs
        .values()
        .flatten()
        .filter(|m| m.0 == 0)
        .map(|m| m.1)
        .collect();
    for _ in 0..3 {
        if todo.is_empty() {
            break;
        }
        let mut next = HashSet::new();
        b.walk(|s, id, kind, kind_flag, vlen, _, _| {
            if !(kind == STRUCT || kind == UNION) || !todo.contains(&id) {
                return Ok(false);
            }
            let ms = members(s, vlen, kind_flag)?;
            next.extend(ms.iter().filter(|m| m.0 == 0).map(|m| m.1));
            anon.insert(id, ms);
            Ok(true)
        })?;
        todo = next.into_iter().filter(|i| !anon.contains_key(i)).collect();
    }
    let mut out = Vec::with_capacity(fields.len());
    for (st, member, size) in fields {
        let ms = structs
            .get(st)
            .ok_or_else(|| TcpSockError::Field(format!("no struct {st}")))?;
        let (bits, bitfield, ty) = find(ms, name_of(member), &anon, 0)
            .ok_or_else(|| TcpSockError::Field(format!("no struct {st} member {member}")))?;
        if bits % 8 != 0 || bitfield != 0 {
            return Err(TcpSockError::Field(format!(
                "struct {st} member {member} is a bit field"
            )));
        }
        let have = if *size == 0 { None } else { b.size_of(ty)? };
        if *size != 0 && have != Some(*size) {
            return Err(TcpSockError::Field(format!(
                "struct {st} member {member} has {have:?} bytes, {size} expected"
            )));
        }
        out.push(bits / 8);
    }
    let ids = funcs
        .iter()
        .zip(func_ids)
        .map(|(f, id)| id.ok_or_else(|| TcpSockError::Field(format!("no function {f}"))))
        .collect::<Result<_, _>>()?;
    Ok((out, ids))
}

/// The member named by one of `name` in `ms` or, through anonymous members
/// (adding their offsets), in `anon`.
fn find(
    ms: &[Member],
    name: &[u32],
    anon: &HashMap<u32, Vec<Member>>,
    base: u32,
) -> Option<(u32, u32, u32)> {
    for &(n, ty, off, bf) in ms {
        if name.contains(&n) {
            return Some((base + off, bf, ty));
        }
    }
    for &(n, ty, off, _) in ms {
        if n == 0 {
            if let Some(inner) = anon.get(&ty) {
                if let Some(hit) = find(inner, name, anon, base + off) {
                    return Some(hit);
                }
            }
        }
    }
    None
}

/// Reads `vlen` members of a struct or union.
fn members<R: Read + Seek>(
    s: &mut Stream<R>,
    vlen: u32,
    kind_flag: bool,
) -> Result<Vec<Member>, TcpSockError> {
    let mut out = Vec::with_capacity(vlen as usize);
    for _ in 0..vlen {
        let (n, ty, off) = (s.u32()?, s.u32()?, s.u32()?);
        out.push(if kind_flag {
            (n, ty, off & 0xff_ffff, off >> 24)
        } else {
            (n, ty, off, 0)
        });
    }
    Ok(out)
}

/// The string offsets of each of `wanted` (a name may be stored more than
/// once).
fn names<R: Read + Seek>(
    b: &mut Stream<R>,
    wanted: &[&str],
) -> Result<Vec<Vec<u32>>, TcpSockError> {
    let mut out = vec![Vec::new(); wanted.len()];
    b.seek(b.strings.0)?;
    let mut rest = b.strings.1;
    let mut cur = Vec::with_capacity(64);
    let (mut start, mut pos) = (0u32, 0u32);
    let mut chunk = [0u8; 8192];
    while rest > 0 {
        let n = (rest as usize).min(chunk.len());
        b.r.read_exact(&mut chunk[..n])
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
            } else if cur.len() <= 64 {
                cur.push(c);
            }
            pos += 1;
        }
    }
    Ok(out)
}

/// What the `tcp_destroy_sock` raw tracepoint needs from the kernel's BTF.
pub(super) struct DestroyHook {
    /// `TCP_DESTROY_OFFSETS` (byte offsets from the start of the socket).
    pub(super) offsets: [u32; 15],
}

/// The fields `proxy-ebpf/src/tcp_destroy.rs` reads, in its `O_*` order
/// (each struct opens the next: `tcp_sock` ⊃ `sock` ⊃ `sock_common`), then
/// the nesting that makes offsets in `sock_common` and `sock` offsets in
/// `tcp_sock` (each must be 0; size 0: not checked).
const DESTROY_FIELDS: [(&str, &str, u32); 19] = [
    ("tcp_sock", "bpf_sock_ops_cb_flags", 1),
    ("tcp_sock", "snd_una", 4),
    ("tcp_sock", "bytes_acked", 8),
    ("tcp_sock", "bytes_received", 8),
    ("sock_common", "skc_flags", 8),
    ("sock_common", "skc_state", 1),
    ("sock_common", "skc_family", 2),
    ("sock_common", "skc_rcv_saddr", 4),
    ("sock_common", "skc_daddr", 4),
    ("sock_common", "skc_dport", 2),
    ("sock_common", "skc_v6_rcv_saddr", 16),
    ("sock_common", "skc_v6_daddr", 16),
    ("sock_common", "skc_cookie", 8),
    ("tcp_sock", "bytes_sent", 8),
    ("tcp_sock", "bytes_retrans", 8),
    ("tcp_sock", "inet_conn", 0),
    ("inet_connection_sock", "icsk_inet", 0),
    ("inet_sock", "sk", 0),
    ("sock", "__sk_common", 0),
];

/// The tracepoint.
pub(super) const TRACEPOINT: &str = "tcp_destroy_sock";

/// [`DestroyHook`] of the running kernel, or `None` (warned: closes are
/// then counted by sockops state callbacks).
pub(super) fn destroy_hook() -> Option<DestroyHook> {
    let found = std::fs::File::open(super::tcp_sock::VMLINUX_BTF)
        .map_err(|e| TcpSockError::Read {
            path: super::tcp_sock::VMLINUX_BTF.into(),
            source: e,
        })
        .and_then(|f| resolve(f, &DESTROY_FIELDS, &[]));
    let offs = match found {
        Ok((o, _)) => o,
        Err(e) => {
            tracing::warn!("kernel-balanced TCP connections are counted closed by sockops state callbacks (the tcp_destroy_sock hook needs {e})");
            return None;
        }
    };
    if offs[15..].iter().any(|&o| o != 0) {
        tracing::warn!("kernel-balanced TCP connections are counted closed by sockops state callbacks (struct tcp_sock does not open with struct sock_common)");
        return None;
    }
    let mut offsets = [0; 15];
    offsets.copy_from_slice(&offs[..15]);
    Some(DestroyHook { offsets })
}

/// Loads the `tcp_destroy_sock` raw tracepoint program
/// ([`super::programs::TCP_DESTROY`]) and attaches it through a link pinned
/// at `pin` (so it outlives the daemon, as the cgroup links do).
///
/// A link an earlier run pinned there is detached first, then this
/// build's program attached: the kernel cannot swap the program of a raw
/// tracepoint link, and two attached programs would count every close
/// twice; a socket destroyed in the gap between (microseconds) is counted
/// opened but not closed.
///
/// Errors: the program does not load (verifier) or attach — the daemon
/// then refuses to start rather than count opens without closes.
pub(super) fn attach_destroy_hook(
    ebpf: &mut aya::Ebpf,
    pin: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let p: &mut aya::programs::RawTracePoint = ebpf
        .program_mut(super::programs::TCP_DESTROY)
        .context("the eBPF object has no tcp_destroy_stats program")?
        .try_into()?;
    p.load()
        .context("loading the tcp_destroy_sock raw tracepoint (the TCP counters' close hook)")?;
    if pin.exists() {
        std::fs::remove_file(pin).with_context(|| format!("unpinning {}", pin.display()))?;
    }
    let id = p
        .attach(TRACEPOINT)
        .context("attaching the tcp_destroy_sock raw tracepoint")?;
    let link: aya::programs::links::FdLink = p.take_link(id)?.try_into()?;
    link.pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernels_destroy_hook_fields_are_found() {
        if !std::path::Path::new(super::super::tcp_sock::VMLINUX_BTF).exists() {
            assert!(
                std::env::var_os("STRAIT_NO_SKIP").is_none(),
                "STRAIT_NO_SKIP: no kernel BTF"
            );
            eprintln!("skipped: no kernel BTF");
            return;
        }
        let f = std::fs::File::open(super::super::tcp_sock::VMLINUX_BTF).unwrap();
        let (offs, _) = resolve(f, &DESTROY_FIELDS, &[]).unwrap();
        // `struct sock_common`'s address pair and port pair open it (the
        // kernel's socket hash lookups compare them as words).
        assert_eq!(&offs[7..10], &[4, 0, 12], "{offs:?}");
        assert!(offs[15..].iter().all(|&o| o == 0), "{offs:?}");
        assert!(destroy_hook().is_some());
    }
}
