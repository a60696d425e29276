//! kfunc calls in the embedded eBPF object, which aya 0.14 neither emits
//! nor relocates: a program calls a kfunc as a helper with a placeholder
//! id (`proxy_common::kfunc`), and [`patch`] rewrites each such `call` in
//! the named program sections of a copy of the object into a kfunc call —
//! `src_reg` = `BPF_PSEUDO_KFUNC_CALL` (2), `imm` = the kfunc's `FUNC` id
//! in the running kernel's BTF, `off` 0 (vmlinux, not a module) — as
//! libbpf does for C programs' `__ksym` externs
//! (`bpf_object__relocate_data`, `RELO_EXTERN_CALL`). The verifier then
//! checks the call against the kfunc's prototype; the casts used here
//! (`bpf_cast_to_kern_ctx`, `bpf_rdonly_cast`) it inlines into a move.
use anyhow::{bail, Context};
use object::{Object, ObjectSection};

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_PSEUDO_KFUNC_CALL` in the `src_reg` nibble (the upper half of
/// the registers byte on a little-endian object).
const KFUNC_SRC: u8 = 2 << 4;

/// An eBPF object copied into 8-byte aligned memory (aya's parser wants
/// the ELF aligned, as `include_bytes_aligned!` gives it).
pub(super) struct Patched {
    words: Vec<u64>,
    len: usize,
}

impl Patched {
    /// The object's bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has
        // no alignment requirement.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// A copy of `object` (a little-endian eBPF ELF) in which every helper
/// call to a placeholder id of `kfuncs` — (placeholder, kfunc BTF id) —
/// in the sections `sections` is a kfunc call to that id.
///
/// Errors: `object` is not an ELF, a section is missing, or none of its
/// calls is to a placeholder (the object and this loader disagree).
pub(super) fn patch(
    object: &[u8],
    sections: &[&str],
    kfuncs: &[(u32, u32)],
) -> anyhow::Result<Patched> {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    let len = object.len();
    // SAFETY: `words` has room for `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
    bytes.copy_from_slice(object);
    let file = object::File::parse(object).context("parsing the eBPF object")?;
    if !file.is_little_endian() {
        bail!("the eBPF object is big-endian");
    }
    for name in sections {
        let section = file
            .section_by_name(name)
            .with_context(|| format!("section {name} missing from the eBPF object"))?;
        let (start, size) = section
            .file_range()
            .with_context(|| format!("section {name} has no file data"))?;
        let (start, size) = (start as usize, size as usize);
        let mut patched = 0;
        for ins in bytes[start..start + size].chunks_exact_mut(8) {
            let imm = u32::from_le_bytes([ins[4], ins[5], ins[6], ins[7]]);
            if ins[0] != CALL || ins[1] != 0 || ins[2] != 0 || ins[3] != 0 {
                continue;
            }
            if let Some((_, id)) = kfuncs.iter().find(|(p, _)| *p == imm) {
                ins[1] = KFUNC_SRC;
                ins[4..8].copy_from_slice(&id.to_le_bytes());
                patched += 1;
            }
        }
        if patched == 0 {
            bail!("no kfunc placeholder call in section {name}");
        }
    }
    Ok(Patched { words, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_calls_become_kfunc_calls_and_nothing_else_changes() {
        let object = super::super::EBPF_OBJECT;
        if object.is_empty() {
            eprintln!("SKIP: built without the eBPF object");
            return;
        }
        let ids = [
            (proxy_common::kfunc::CAST_TO_KERN_CTX, 1111),
            (proxy_common::kfunc::RDONLY_CAST, 2222),
        ];
        let p = patch(object, &["cgroup/sock_release"], &ids).unwrap();
        let (a, b) = (object, p.bytes());
        assert_eq!(a.len(), b.len());
        let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        // Per call: the registers byte and the immediate (4 bytes, some
        // of which may be equal by chance) differ, nothing else.
        assert!(!diff.is_empty());
        let calls: Vec<&[u8]> = b
            .chunks_exact(8)
            .filter(|i| i[0] == CALL && i[1] == KFUNC_SRC)
            .collect();
        assert_eq!(calls.len(), 2, "one call to each kfunc");
        let imms: Vec<u32> = calls
            .iter()
            .map(|i| u32::from_le_bytes([i[4], i[5], i[6], i[7]]))
            .collect();
        assert_eq!(imms, [1111, 2222]);
        for i in diff {
            let at = i % 8;
            assert!(at == 1 || at >= 4, "byte {at} of an instruction changed");
        }
        assert!(
            patch(object, &["cgroup/connect4"], &ids).is_err(),
            "no placeholder there"
        );
    }
}
