//! Strait's node daemon: the kernel data path loader (`datapath`), the L7
//! and TCP proxy in layers (`serve` → `upstream` → `transport` →
//! `runtime`, with the HTTP/1.1 codec in `proxy`), security policy
//! (`policy`), workload identity (`identity`), config sources (`sources`:
//! files, Kubernetes), telemetry and the admin API; `daemon` wires them
//! together. The `strait` binary is a thin CLI over this library. What
//! runs where and the import rule (checked by `cargo xtask layers`):
//! `ARCHITECTURE.md` at the repository root.
pub mod admin;
pub mod daemon;
pub mod datapath;
pub mod identity;
pub mod policy;
pub mod proxy;
pub mod runtime;
pub mod serve;
pub mod sources;
pub mod sys;
pub mod telemetry;
pub mod transport;
pub mod upstream;

/// The global allocator the `strait` binary (and the L7 benchmark proxy)
/// installs: mimalloc, whose per-thread free lists suit the proxy's many
/// small per-request allocations better than glibc malloc.
pub use mimalloc::MiMalloc as Allocator;
