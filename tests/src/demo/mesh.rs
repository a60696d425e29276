//! A simulated node running bookinfo under `strait run`: the harness the
//! demo and the end-to-end tests share.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::node::bookinfo::{self, BookinfoHandle, Options, Upstream};
use crate::node::{http, Node, PodSpec};
use crate::privileged::Privileged;

/// Admin API address of the daemon, inside the node's namespace.
pub const ADMIN: &str = "127.0.0.1:15000";

/// What to start.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// The `strait` binary.
    pub strait: PathBuf,
    /// The `bookinfo-app` binary.
    pub app: PathBuf,
    /// Kubernetes YAML with bookinfo's Services and Deployments.
    pub platform: PathBuf,
    /// Files copied into the config directory before the daemon starts
    /// (DestinationRules, first routing step).
    pub config: Vec<PathBuf>,
    /// Upstream timeout of every app (None: bookinfo's own).
    pub app_timeout_ms: Option<u64>,
    /// Node index (pod CIDR 10.244.<index>.0/24); distinct per concurrent test.
    pub node_index: u8,
    /// Run the daemon with the embedded CA (`--ca-dir`): workload
    /// identities, so traffic between meshed pods goes through HBONE
    /// (mutual TLS). `false`: no CA, everything in plain text.
    pub identity: bool,
}

/// One `GET /productpage` as the client saw it.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was sent, milliseconds after the client started.
    pub t_ms: u64,
    /// HTTP status (0 when the request failed outright).
    pub status: u16,
    /// Time to the whole response.
    pub latency: Duration,
    /// The JSON answer (Null when none).
    pub body: serde_json::Value,
}

impl Sample {
    /// The reviews version that answered, if any.
    pub fn reviews_version(&self) -> Option<&str> {
        self.body["reviews"]["version"].as_str()
    }
    /// The ratings answer inside reviews (absent for reviews v1).
    pub fn ratings(&self) -> &serde_json::Value {
        &self.body["reviews"]["ratings"]
    }
}

/// The running node, bookinfo and daemon; dropping it stops the daemon
/// (SIGTERM) and removes the node.
pub struct Mesh {
    daemon: Option<Child>,
    bookinfo: Option<BookinfoHandle>,
    node: Node,
    config_dir: PathBuf,
    log: PathBuf,
    opts: MeshOptions,
    api: Option<super::kube_api::ApiServer>,
}

impl Mesh {
    /// Builds the node and bookinfo, writes the config directory and starts
    /// `strait run`; returns once `/ready` answers 200 (20 s at most).
    pub fn start(p: &Privileged, opts: MeshOptions) -> anyhow::Result<Mesh> {
        Self::start_with(p, opts, None)
    }

    /// [`Mesh::start`] with a real API server in the node (see
    /// [`super::kube_api`]): the binary `apiserver` is started, `crds`
    /// (Istio's CRDs) and the node's config are applied with kubectl, and
    /// the daemon runs with `--kubeconfig`. The config files of `opts` are
    /// applied too.
    pub fn start_kube(
        p: &Privileged,
        opts: MeshOptions,
        apiserver: &Path,
        crds: &Path,
    ) -> anyhow::Result<Mesh> {
        Self::start_with(p, opts, Some((apiserver, crds)))
    }

    fn start_with(
        p: &Privileged,
        opts: MeshOptions,
        kube: Option<(&Path, &Path)>,
    ) -> anyhow::Result<Mesh> {
        let mut node = Node::new(&p.cgroup2, "node-1", opts.node_index)?;
        let app_opts = Options {
            timeout_ms: opts.app_timeout_ms,
            ..Options::new(&opts.app, Upstream::Vip)
        };
        let bookinfo = bookinfo::start(&mut node, &opts.platform, &app_opts)?;
        node.add_pod(PodSpec::new("client", &[("app", "client")]))?;
        let config_dir = node.tmp_dir().join("config");
        node.write_config(&config_dir)?;
        for f in &opts.config {
            let name = f.file_name().context("config file name")?;
            std::fs::copy(f, config_dir.join(name))
                .with_context(|| format!("copying {}", f.display()))?;
        }
        let api = match kube {
            None => None,
            Some((apiserver, crds)) => {
                let api = super::kube_api::ApiServer::start(&node, apiserver)?;
                api.kubectl(&node, &["apply", "-f", &crds.display().to_string()])?;
                api.kubectl(
                    &node,
                    &[
                        "wait",
                        "--for",
                        "condition=established",
                        "--timeout=60s",
                        "crd",
                        "--all",
                    ],
                )?;
                api.apply_node_config(&node, &config_dir)?;
                for f in &opts.config {
                    api.kubectl(&node, &["apply", "-f", &f.display().to_string()])?;
                }
                Some(api)
            }
        };
        let log = node.tmp_dir().join("strait.log");
        let mut mesh = Mesh {
            api,
            daemon: None,
            bookinfo: Some(bookinfo),
            node,
            config_dir,
            log,
            opts,
        };
        mesh.start_daemon()?;
        Ok(mesh)
    }

