//! `cargo xtask <command>`: the project's developer and CI commands.
mod bench;
mod build_ebpf;
mod cmd;
mod demo;
mod dist;
mod fuzz;
mod image;
mod layers;
mod setup;
mod symbol_order;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Strait developer and CI commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Build the eBPF programs for bpfel-unknown-none.
    BuildEbpf {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run setup, build the eBPF object, then every test tier.
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print proxy-userspace's module dependency graph; fail on an import
    /// cycle or an import against the layer order (xtask/src/layers.rs,
    /// mirrored in ARCHITECTURE.md). Parses the sources; no build.
    Layers {
        /// Show the graph among this module's children instead (e.g.
        /// `serve`, `upstream::cluster`); fails on their cycles.
        #[arg(long, value_name = "MODULE")]
        under: Option<String>,
        /// The crate's `src` directory (default: proxy-userspace/src).
        #[arg(long, value_name = "DIR")]
        root: Option<std::path::PathBuf>,
    },
    /// Run the bookinfo demo on a simulated node.
    Demo,
    /// Build the `strait` binary as it ships: the eBPF object, then the
    /// `dist` profile with glibc linked in, position-independent
    /// (`target/dist/strait`; xtask/src/dist.rs).
    Dist,
    /// Build the OCI image deploy/ runs (buildah, FROM scratch), check
    /// `strait --version` inside it, write target/strait-image.tar.
    Image {
        /// Cargo profile of the binary (dist: fat LTO, what ships).
        #[arg(long, default_value = "dist")]
        profile: String,
        /// Use this strait binary instead of building one.
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
    },
    /// Regenerate proxy-userspace/link/strait.order, the functions a node's
    /// daemon runs (laid out first by the linker: fewer resident pages of
    /// `.text`), from one quick bench-mesh round of the dist build. Root.
    SymbolOrder {
        /// List the functions of this strait binary instead of building
        /// the dist one.
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
    },
    /// Run every cargo-fuzz target (HTTP/1.1 codec, config loader, route
    /// matcher) from the committed seed corpora for a bounded time.
    Fuzz {
        /// Total fuzzing time over all targets, seconds (split evenly;
        /// the build comes on top).
        #[arg(long, default_value_t = 90)]
        seconds: u64,
    },
    /// Benchmarks beside direct, iptables DNAT, nginx and HAProxy; writes
    /// bench/results.md and bench/results.json.
    Bench {
        /// Which cases to run.
        #[arg(value_enum, default_value = "all")]
        suite: bench::Suite,
        /// Fewer, shorter runs (under 5 minutes).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::BuildEbpf { release } => build_ebpf::run(release).map(|_| ()),
        Command::Test { args } => test::run(&args),
        Command::Bench { suite, quick } => bench::run(suite, quick),
        Command::Layers { under, root } => layers::run(root, under),
        Command::Demo => demo::run(),
        Command::Dist => dist::run(),
        Command::Image { profile, binary } => image::run(&profile, binary),
        Command::Fuzz { seconds } => fuzz::run(seconds),
        Command::SymbolOrder { binary } => symbol_order::run(binary),
    }
}
