//! The `strait` command line.
use clap::Parser;

/// Strait: a sidecarless service-mesh data plane for Linux nodes.
#[derive(Parser)]
#[command(name = "strait", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
