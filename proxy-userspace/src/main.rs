//! The `strait` command line: parse with clap, dispatch to `cli/`.
mod cli;

#[global_allocator]
static GLOBAL: strait::Allocator = strait::Allocator;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Strait: a sidecarless service-mesh data plane for Linux nodes.
#[derive(Parser)]
#[command(name = "strait", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level of `run` (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,
}

/// Top-level commands.
#[derive(Subcommand)]
enum Command {
    /// Validate Istio and Kubernetes YAML like `istioctl validate`: exit 0
    /// when every resource is valid, 1 with every error listed otherwise.
    Validate {
        /// Files or directories (recursively: *.yaml, *.yml, *.json).
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Analyze configuration like `istioctl analyze` (IST0xxx messages):
    /// exit 0 when nothing at Error level was found, 79 otherwise.
    Analyze {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the node daemon: attach the eBPF programs, serve the mesh's
    /// traffic with the config directory's routes until SIGTERM/SIGINT.
    Run(Box<strait::daemon::cli::RunCmd>),
    /// Detach the node's eBPF programs and remove its pinned maps.
    Cleanup(strait::daemon::cli::CleanupCmd),
    /// Workload identity: Strait's CA (Istio's CA API) and a node's certificates.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Experimental tools (like `istioctl x`).
    X {
        #[command(subcommand)]
        command: XCommand,
    },
}

/// `strait x ...`.
#[derive(Subcommand)]
enum XCommand {
    /// Authorization tools.
    Authz {
        #[command(subcommand)]
        command: AuthzCommand,
    },
}

/// `strait x authz ...`.
#[derive(Subcommand)]
enum AuthzCommand {
    /// Show the AuthorizationPolicies and RequestAuthentications that apply
    /// to a pod and how Strait enforces them (like `istioctl x authz check`).
    Check {
        /// The pod: `name`, `name.namespace` or `namespace/name`.
        pod: String,
        /// Configuration files or directories.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The node whose daemon is asked about (default: every workload
        /// counts as local).
        #[arg(long)]
        node: Option<String>,
    },
}

/// `strait config ...`.
#[derive(Subcommand)]
enum ConfigCommand {
    /// Compile the configuration and print the MeshSnapshot.
    Compile {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Json)]
        output: Format,
    },
}

/// `strait ca ...`.
#[derive(Subcommand)]
enum CaCommand {
    /// Serve Istio's CA API (istio.v1.auth.IstioCertificateService) to the
    /// mesh's nodes until SIGTERM/SIGINT.
    Serve(Box<strait::daemon::cli::CaServeCmd>),
    /// Show a node's workload certificates (its admin API's /certs), like
    /// `istioctl proxy-config secret`. No key material is ever shown.
    Inspect {
        /// The node's admin API.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
        admin: std::net::SocketAddr,
        /// Print /certs as JSON.
        #[arg(short = 'o', long = "output", value_enum)]
        output: Option<Format>,
    },
}

/// Output format of `config compile`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Pretty JSON.
    Json,
    /// YAML.
    Yaml,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => cli::validate::run(&files),
        Command::Analyze { paths } => cli::analyze::run(&paths),
        Command::Config {
            command: ConfigCommand::Compile { paths, output },
        } => cli::compile::run(&paths, output),
        Command::Run(cmd) => {
            strait::daemon::cli::init_logging(&cli.log_level);
            report(strait::daemon::run((*cmd).into_args()))
        }
        Command::Cleanup(cmd) => report(cmd.run()),
        Command::Ca {
            command: CaCommand::Serve(cmd),
        } => {
            strait::daemon::cli::init_logging(&cli.log_level);
            report((*cmd).into_args().and_then(strait::daemon::ca::serve_ca))
        }
        Command::Ca {
            command: CaCommand::Inspect { admin, output },
        } => cli::ca::run(admin, output.is_some()),
        Command::X {
            command:
                XCommand::Authz {
                    command: AuthzCommand::Check { pod, files, node },
                },
        } => cli::authz::run(&pod, &files, node),
    }
}

/// Exit 0, or print the error on one line and exit 1.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strait: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
