//! `cargo xtask <command>`: the project's developer and CI commands.
mod build_ebpf;
mod cmd;
mod setup;
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
    /// Run the bookinfo demo on a simulated node.
    Demo,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::BuildEbpf { release } => build_ebpf::run(release).map(|_| ()),
        Command::Test { args } => test::run(&args),
        Command::Demo => {
            anyhow::bail!(
                "`cargo xtask demo` lands with the node daemon issue (#6); \
                 until then run `cargo xtask test`"
            )
        }
    }
}
