//! Network namespaces by name (`/run/netns/<name>`, as `ip netns` keeps
//! them), and running code or processes inside one.
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Where `ip netns` bind-mounts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Path of the named namespace's handle.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `ip ARGS...`; an error carries the command line and ip's stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (iproute2; `cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip -n NETNS -batch -` with one command per line, so a pod's setup
/// costs one process instead of one per command.
pub fn ip_batch(netns: &str, commands: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run `ip` (iproute2; `cargo xtask setup` installs it)")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(commands.join("\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`ip -n {netns} -batch` failed on [{}]: {}",
            commands.join("; "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates the named namespace (`ip netns add`).
pub fn add(name: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", name])
}

/// Deletes the named namespace (`ip netns del`); a missing one is not an
/// error. The kernel frees the namespace, and destroys the veths in it
/// (and so their peers), once no process is left inside.
pub fn del(name: &str) {
    if path(name).exists() {
        if let Err(e) = ip(&["netns", "del", name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// Runs `f` on a thread that has joined the named network namespace and
/// returns its result; the caller's thread stays where it was. Sockets `f`
/// creates belong to that namespace and may be used from any thread after.
/// A panic in `f` is resumed on the caller's thread.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = File::open(path(name))?;
    std::thread::scope(|s| {
        let joined = s.spawn(move || {
            setns_net(&ns)?;
            Ok(f())
        });
        match joined.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Makes `cmd` join the named network namespace and, when given, the cgroup
/// directory `cgroup`, between fork and exec. Both files are opened now, so
/// the child only makes two system calls (nothing that allocates).
///
/// Unlike `ip netns exec` it does not remount `/sys`; the process sees its
/// namespace's interfaces through netlink and `/proc/net`, which is all the
/// test programs use.
pub fn enter(cmd: &mut Command, netns: &str, cgroup: Option<&Path>) -> io::Result<()> {
    let ns = File::open(path(netns))?;
    let procs = match cgroup {
        Some(dir) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?,
        ),
        None => None,
    };
    // SAFETY: the closure only calls setns(2) and write(2) on descriptors
    // opened above, both async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            setns_net(&ns)?;
            if let Some(procs) = &procs {
                // "0" moves the writing process: the child itself.
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

fn setns_net(ns: &File) -> io::Result<()> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    use std::os::fd::AsFd;
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).map_err(io::Error::from)
}

/// Sets a sysctl under `/proc/sys/net` inside the named namespace (`key` like
/// `ipv4/ip_forward`); `/proc/sys/net` shows the namespace of the thread that
/// opens it.
pub fn sysctl(netns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let file = format!("/proc/sys/net/{key}");
    run_in(netns, || std::fs::write(&file, value))
        .and_then(|r| r)
        .with_context(|| format!("set {file}={value} in netns {netns}"))
}
