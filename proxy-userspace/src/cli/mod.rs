//! Subcommand implementations. Each prints to stdout/stderr and returns the
//! process exit code.
pub mod analyze;
pub mod compile;
pub mod validate;

use std::io::Write;

/// Prints a line to stdout; a closed pipe (`strait ... | head`) is not an
/// error worth a panic.
pub fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}