    /// Starts (or restarts) `strait run` and waits for `/ready`.
    pub fn start_daemon(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match &self.api {
            Some(api) => self
                .node
                .strait_run_kube(&self.opts.strait, &api.kubeconfig)?,
            None => self.node.strait_run(&self.opts.strait, &self.config_dir)?,
        };
        cmd.args(["--admin", ADMIN, "--drain-ms", "1000"]);
        if self.opts.identity {
            // Workload identity from the CA embedded in the daemon; the
            // root is generated once into the node's directory and kept
            // across daemon restarts.
            cmd.arg("--ca-dir").arg(self.node.tmp_dir().join("ca"));
        }
        let child = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.opts.strait.display()))?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.admin("/ready") {
                return Ok(());
            }
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("strait run exited with {status}:\n{}", self.log_tail(40));
            }
            if Instant::now() > deadline {
                bail!("strait run not ready after 20 s:\n{}", self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the daemon with SIGKILL (no drain), as a crash would.
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop_daemon(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut c = self
            .daemon
            .take()
            .ok_or_else(|| anyhow!("daemon not running"))?;
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("strait run did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running daemon's process id.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// The `strait` binary the mesh runs.
    pub fn strait_bin(&self) -> &Path {
        &self.opts.strait
    }

    /// GET `path` from the daemon's admin API (inside the node).
    pub fn admin(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let addr: SocketAddr = ADMIN.parse().expect("static address");
        self.node
            .run_in(|| http::get(addr, "localhost", path, &[]))
            .context("entering the node namespace")?
    }

    /// GET `path` from the admin API as text.
    pub fn admin_text(&self, path: &str) -> anyhow::Result<String> {
        let out = self
            .node
            .command("curl")?
            .args(["-sS", "-m", "5", &format!("http://{ADMIN}{path}")])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// kubectl against the mesh's API server (see [`Mesh::start_kube`]).
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.api
            .as_ref()
            .ok_or_else(|| anyhow!("this mesh has no API server"))?
            .kubectl(&self.node, args)
    }

    /// Runs `kubectl <args>` and waits until the daemon serves a new
    /// snapshot (5 s at most); returns how long that took after kubectl
    /// returned.
    pub fn kubectl_and_wait(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let before = self.admin("/config_dump")?.1;
        self.kubectl(args)?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.admin("/config_dump")?.1 != before {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "the daemon did not pick up kubectl {} within 5 s:\n{}",
            args.join(" "),
            self.log_tail(20)
        )
    }

    /// The config directory the daemon watches.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Replaces the routing file `name` in the config directory with
    /// `sources` concatenated (atomically: written aside, then renamed) and
    /// waits until the daemon serves a different snapshot (5 s at most).
    pub fn set_config(&self, name: &str, sources: &[&Path]) -> anyhow::Result<Duration> {
        let mut text = String::new();
        for s in sources {
            text.push_str(
                &std::fs::read_to_string(s).with_context(|| format!("reading {}", s.display()))?,
            );
            text.push_str("\n---\n");
        }
        self.write_config_file(name, &text)
    }

    /// Writes `text` as config file `name` atomically and waits for the
    /// daemon to serve a new snapshot; returns how long that took.
    pub fn write_config_file(&self, name: &str, text: &str) -> anyhow::Result<Duration> {
        let before = self.admin("/config_dump")?.1;
        // Hidden files are not read, so the half-written file is never seen.
        let tmp = self.config_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        let started = Instant::now();
        std::fs::rename(&tmp, self.config_dir.join(name))?;
        while started.elapsed() < Duration::from_secs(5) {
            if self.admin("/config_dump")?.1 != before {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "the daemon did not pick up {name} within 5 s:\n{}",
            self.log_tail(20)
        )
    }

    /// Sends `n` sequential `GET /productpage` to productpage's ClusterIP
    /// from the client pod (through the kernel socket hooks), with `headers`.
    pub fn productpage(&self, n: usize, headers: &[(&str, &str)]) -> anyhow::Result<Vec<Sample>> {
        let vip = self
            .bookinfo
            .as_ref()
            .and_then(|b| b.productpage_vip())
            .ok_or_else(|| anyhow!("productpage has no ClusterIP"))?;
        let mut cmd = self.client_command()?;
        cmd.args([
            "--url",
            &format!("http://{vip}/productpage"),
            "--count",
            &n.to_string(),
        ]);
        for (k, v) in headers {
            cmd.args(["--header", &format!("{k}: {v}")]);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "mesh-client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse_samples(&String::from_utf8_lossy(&out.stdout))
    }

    /// `mesh-client` in the client pod (in its netns and the pods cgroup).
    pub fn client_command(&self) -> anyhow::Result<Command> {
        let client = self
            .node
            .pod("default", "client")
            .ok_or_else(|| anyhow!("no client pod"))?;
        let mut cmd = client.command(mesh_client_path()?)?;
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The daemon's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let _ = self.stop_daemon();
        }
        self.bookinfo.take();
        self.api.take();
    }
}

/// Parses `mesh-client` output: one JSON object per line.
pub fn parse_samples(out: &str) -> anyhow::Result<Vec<Sample>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).with_context(|| format!("bad line {l:?}"))?;
            Ok(Sample {
                t_ms: v["t_ms"].as_u64().unwrap_or(0),
                status: v["status"].as_u64().unwrap_or(0) as u16,
                latency: Duration::from_micros(v["latency_us"].as_u64().unwrap_or(0)),
                body: v["body"].clone(),
            })
        })
        .collect()
}

/// The `mesh-client` binary beside the running executable.
pub fn mesh_client_path() -> anyhow::Result<PathBuf> {
    sibling("mesh-client")
}

/// A binary of this workspace beside the running executable (cargo puts
/// binaries in `target/<profile>/`, test executables in `deps/` below it).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no {name} beside {}: build the workspace's binaries first",
                exe.display()
            )
        })
}
