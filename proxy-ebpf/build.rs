//! Asks bpf-linker for BTF: the socket-local storage map (`SK_STORAGE`)
//! is a BTF-defined map, and the kernel only creates `BPF_MAP_TYPE_SK_STORAGE`
//! maps with BTF key and value types. The debug info BTF is made from comes
//! from `debug = 2` in the profiles.
fn main() {
    println!("cargo:rustc-link-arg-bins=--btf");
}
