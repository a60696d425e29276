//! `strait run` on a simulated [`Node`] for namespace tests: one builder
//! ([`Daemon::on`], [`Daemon::on_kube`]) with the options the test files
//! need (flags, environment, log file, how it is stopped), the log read
//! back and waited on, and the process stopped and reaped on drop (before
//! the node goes, as long as the `Daemon` is declared after the `Node`),
//! also while unwinding from a failed assertion. [`Guard`] does the same
//! for any other child process (a pause process, a peer's binary).
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Node;

/// How a [`Guard`] stops its process on drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: no drain, as a crash would.
    Kill,
    /// SIGTERM (the daemon drains and exits), then SIGKILL after 10 s.
    Term,
}

/// A child process stopped ([`Stop`]) and reaped on drop.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    stop: Stop,
}

impl Guard {
    /// Guards `child`, stopping it with `stop` on drop.
    pub fn new(child: Child, stop: Stop) -> Guard {
        Guard { child, stop }
    }

    /// Guards `child` with SIGKILL on drop.
    pub fn kill_on_drop(child: Child) -> Guard {
        Guard::new(child, Stop::Kill)
    }

    /// Guards `child` with SIGTERM, then SIGKILL after 10 s, on drop.
    pub fn term_on_drop(child: Child) -> Guard {
        Guard::new(child, Stop::Term)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The guarded child (e.g. to take its stdout).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends SIGTERM and waits `limit` at most for the process to exit:
    /// its exit status, or `None` while it still runs (the drop kills it).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.try_wait().is_some()
            || (self.stop == Stop::Term && self.terminate(Duration::from_secs(10)).is_some())
        {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `strait run` reads its configuration.
enum Source {
    Config(PathBuf),
    Kube(PathBuf),
}

/// Options of a [`Daemon`] before it starts; see [`Daemon::on`].
pub struct DaemonBuilder<'n> {
    node: &'n Node,
    source: Source,
    strait: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log_name: String,
    stop: Stop,
}

impl DaemonBuilder<'_> {
    /// Adds flags after the node's own (`--node`, `--pods-cgroup`,
    /// `--bpffs`, `--outbound`: see [`Node::strait_run`]).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Adds one flag or value.
    pub fn arg(self, arg: impl AsRef<OsStr>) -> Self {
        self.args([arg])
    }

    /// The flags most namespace tests run with: the admin API on
    /// `127.0.0.1:15000` (inside the node), `--drain-ms 200` (a quick
    /// stop), and `RUST_LOG=<rust_log>`.
    pub fn quick(self, rust_log: &str) -> Self {
        self.args(["--admin", "127.0.0.1:15000", "--drain-ms", "200"])
            .env("RUST_LOG", rust_log)
    }

    /// Sets an environment variable of the daemon (`RUST_LOG`, ...); the
    /// rest is inherited from the test.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// The log file's name in the node's directory ([`Node::tmp_dir`]);
    /// `strait.log` unless set. It is truncated at start; stdout and
    /// stderr both go there.
    pub fn log_name(mut self, name: &str) -> Self {
        self.log_name = name.to_string();
        self
    }

    /// Stops the daemon with SIGTERM on drop (it drains) instead of
    /// SIGKILL.
    pub fn sigterm_on_drop(mut self) -> Self {
        self.stop = Stop::Term;
        self
    }

    /// The `strait` binary to run; by default the one `cargo test` built
    /// beside the test executable (`target/debug/strait`).
    pub fn strait(mut self, path: impl Into<PathBuf>) -> Self {
        self.strait = Some(path.into());
        self
    }

    /// Starts `strait run` in the node's namespace (stdin `/dev/null`).
    /// Does not wait for readiness: see [`Daemon::wait_ready`],
    /// [`Daemon::wait_log`], [`Daemon::wait_file`].
    pub fn spawn(self) -> anyhow::Result<Daemon> {
        let strait = match self.strait {
            Some(s) => s,
            None => crate::demo::mesh::sibling("strait")?,
        };
        let mut cmd = match &self.source {
            Source::Config(dir) => self.node.strait_run(&strait, dir)?,
            Source::Kube(kubeconfig) => self.node.strait_run_kube(&strait, kubeconfig)?,
        };
        let log = self.node.tmp_dir().join(&self.log_name);
        let f = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .args(&self.args)
            .envs(self.env)
            .stdout(f.try_clone()?)
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", strait.display()))?;
        Ok(Daemon {
            proc: Guard::new(child, self.stop),
            log,
        })
    }
}

/// A running `strait run` on a node: its log, stopped and reaped on drop.
pub struct Daemon {
    proc: Guard,
    log: PathBuf,
}

/// How long the `wait_*` helpers wait: generous, the machine is shared.
pub const WAIT: Duration = Duration::from_secs(90);

impl Daemon {
    /// A builder for `strait run --config <config_dir>` on `node`.
    pub fn on<'n>(node: &'n Node, config_dir: &Path) -> DaemonBuilder<'n> {
        Self::builder(node, Source::Config(config_dir.to_path_buf()))
    }

    /// A builder for `strait run --kubeconfig <kubeconfig>` on `node`.
    pub fn on_kube<'n>(node: &'n Node, kubeconfig: &Path) -> DaemonBuilder<'n> {
        Self::builder(node, Source::Kube(kubeconfig.to_path_buf()))
    }

    fn builder(node: &Node, source: Source) -> DaemonBuilder<'_> {
        DaemonBuilder {
            node,
            source,
            strait: None,
            args: Vec::new(),
            env: Vec::new(),
            log_name: "strait.log".into(),
            stop: Stop::Kill,
        }
    }

    /// The whole log so far ("" before the file has any).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file's path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.proc.id()
    }

    /// Whether the daemon is still running.
    pub fn running(&mut self) -> bool {
        self.proc.try_wait().is_none()
    }

    /// Waits until `n` lines of the log contain `needle` ([`WAIT`] at
    /// most). Panics with the log when they do not.
    pub fn wait_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.lines().filter(|l| l.contains(needle)).count() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {n}× {needle:?} in the daemon's log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `path` exists (60 s at most). Panics with the log when
    /// it does not, or at once when the daemon exits.
    pub fn wait_file(&mut self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !path.exists() {
            if let Some(st) = self.proc.try_wait() {
                panic!("the daemon exited ({st}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} never appeared; log:\n{}",
                path.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the admin API at `admin` (inside `node`) answers
    /// `/ready` with 200, for `limit` at most. Panics with the log when it
    /// does not, or at once when the daemon exits.
    pub fn wait_ready(&mut self, node: &Node, admin: SocketAddr, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !matches!(
            node.run_in(|| super::http::get(admin, "localhost", "/ready", &[])),
            Ok(Ok((200, _)))
        ) {
            if let Some(st) = self.proc.try_wait() {
                panic!("the daemon exited ({st}); log:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit status. Panics
    /// with the log when it has not exited within `limit` (the drop then
    /// kills it); prints the log's end to stderr (shown with a failing
    /// test) when it exited unsuccessfully.
    pub fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        match self.proc.terminate(limit) {
            Some(status) => {
                if !status.success() {
                    eprintln!(
                        "the daemon exited with {status}; log:\n{}",
                        self.log_tail(40)
                    );
                }
                status
            }
            None => panic!(
                "the daemon did not exit within {limit:?} of SIGTERM; log:\n{}",
                self.log()
            ),
        }
    }

    /// Polls `f` every `every` until it returns true; after `limit` panics
    /// with `what` and the log.
    pub fn eventually(
        &self,
        what: &str,
        limit: Duration,
        every: Duration,
        mut f: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !f() {
            assert!(
                Instant::now() < deadline,
                "{what}: never happened; daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(every);
        }
    }
}

/// The CA embedded in one node's daemon (`strait run --ca-dir`) serving
/// the daemons of other nodes over the link (`--ca-listen` on the node's
/// address, port 15012, as istiod's), each node authenticated by a
/// bearer token `<node name>-token-0123456789` (`--ca-tokens`).
pub struct MeshCa {
    /// The CA's directory (`<node tmp>/ca`): `root-cert.pem`, `ca-key.pem`.
    pub dir: PathBuf,
    /// Where other nodes ask it: `<node address>:15012`.
    pub listen: String,
    tokens: PathBuf,
}

impl MeshCa {
    /// The CA of `node` for the nodes named `clients` (writes the token
    /// file in the node's directory).
    pub fn new(node: &Node, clients: &[&Node]) -> anyhow::Result<MeshCa> {
        let tokens = node.tmp_dir().join("tokens");
        let text: String = clients
            .iter()
            .map(|c| format!("{} {}\n", Self::token(c), c.name()))
            .collect();
        std::fs::write(&tokens, text).with_context(|| format!("write {}", tokens.display()))?;
        Ok(MeshCa {
            dir: node.tmp_dir().join("ca"),
            listen: format!("{}:15012", node.gateway()),
            tokens,
        })
    }

    fn token(node: &Node) -> String {
        format!("{}-token-0123456789", node.name())
    }

    /// The root certificate the CA writes at start.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root-cert.pem")
    }

    /// The flags of the CA node's daemon: `--ca-dir --ca-listen
    /// --ca-tokens`.
    pub fn server_args(&self) -> Vec<OsString> {
        vec![
            "--ca-dir".into(),
            self.dir.clone().into(),
            "--ca-listen".into(),
            self.listen.clone().into(),
            "--ca-tokens".into(),
            self.tokens.clone().into(),
        ]
    }

    /// The flags of `client`'s daemon (writes its token file in its
    /// directory): `--ca-address --ca-root --ca-token-file`.
    pub fn client_args(&self, client: &Node) -> anyhow::Result<Vec<OsString>> {
        let token = client.tmp_dir().join("token");
        std::fs::write(&token, format!("{}\n", Self::token(client)))
            .with_context(|| format!("write {}", token.display()))?;
        Ok(vec![
            "--ca-address".into(),
            format!("https://{}", self.listen).into(),
            "--ca-root".into(),
            self.root().into(),
            "--ca-token-file".into(),
            token.into(),
        ])
    }
}
