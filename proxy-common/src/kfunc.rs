//! Placeholder helper ids through which eBPF programs call kfuncs: aya
//! neither emits nor relocates kfunc calls, so a program calls one as a
//! helper with one of these ids (no helper has them) and the loader
//! rewrites each such `call` into a kfunc call (`src_reg`
//! `BPF_PSEUDO_KFUNC_CALL`, `imm` the kfunc's id in the running kernel's
//! BTF; `proxy-userspace/src/datapath/kfunc.rs`).

/// `void *bpf_cast_to_kern_ctx(void *ctx)`: the context as the kernel's
/// own type (for `cgroup/sock` programs, `struct sock`); Linux ≥ 6.2,
/// inlined by the verifier.
pub const CAST_TO_KERN_CTX: u32 = 0x5354_0001;
/// `void *bpf_rdonly_cast(const void *obj, u32 btf_id)`: `obj` as a
/// read-only pointer to the kernel type `btf_id`; Linux ≥ 6.2, inlined.
pub const RDONLY_CAST: u32 = 0x5354_0002;
