//! [`Datapath`]: loads the socket programs, attaches them to the pods
//! cgroup, pins maps and links so the data path outlives the daemon, and
//! reuses them when the daemon starts again.
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use aya::{
    programs::{
        links::{CgroupAttachMode, FdLink, PinnedLink},
        CgroupSock, CgroupSockAddr, SockOps,
    },
    Ebpf,
};
use proxy_common::{ProxyConfig, TcpStats, TcpStatsKey, TcpStatsKey6, Workload};
use strait_config::snapshot::{L4Protocol, L4Service};
use strait_config::MeshSnapshot;

use super::{
    bpffs, counters, layout, maps::Maps, migrate, orig_dst, programs, tables, xdp::DenyTries, xlb,
    ApplyReport, DenyReport, ExternalVip, SourcePrefix, UplinkConfig, XlbReport,
};

/// A pinned map [`Datapath::new`] replaced: unpinned, but held (the
/// earlier programs still use it) until this build's programs are swapped
/// in.
struct OldMap {
    name: &'static str,
    old: layout::Layout,
    /// Migrated (entries copied), not reset.
    copy: bool,
    data: aya::maps::MapData,
}

/// The maps [`Datapath::new`] replaced.
#[derive(Default)]
struct Replaced {
    maps: Vec<OldMap>,
}

impl Replaced {
    /// Copies each migrated map's entries into the map pinned under its
    /// name now.
    fn copy_into(&self, pin_dir: &Path, overwrite: migrate::Overwrite) -> anyhow::Result<()> {
        use std::os::fd::AsFd;
        for m in self.maps.iter().filter(|m| m.copy) {
            let path = pin_dir.join(m.name);
            let new = aya::maps::MapData::from_pin(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let n = migrate::copy(
                m.data.fd().as_fd(),
                new.fd().as_fd(),
                m.old.key_size,
                m.old.value_size,
                m.old.per_cpu(),
                overwrite,
            )
            .with_context(|| format!("copying the entries of {} into its new layout", m.name))?;
            tracing::info!(map = m.name, entries = n, "pinned map entries copied");
        }
        Ok(())
    }

    /// Puts the old maps back under their names (a failed start changes
    /// nothing): whatever was pinned there since is removed.
    fn restore(&mut self, pin_dir: &Path) {
        for m in self.maps.drain(..) {
            let path = pin_dir.join(m.name);
            let _ = std::fs::remove_file(&path);
            if let Err(e) = m.data.pin(&path) {
                tracing::error!(
                    map = m.name,
                    "could not pin the old map back at {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// Where and how the data path is set up.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// Node name: pins go to `<bpffs>/strait/<node>/`, so several simulated
    /// nodes on one host keep separate data paths.
    pub node: String,
    /// bpffs mount point (default `/sys/fs/bpf`; mounted when missing).
    pub bpffs: PathBuf,
    /// The node proxy's outbound listener that REDIRECT services and
    /// meshed pod IPs are sent to (default `127.0.0.1:15001`, Istio's
    /// outbound capture port).
    pub outbound: SocketAddrV4,
    /// The node proxy's IPv6 outbound listener that REDIRECT-mode IPv6
    /// VIPs and meshed pods' IPv6 addresses are sent to; `None` (the
    /// default): such TCP connections are refused (fail closed).
    pub outbound6: Option<std::net::SocketAddrV6>,
    /// Count kernel-balanced connections in `TCP_STATS` (Istio's
    /// `istio_tcp_*` with `reporter="source"`; default on). Off only to
    /// measure what the counters cost (`cargo xtask bench l4-counters`):
    /// the sockops program then neither counts nor asks for state
    /// callbacks, and no `istio_tcp_*` series appear for such connections.
    pub tcp_stats: bool,
    /// With [`Self::tcp_stats`]: count closes with the `cgroup/sock_release`
    /// program where the kernel has the kfuncs it needs (default on: one
    /// run per socket at the application's `close()` instead of the sockops
    /// state callbacks); off: always the state callbacks, as on kernels
    /// without those kfuncs (to test that path, and to compare the two).
    pub tcp_stats_release: bool,
    /// Replace pinned maps whose layout this build can neither use nor
    /// migrate with empty ones (`strait run --reset-maps`) instead of
    /// refusing to start.
    pub reset_maps: bool,
    /// Redirect same-node hops through the proxy socket to socket
    /// (`strait run --sockmap`, see `datapath::sockmap`): the pods
    /// cgroup's sockops program inserts the pods' ends of such pairs only
    /// when this is set (default off).
    pub sockmap: bool,
}

impl DatapathConfig {
    /// Defaults for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            bpffs: PathBuf::from(bpffs::DEFAULT_BPFFS),
            outbound: SocketAddrV4::new(
                std::net::Ipv4Addr::LOCALHOST,
                proxy_common::ports::OUTBOUND,
            ),
            outbound6: None,
            tcp_stats: true,
            tcp_stats_release: true,
            sockmap: false,
            reset_maps: false,
        }
    }

    /// `<bpffs>/strait/<node>`: the pinned maps, the pinned cgroup links
    /// under `links/`, the uplink XDP link under `uplink/` and the maps'
    /// layout versions under `layout/`.
    pub fn pin_dir(&self) -> PathBuf {
        bpffs::pin_dir(&self.bpffs, &self.node)
    }
}

/// Per-service counters summed over CPUs (Envoy's `upstream_cx_total` and
/// `upstream_cx_none_healthy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Connections balanced or redirected.
    pub connections: u64,
    /// Connections refused for want of a usable backend.
    pub no_backend: u64,
}

/// Entry counts of the kernel tables (see [`Datapath::kernel_entries`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelEntries {
    /// `SERVICES` entries.
    pub services: usize,
    /// `BACKENDS` slots over all backend sets.
    pub backend_slots: usize,
    /// `MAGLEV` tables (64 KiB each).
    pub maglev_tables: usize,
    /// `WORKLOADS` entries.
    pub workloads: usize,
}

/// The kernel socket data path of one node.
pub struct Datapath {
    ebpf: Ebpf,
    maps: Maps,
    tables: tables::ServiceTables,
    pin_dir: PathBuf,
    links: Vec<PinnedLink>,
    /// Closes are counted by [`programs::TCP_STATS_RELEASE`], attached
    /// beside [`programs::SOCKET`] (see [`tcp_release`]).
    tcp_release: bool,
    deny: DenyTries,
    external_vips: xlb::ExternalVips,
    external_vips6: super::xlb6::ExternalVips6,
    uplink: Option<String>,
    /// The pinned XDP link on the uplink (`<pin dir>/uplink/xdp_lb@<iface>`).
    uplink_link: Option<PinnedLink>,
    /// The uplink's MTU could not be read the last time (warned).
    uplink_mtu_failed: bool,
    /// Taken by every read-modify-write of the uplink config maps (shared
    /// with the [`super::uplink_mtu::MtuWatch`]).
    uplink_lock: super::uplink_mtu::UplinkConfigLock,
    /// Pinned maps replaced by [`Self::new`] (migrated or reset), held
    /// until this build's programs run in every link.
    replaced: Replaced,
    /// This node's name (which workloads' policies the deny rules enforce).
    node: String,
}

impl Datapath {
    /// Loads the embedded object with its maps pinned under
    /// [`DatapathConfig::pin_dir`]: maps pinned by an earlier run are reused
    /// (with their services, so traffic never stops across a restart);
    /// missing ones are created and pinned. Mounts bpffs when missing and
    /// writes the outbound listener address. Nothing is attached yet.
    ///
    /// Before anything is touched, every pinned map's layout is compared
    /// with this build's ([`super::layout`]): same → reused; a grown
    /// capacity → a new map is created and pinned, and the old entries are
    /// copied into it (the old programs keep the old map until
    /// [`Self::attach`] / [`Self::attach_each`] / [`Self::attach_uplink`]
    /// swap this build's programs in; then what they wrote meanwhile is
    /// copied too); anything else → refused (nothing changed), or replaced
    /// by an empty map with [`DatapathConfig::reset_maps`].
    ///
    /// Errors: not root, no BPF, bpffs cannot be mounted, the binary was
    /// built without its eBPF object, a pinned map's layout differs (the
    /// message names each map, both layouts and the way out). On an error
    /// after a migration began, the old maps are pinned back.
    pub fn new(config: &DatapathConfig) -> anyhow::Result<Self> {
        if super::EBPF_OBJECT.is_empty() {
            bail!("this strait binary was built without its eBPF object: run `cargo xtask build-ebpf` and rebuild");
        }
        bpffs::ensure_mounted(&config.bpffs)?;
        let pin_dir = config.pin_dir();
        let want = layout::expected(super::EBPF_OBJECT)?;
        // Decided for every map before any is touched.
        let plan = layout::plan(&pin_dir, &want, config.reset_maps)?;
        super::xdp::unpin_v1_summary(&pin_dir)?;
        for name in layout::unknown_pins(&pin_dir) {
            tracing::warn!(
                pin = %pin_dir.join(&name).display(),
                "a pinned object this build does not use (an earlier build's map?) is left as it is"
            );
        }
        std::fs::create_dir_all(pin_dir.join("links"))
            .with_context(|| format!("creating {}", pin_dir.display()))?;
        super::raise_memlock();
        let mut replaced = Replaced::default();
        for (name, new, action) in &plan.actions {
            let old = match action {
                layout::Action::Migrate { old } => {
                    tracing::info!(map = name, from = %old, to = %new, "migrating a pinned map to this build's layout");
                    *old
                }
                layout::Action::Reset { old } => {
                    tracing::warn!(map = name, pinned = %old, this_build = %new, "--reset-maps: replacing a pinned map with an empty one");
                    *old
                }
                layout::Action::Create | layout::Action::Reuse => continue,
            };
            let path = pin_dir.join(name);
            let data = match aya::maps::MapData::from_pin(&path) {
                Ok(d) => d,
                Err(e) => {
                    replaced.restore(&pin_dir);
                    return Err(e).with_context(|| format!("opening {}", path.display()));
                }
            };
            if let Err(e) = std::fs::remove_file(&path) {
                replaced.restore(&pin_dir);
                return Err(e).with_context(|| format!("unpinning {}", path.display()));
            }
            replaced.maps.push(OldMap {
                name,
                old,
                copy: matches!(action, layout::Action::Migrate { .. }),
                data,
            });
        }
        let result = Self::load_pinned(config, &pin_dir, &mut replaced);
        if result.is_err() {
            replaced.restore(&pin_dir);
        }
        let dp = result?;
        layout::record_versions(&dp.pin_dir, &want)?;
        Ok(dp)
    }

    /// [`Self::new`] once the plan is carried out: loads the object over
    /// the pins and copies the migrated maps' entries.
    fn load_pinned(
        config: &DatapathConfig,
        pin_dir: &Path,
        replaced: &mut Replaced,
    ) -> anyhow::Result<Self> {
        let tcp_stats_on = u8::from(config.tcp_stats);
        let sockmap_on = u8::from(config.sockmap);
        let tcp_sk = if config.tcp_stats {
            tcp_sock_offsets()
        } else {
            [0; 3]
        };
        let release = if config.tcp_stats && config.tcp_stats_release {
            tcp_release()
        } else {
            None
        };
        let object = release
            .as_ref()
            .map_or(super::EBPF_OBJECT, |(_, o)| o.bytes());
        let release_btf = release.as_ref().map_or([0; 14], |(r, _)| r.btf);
        let release_on = u8::from(release.is_some());
        let mut loader = super::btf::loader(object);
        loader.override_global("TCP_STATS_ON", &tcp_stats_on, true);
        loader.override_global("TCP_RELEASE_ON", &release_on, true);
        loader.override_global("TCP_RELEASE_BTF", &release_btf, true);
        loader.override_global("SOCKMAP_ON", &sockmap_on, true);
        let sock_mem = if config.sockmap {
            super::sockmap::bound_offsets()
        } else {
            [0; 2]
        };
        loader.override_global("SOCK_RMEM_ALLOC", &sock_mem[0], true);
        loader.override_global("SOCK_RCVBUF", &sock_mem[1], true);
        let allowance = super::sockmap::send_allowance();
        loader.override_global("SOCK_SND_ALLOWANCE", &allowance, true);
        loader.override_global("TCP_SK_WRITE_SEQ", &tcp_sk[0], true);
        loader.override_global("TCP_SK_SHUTDOWN", &tcp_sk[1], true);
        loader.override_global("TCP_SK_COOKIE", &tcp_sk[2], true);
        let paths: Vec<(&str, PathBuf)> = layout::pinned_maps()
            .map(|name| (name, pin_dir.join(name)))
            .collect();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object).with_context(|| {
            format!(
                "loading the eBPF object with maps pinned in {}",
                pin_dir.display()
            )
        })?;
        if release.is_some() {
            // Now rather than at attach, before any map is copied or link
            // swapped: a kernel that refuses it gets the object again with
            // closes counted by the state callback (its globals are fixed
            // at load), and the verifier's reason in the log.
            let p: &mut CgroupSock = ebpf
                .program_mut(programs::TCP_STATS_RELEASE)
                .context("the release counter missing from the eBPF object")?
                .try_into()?;
            if let Err(e) = p.load() {
                tracing::warn!(
                    "the kernel refused the release counter; kernel-balanced TCP connections are counted closed by the sockops state callback: {e:#}"
                );
                drop(ebpf);
                let state_callback = DatapathConfig {
                    tcp_stats_release: false,
                    ..config.clone()
                };
                return Self::load_pinned(&state_callback, pin_dir, replaced);
            }
        }
        replaced.copy_into(pin_dir, migrate::Overwrite::Yes)?;
        let mut maps = Maps::take(&mut ebpf)?;
        let tables = tables::ServiceTables::recover(&mut maps)?;
        let mut deny = DenyTries::take(&mut ebpf)?;
        deny.recover()
            .context("reading the pinned XDP deny tries")?;
        let mut external_vips =
            xlb::ExternalVips::recover(&ebpf).context("reading the pinned XDP balancer tables")?;
        external_vips
            .adopt_v1(&mut ebpf, pin_dir)
            .context("copying an earlier build's pinned XDP VIP map")?;
        let mut external_vips6 = super::xlb6::ExternalVips6::recover(&ebpf)
            .context("reading the pinned XDP balancer's IPv6 tables")?;
        external_vips6
            .adopt_v1(&mut ebpf, pin_dir)
            .context("copying an earlier build's pinned XDP IPv6 VIP map")?;
        super::xlb6::ExternalVips6::adopt_conns_v1(&mut ebpf, pin_dir)
            .context("copying an earlier build's pinned XDP IPv6 connection table")?;
        let mut dp = Self {
            ebpf,
            maps,
            tables,
            pin_dir: pin_dir.to_path_buf(),
            links: Vec::new(),
            tcp_release: release.is_some(),
            deny,
            external_vips,
            external_vips6,
            uplink: None,
            uplink_link: None,
            uplink_mtu_failed: false,
            uplink_lock: Default::default(),
            replaced: std::mem::take(replaced),
            node: config.node.clone(),
        };
        dp.set_outbound(config.outbound)?;
        dp.set_outbound6(config.outbound6)?;
        Ok(dp)
    }

    /// Once this build's programs run in every pinned link: copies what
    /// the earlier programs wrote into migrated maps since [`Self::new`]
    /// copied them (keys not yet present), then lets the old maps go.
    /// Called once the cgroup links are swapped ([`Self::attach`],
    /// [`Self::attach_each`]); the daemon attaches the uplink before them.
    fn finish_migration(&mut self) {
        if self.replaced.maps.is_empty() {
            return;
        }
        if let Err(e) = self
            .replaced
            .copy_into(&self.pin_dir, migrate::Overwrite::No)
        {
            tracing::warn!("copying the last entries of migrated maps: {e:#}");
        }
        self.replaced.maps.clear();
    }

    /// Attaches the socket programs (connect4/6, sendmsg4/6, recvmsg4/6,
    /// getpeername4/6, sockops) to the cgroup v2 directory `cgroup` — every
    /// process below it is balanced; the daemon itself must live outside
    /// it. Links are pinned as `<pin_dir>/links/<program>@<cgroup id>`;
    /// programs already attached to this cgroup by an earlier run are kept
    /// as they are, so a restart never detaches them, and links to another
    /// cgroup (the pods cgroup was moved) are removed.
    ///
    /// Errors: the cgroup does not exist or the kernel refuses a program
    /// (the verifier log is in the error).
    pub fn attach(&mut self, cgroup: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        // On cgroup v2 the directory's inode number is the cgroup id.
        let cgroup_id = std::fs::metadata(cgroup)
            .with_context(|| format!("opening cgroup {}", cgroup.display()))?
            .ino();
        let links_dir = self.pin_dir.join("links");
        // Our handles on links of an earlier attach: the pins keep those we
        // want; dropping the handles lets the unpinned ones detach.
        self.links.clear();
        self.unpin_unused(&links_dir);
        for name in self.socket_programs() {
            self.unpin_other_cgroups(&links_dir, name, cgroup_id);
            let pin = links_dir.join(format!("{name}@{cgroup_id}"));
            if pin.exists() {
                let link = self.reuse_pin(name, &pin)?;
                self.links.push(link);
                continue;
            }
            let link = attach_cgroup_link(&mut self.ebpf, name, cgroup)?;
            let pinned = link
                .pin(&pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
            self.links.push(pinned);
        }
        self.finish_migration();
        Ok(())
    }

    /// Turns the same-node redirect on (`strait run --sockmap`): see
    /// [`super::sockmap::start`]; `cgroup` is the daemon's own. Fails safe:
    /// when the kernel refuses, logs once and returns `false` (every
    /// connection keeps the TCP path).
    pub fn start_sockmap(&mut self, cgroup: &Path) -> bool {
        match super::sockmap::start(&mut self.ebpf, cgroup) {
            Ok(()) => {
                tracing::info!(cgroup = %cgroup.display(), "sockmap: same-node hops through the proxy are redirected socket to socket");
                true
            }
            Err(e) => {
                tracing::warn!(
                    "sockmap: the kernel refused the same-node redirect, running without it: {e:#}"
                );
                false
            }
        }
    }

    /// The sockets in `SOCKMAP` now, each by its own 4-tuple.
    ///
    /// Errors: the map is missing from the object.
    pub fn sockmap_pairs(&self) -> anyhow::Result<Vec<proxy_common::SockPair>> {
        super::sockmap::pairs(&self.ebpf)
    }

    /// Loads every socket program into the kernel without attaching it
    /// (loading cgroup programs needs privileges `strait run` drops after
    /// setup; attaching them later does not). Already loaded ones are kept.
    ///
    /// Errors: the verifier rejects a program.
    pub fn load_socket_programs(&mut self) -> anyhow::Result<()> {
        for name in self.socket_programs() {
            let prog = self
                .ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?;
            if name == programs::SOCKOPS {
                let p: &mut SockOps = prog.try_into()?;
                if p.fd().is_err() {
                    p.load().with_context(|| format!("loading {name}"))?;
                }
            } else if name == programs::TCP_STATS_RELEASE {
                let p: &mut CgroupSock = prog.try_into()?;
                if p.fd().is_err() {
                    p.load().with_context(|| format!("loading {name}"))?;
                }
            } else {
                let p: &mut CgroupSockAddr = prog.try_into()?;
                if p.fd().is_err() {
                    p.load().with_context(|| format!("loading {name}"))?;
                }
            }
        }
        Ok(())
    }

    /// Attaches the socket programs to each of `cgroups` (the meshed pods'
    /// cgroups) and to nothing else: links to cgroups not listed (pods that
    /// left the mesh or ended, or a pods cgroup attached by [`Self::attach`])
    /// are unpinned, which detaches them. Pins and restarts work as in
    /// [`Self::attach`]. A cgroup that cannot be attached (the pod ended
    /// meanwhile) does not stop the others.
    ///
    /// Returns the cgroups that failed, with why.
    pub fn attach_each(&mut self, cgroups: &[PathBuf]) -> Vec<(PathBuf, anyhow::Error)> {
        use std::os::unix::fs::MetadataExt;
        let links_dir = self.pin_dir.join("links");
        let mut keep = std::collections::HashSet::new();
        let mut failed = Vec::new();
        let mut links = Vec::new();
        self.unpin_unused(&links_dir);
        let names = self.socket_programs();
        for cgroup in cgroups {
            let one = |dp: &mut Self, links: &mut Vec<PinnedLink>| -> anyhow::Result<u64> {
                let id = std::fs::metadata(cgroup)
                    .with_context(|| format!("opening cgroup {}", cgroup.display()))?
                    .ino();
                for name in &names {
                    let pin = links_dir.join(format!("{name}@{id}"));
                    if pin.exists() {
                        links.push(dp.reuse_pin(name, &pin)?);
                        continue;
                    }
                    let link = attach_cgroup_link(&mut dp.ebpf, name, cgroup)?;
                    links.push(
                        link.pin(&pin)
                            .with_context(|| format!("pinning {}", pin.display()))?,
                    );
                }
                Ok(id)
            };
            match one(self, &mut links) {
                Ok(id) => {
                    keep.insert(id.to_string());
                }
                Err(e) => failed.push((cgroup.clone(), e)),
            }
        }
        // Our handles of links no longer wanted go; so do their pins.
        self.links = links;
        if let Ok(entries) = std::fs::read_dir(&links_dir) {
            for e in entries.flatten() {
                let file = e.file_name();
                let Some((_, id)) = file.to_str().and_then(|f| f.rsplit_once('@')) else {
                    continue;
                };
                if !keep.contains(id) {
                    tracing::info!(link = %e.path().display(), "detaching from a cgroup no longer meshed");
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        self.finish_migration();
        failed
    }

    /// Reopens the link an earlier run pinned at `pin` for program `name`
    /// and swaps this object's `name` (loaded now if it is not yet) into
    /// it atomically ([`super::relink`]): after a restart or an upgrade the
    /// hook runs this binary's program, over the same pinned maps, without
    /// ever being empty. When the kernel refuses the swap the old program
    /// stays attached (logged), so traffic is never interrupted.
    ///
    /// Errors: the pin cannot be reopened or the program not loaded.
    fn reuse_pin(&mut self, name: &str, pin: &Path) -> anyhow::Result<PinnedLink> {
        use std::os::fd::AsFd;
        let prog = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?;
        let fd = if name == programs::SOCKOPS {
            let p: &mut SockOps = prog.try_into()?;
            if p.fd().is_err() {
                p.load().with_context(|| format!("loading {name}"))?;
            }
            p.fd()?.as_fd().try_clone_to_owned()?
        } else if name == programs::TCP_STATS_RELEASE {
            let p: &mut CgroupSock = prog.try_into()?;
            if p.fd().is_err() {
                p.load().with_context(|| format!("loading {name}"))?;
            }
            p.fd()?.as_fd().try_clone_to_owned()?
        } else {
            let p: &mut CgroupSockAddr = prog.try_into()?;
            if p.fd().is_err() {
                p.load().with_context(|| format!("loading {name}"))?;
            }
            p.fd()?.as_fd().try_clone_to_owned()?
        };
        if let Err(e) = super::relink::replace_program(pin, fd.as_fd()) {
            tracing::warn!(
                link = %pin.display(),
                "could not swap this build's program into the pinned link ({e}); the earlier program stays attached"
            );
        }
        PinnedLink::from_pin(pin)
            .with_context(|| format!("reopening pinned link {}", pin.display()))
    }

    /// The pinned links whose program is not this object's (an earlier
    /// run's, left when the kernel refused the swap in [`Self::attach`]),
    /// cgroup links and the uplink XDP link alike; 0 after a successful
    /// attach.
    ///
    /// Errors: a pinned link or a program cannot be inspected.
    pub fn stale_links(&self) -> anyhow::Result<usize> {
        let mut stale = 0;
        let entries = ["links", "uplink"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.pin_dir.join(d)).ok())
            .flatten();
        for e in entries.flatten() {
            let file = e.file_name();
            let Some((name, _)) = file.to_str().and_then(|f| f.rsplit_once('@')) else {
                continue;
            };
            let link = FdLink::from(
                PinnedLink::from_pin(e.path())
                    .with_context(|| format!("reopening {}", e.path().display()))?,
            );
            let running = link.info()?.program_id();
            let ours = self
                .ebpf
                .program(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?
                .info()?
                .id();
            if running != ours {
                stale += 1;
            }
        }
        Ok(stale)
    }

    /// The programs attached to a pods cgroup: [`programs::SOCKET`], and
    /// [`programs::TCP_STATS_RELEASE`] when it counts closes.
    fn socket_programs(&self) -> Vec<&'static str> {
        let mut names = programs::SOCKET.to_vec();
        if self.tcp_release {
            names.push(programs::TCP_STATS_RELEASE);
        }
        names
    }

    /// Removes pinned links of programs this build does not attach (the
    /// release counter of an earlier run, now that the counters are off
    /// or the kernel refused it).
    fn unpin_unused(&self, links_dir: &Path) {
        if self.tcp_release {
            return;
        }
        let Ok(entries) = std::fs::read_dir(links_dir) else {
            return;
        };
        let prefix = format!("{}@", programs::TCP_STATS_RELEASE);
        for e in entries.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|f| f.starts_with(&prefix))
            {
                tracing::info!(link = %e.path().display(), "detaching the release counter");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes pinned links of `program` to cgroups other than `keep`
    /// (which detaches them once no process holds them).
    fn unpin_other_cgroups(&self, links_dir: &Path, program: &str, keep: u64) {
        let Ok(entries) = std::fs::read_dir(links_dir) else {
            return;
        };
        let prefix = format!("{program}@");
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(id) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
                continue;
            };
            if id != keep.to_string() {
                tracing::info!(link = %e.path().display(), "detaching from the previous pods cgroup");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Makes the kernel's service tables hold exactly `services` (IPv4 VIPs
    /// in `SERVICES`, native IPv6 ones in `SERVICES6`, each over the
    /// backends of its own family; REDIRECT-mode TCP on an IPv6 VIP is
    /// written to be refused and listed in [`ApplyReport::refused`]): new and changed services are
    /// written (a changed backend set is built aside and swapped in with one
    /// `SERVICES` update), unchanged ones left alone, missing ones deleted.
    ///
    /// Errors: two services with the same VIP, port and protocol, or a map
    /// is full; the tables then hold the services written before the error.
    pub fn apply(&mut self, services: &[L4Service]) -> anyhow::Result<ApplyReport> {
        self.tables.apply(&mut self.maps, services)
    }

    /// Applies one snapshot diff's kernel part (`changes`, keys of
    /// `services`): only the services it names are written or deleted (see
    /// [`Datapath::apply`] for how a changed service is swapped).
    ///
    /// Errors: as [`Datapath::apply`].
    pub fn apply_changes(
        &mut self,
        services: &[L4Service],
        changes: &strait_config::snapshot::Changes<strait_config::snapshot::diff::L4Key>,
    ) -> anyhow::Result<ApplyReport> {
        self.tables.apply_changes(&mut self.maps, services, changes)
    }

    /// Adds and removes meshed workload IPs (a snapshot diff's workloads),
    /// leaving the others untouched. IPv6 addresses go to `WORKLOADS6`
    /// (TCP to them goes to the proxy's IPv6 listener, and is refused while
    /// IPv4 redirection is on without one).
    pub fn change_workloads(&mut self, added: &[IpAddr], removed: &[IpAddr]) -> anyhow::Result<()> {
        for ip in removed {
            match workload_key(ip) {
                WorkloadKey::V4(k) => {
                    let _ = self.maps.workloads.remove(&k);
                }
                WorkloadKey::V6(k) => {
                    let _ = self.maps.workloads6.remove(&k);
                }
            }
        }
        for ip in added {
            self.insert_workload(workload_key(ip))?;
        }
        Ok(())
    }

    fn insert_workload(&mut self, key: WorkloadKey) -> anyhow::Result<()> {
        match key {
            WorkloadKey::V4(k) => self
                .maps
                .workloads
                .insert(k, Workload { flags: 0 }, 0)
                .context("WORKLOADS is full"),
            WorkloadKey::V6(k) => self
                .maps
                .workloads6
                .insert(k, Workload { flags: 0 }, 0)
                .context("WORKLOADS6 is full"),
        }
    }

    /// Attaches the uplink XDP program (`xdp_lb`: source-prefix deny, then
    /// the external VIP balancer) to `iface` through a BPF link pinned at
    /// `<pin dir>/uplink/xdp_lb@<iface>`, so it stays attached while no
    /// daemon runs. Tunnelled packets leave from `cfg.source` to
    /// `cfg.gateway_mac` (see [`super::resolve_uplink`]).
    ///
    /// When an earlier run pinned a link on `iface`, this build's program
    /// is swapped into it atomically (`BPF_LINK_UPDATE`, as for the
    /// cgroup links): the interface is never without the program, and the
    /// program uses the pinned maps, so the connection table (`XLB_CONNS`)
    /// keeps every flow on its node. If the kernel refuses the swap (the
    /// interface was recreated: the old link is defunct) the old link is
    /// removed and a new one attached. A link on another interface (the
    /// uplink moved) is removed, which detaches it. A new link is attached
    /// in native (driver) mode when the driver supports it, else in generic
    /// mode (logged).
    ///
    /// Errors: unknown interface, the verifier or the driver refuses the
    /// program, an uplink is already attached by this object.
    pub fn attach_uplink(&mut self, iface: &str, cfg: &UplinkConfig) -> anyhow::Result<()> {
        use aya::programs::XdpMode;
        use std::os::fd::AsFd;
        if let Some(have) = &self.uplink {
            bail!("the XDP uplink program is already attached to {have}");
        }
        let dir = self.pin_dir.join("uplink");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pin = dir.join(format!("{}@{iface}", programs::XDP_LB));
        self.unpin_uplinks_except(Some(&pin));
        let held = self.uplink_lock.hold();
        xlb::configure_uplink(&mut self.ebpf, cfg)?;
        // ICMP "too big" answers need the uplink's MTU; unknown, nothing
        // is checked (oversize tunnelled frames are the driver's to drop).
        // [`Self::follow_uplink_mtu`] keeps it current.
        self.uplink_mtu_failed = false;
        match super::uplink_mtu::interface_mtu(iface) {
            Ok(mtu) => xlb::set_uplink_mtu(&mut self.ebpf, mtu)?,
            Err(e) => {
                self.uplink_mtu_failed = true;
                tracing::warn!(
                    uplink = iface,
                    "{e:#}: VIP packets too big once tunnelled are not answered with ICMP"
                )
            }
        }
        drop(held);
        let prog = xdp_lb(&mut self.ebpf)?;
        if pin.exists() {
            let fd = prog.fd()?.as_fd().try_clone_to_owned()?;
            match super::relink::replace_program(&pin, fd.as_fd()) {
                Ok(()) => {
                    let link = PinnedLink::from_pin(&pin)
                        .with_context(|| format!("reopening pinned link {}", pin.display()))?;
                    self.uplink_link = Some(link);
                    self.uplink = Some(iface.to_string());
                    tracing::info!(uplink = iface, source = %cfg.source, "XDP uplink program swapped into the pinned link");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(uplink = iface, link = %pin.display(), "the pinned XDP link cannot take this build's program ({e}); attaching a new link");
                    let _ = std::fs::remove_file(&pin);
                }
            }
        }
        let id = match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => id,
            Err(native) => {
                tracing::warn!(
                    uplink = iface,
                    "native XDP refused ({native}); using generic (skb) XDP, which is slower"
                );
                prog.attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching xdp_lb to {iface}"))?
            }
        };
        let link = prog.take_link(id)?;
        match FdLink::try_from(link) {
            Ok(fd_link) => {
                let pinned = fd_link
                    .pin(&pin)
                    .with_context(|| format!("pinning {}", pin.display()))?;
                self.uplink_link = Some(pinned);
            }
            Err(_) => {
                // A kernel without XDP links (before 5.9): aya attached
                // through netlink, which cannot be pinned. Re-attach so the
                // program owns the attachment (it detaches at exit).
                tracing::warn!(
                    uplink = iface,
                    "this kernel has no XDP links: the uplink program detaches when the daemon exits"
                );
                xdp_lb(&mut self.ebpf)?
                    .attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching xdp_lb to {iface}"))?;
            }
        }
        self.uplink = Some(iface.to_string());
        tracing::info!(uplink = iface, source = %cfg.source, "XDP uplink program attached");
        Ok(())
    }

    /// Follows the uplink's MTU after [`Self::attach_uplink`]: re-reads it
    /// from the interface (in the calling thread's network namespace) and,
    /// when it differs from the one the program checks, writes it (see
    /// [`super::set_uplink_mtu`]). The daemon calls it on every pod rescan
    /// and reload, the fallback of [`Self::watch_uplink_mtu`]. Returns
    /// `(old, new)` when it changed; nothing without an uplink. An
    /// interface whose MTU cannot be read keeps the last one (warned once,
    /// until it can be read again).
    ///
    /// Errors: the map update is refused.
    pub fn follow_uplink_mtu(&mut self) -> anyhow::Result<Option<(u16, u16)>> {
        let Some(iface) = &self.uplink else {
            return Ok(None);
        };
        let mtu = match super::uplink_mtu::interface_mtu(iface) {
            Ok(mtu) => mtu,
            Err(e) => {
                if !std::mem::replace(&mut self.uplink_mtu_failed, true) {
                    tracing::warn!(uplink = %iface, "{e:#}: the XDP balancer keeps the last uplink MTU it had");
                }
                return Ok(None);
            }
        };
        self.uplink_mtu_failed = false;
        let _held = self.uplink_lock.hold();
        let old = super::uplink_mtu::uplink_mtu(&self.ebpf)?;
        if old == mtu {
            return Ok(None);
        }
        xlb::set_uplink_mtu(&mut self.ebpf, mtu)?;
        Ok(Some((old, mtu)))
    }

    /// Follows the uplink's MTU as the kernel announces it (see
    /// [`super::MtuWatch`]): `None` without an uplink. Call it in the
    /// uplink's network namespace, after [`Self::attach_uplink`]; the
    /// watch and [`Self::follow_uplink_mtu`] may run on different threads.
    ///
    /// Errors: the interface is gone, the netlink socket cannot be opened.
    pub fn watch_uplink_mtu(&self) -> anyhow::Result<Option<super::MtuWatch>> {
        let Some(iface) = &self.uplink else {
            return Ok(None);
        };
        super::uplink_mtu::MtuWatch::open(iface, &self.ebpf, self.uplink_lock.clone()).map(Some)
    }

    /// Detaches the uplink XDP program: removes the pinned uplink link(s)
    /// of an earlier run (the daemon now runs without `--xdp-uplink`) and
    /// this object's. Packets then reach the host stack as without Strait.
    pub fn detach_uplink(&mut self) {
        self.unpin_uplinks_except(None);
        self.uplink_link = None;
        self.uplink = None;
    }

    /// The interfaces with a pinned uplink link (from their pin names).
    pub fn pinned_uplinks(&self) -> Vec<String> {
        let prefix = format!("{}@", programs::XDP_LB);
        let mut out: Vec<String> = std::fs::read_dir(self.pin_dir.join("uplink"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|f| f.strip_prefix(&prefix))
                    .map(str::to_string)
            })
            .collect();
        out.sort();
        out
    }

    /// Removes every pinned uplink link but `keep` (each detaches once no
    /// process holds it).
    fn unpin_uplinks_except(&self, keep: Option<&Path>) {
        let Ok(entries) = std::fs::read_dir(self.pin_dir.join("uplink")) else {
            return;
        };
        for e in entries.flatten() {
            if Some(e.path().as_path()) != keep {
                tracing::info!(link = %e.path().display(), "detaching the XDP uplink program");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Makes the XDP deny tries hold exactly `prefixes` (source prefixes of
    /// AuthorizationPolicy DENY rules that depend on nothing else; the
    /// policy layer picks them), each with its own drop counter. Dropped
    /// only once [`Self::attach_uplink`] has attached the program.
    ///
    /// Errors: a bad prefix length (nothing changed), too many prefixes.
    pub fn set_deny_sources(&mut self, prefixes: &[SourcePrefix]) -> anyhow::Result<DenyReport> {
        self.deny.sync(prefixes)
    }

    /// Makes the XDP deny tries hold the AuthorizationPolicy DENY rules of
    /// `snap` that depend only on source addresses, scoped to the
    /// workloads of this node each policy selects
    /// ([`super::kernel_deny_rules`]): a connection those workloads would
    /// refuse is dropped at its first packet. Incremental: only changed
    /// prefixes and destinations are written. Dropped only once
    /// [`Self::attach_uplink`] has attached the program.
    ///
    /// Errors: as [`DenyTries::sync_scoped`] (the tries keep what they
    /// held; the proxy enforces every policy regardless).
    pub fn apply_deny_policies(&mut self, snap: &MeshSnapshot) -> anyhow::Result<DenyReport> {
        let rules = super::kernel_deny_rules(snap, Some(&self.node));
        self.deny.sync_scoped(&rules)
    }

    /// Packets the XDP deny filter dropped, per prefix.
    pub fn deny_drops(&self) -> Vec<(SourcePrefix, u64)> {
        self.deny.drops()
    }

    /// Makes the XDP balancer's tables hold exactly `vips`; see
    /// [`xlb::ExternalVips::apply`].
    pub fn set_external_vips(&mut self, vips: &[ExternalVip]) -> anyhow::Result<XlbReport> {
        self.external_vips.apply(&mut self.ebpf, vips)
    }

    /// Makes the XDP balancer's IPv6 tables hold exactly `vips`; see
    /// [`super::xlb6::ExternalVips6::apply`].
    pub fn set_external_vips6(
        &mut self,
        vips: &[super::ExternalVip6],
    ) -> anyhow::Result<XlbReport> {
        self.external_vips6.apply(&mut self.ebpf, vips)
    }

    /// Sets (or with `None` clears: IPv6 VIP packets then pass) the ip6ip6
    /// outer source and gateway MAC of the uplink program; see
    /// [`super::resolve_uplink6`].
    ///
    /// Errors: the map update is refused.
    pub fn configure_uplink6(&mut self, cfg: Option<&super::UplinkConfig6>) -> anyhow::Result<()> {
        let _held = self.uplink_lock.hold();
        super::xlb6::configure_uplink6(&mut self.ebpf, cfg)
    }

    /// Makes the XDP balancer's tables hold the external VIPs of `snap`
    /// (Services' `externalIPs` and `status.loadBalancer.ingress`, spread
    /// over the nodes hosting their endpoints by node address of the VIP's
    /// family: IPIP for IPv4, ip6ip6 for IPv6; an IPv4 VIP's IPv6-only
    /// nodes over 4in6 when the uplink has an IPv6 source, else left out
    /// with a warning): only VIPs whose nodes or
    /// weights changed get a new ring. Endpoints without a node address of
    /// their VIP's family are left out (logged, naming the Service).
    /// Balanced only once [`Self::attach_uplink`] has attached the
    /// program; nodes receiving tunnelled packets must hold the VIP on a
    /// local interface, as Katran's reals do.
    ///
    /// Errors: as [`xlb::ExternalVips::apply`] (IPv4 first; the IPv6 tables
    /// are written even when the IPv4 ones fail, and the first error is
    /// returned). The report sums both families.
    pub fn apply_external_services(&mut self, snap: &MeshSnapshot) -> anyhow::Result<XlbReport> {
        let (mut vips, mut skipped) = xlb::external_vips(&snap.external);
        if !xlb::ipv6_uplink(&self.ebpf)? {
            skipped.extend(xlb::without_ipv6_reals(&mut vips));
        }
        let (vips6, skipped6) = super::xlb6::external_vips6(&snap.external);
        for s in skipped.iter().chain(&skipped6) {
            tracing::warn!("{s}");
        }
        let v4 = self.external_vips.apply(&mut self.ebpf, &vips);
        let v6 = self.external_vips6.apply(&mut self.ebpf, &vips6);
        let (v4, v6) = (v4?, v6?);
        Ok(XlbReport {
            vips: v4.vips + v6.vips,
            without_reals: v4.without_reals + v6.without_reals,
            reals: v4.reals + v6.reals,
        })
    }

    /// The kernel-balanced IPv4 (and IPv4-mapped) TCP connections counted
    /// by the sockops program (`TCP_STATS_DIRECT`, and `TCP_STATS` for the
    /// keys that found their direct slot taken), summed over CPUs and both
    /// maps: per (client, service VIP, backend) key, connections opened and
    /// closed and the bytes of closed ones, one entry per key, sorted by
    /// key. Counts only grow while the object is loaded.
    ///
    /// Errors: a map cannot be read.
    pub fn tcp_stats(&self) -> anyhow::Result<Vec<(TcpStatsKey, TcpStats)>> {
        let mut all: std::collections::BTreeMap<TcpStatsKey, TcpStats> = Default::default();
        let direct = direct_entries(&self.ebpf)?;
        let hashed = summed(&self.ebpf, proxy_common::TCP_STATS)?;
        for (k, v) in direct.into_iter().chain(hashed) {
            add_stats(all.entry(k).or_default(), &v);
        }
        Ok(all.into_iter().collect())
    }

    /// [`Self::tcp_stats`] for native IPv6 services (`TCP_STATS6`).
    ///
    /// Errors: the map cannot be read.
    pub fn tcp_stats6(&self) -> anyhow::Result<Vec<(TcpStatsKey6, TcpStats)>> {
        summed(&self.ebpf, proxy_common::TCP_STATS6)
    }

    /// Run count and total run time of each loaded program, by name, as
    /// the kernel counts them while `BPF_ENABLE_STATS` is held
    /// (`aya::sys::enable_stats`); zero otherwise. For benchmarks.
    pub fn program_stats(&self) -> Vec<(String, u64, std::time::Duration)> {
        let mut out: Vec<(String, u64, std::time::Duration)> = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_string(), info.run_count(), info.run_time()))
            })
            .collect();
        out.sort();
        out
    }

    /// The XDP balancer's counters summed over CPUs.
    pub fn xlb_stats(&self) -> anyhow::Result<proxy_common::XlbStats> {
        xlb::xlb_stats(&self.ebpf)
    }

    /// Number of services in the kernel tables.
    pub fn service_count(&self) -> usize {
        self.tables.service_count()
    }

    /// Makes `WORKLOADS` / `WORKLOADS6` hold exactly `ips` (meshed pod
    /// IPs): TCP to an IPv4 (or IPv4-mapped) one is redirected to the node
    /// proxy; TCP to a native IPv6 one to its IPv6 listener
    /// ([`Self::set_outbound6`]), or, without one, is refused while IPv4
    /// redirection is on (never a silent bypass of mTLS).
    pub fn set_workloads(&mut self, ips: &[IpAddr]) -> anyhow::Result<()> {
        let want: std::collections::HashSet<WorkloadKey> = ips.iter().map(workload_key).collect();
        let have4: Vec<u32> = self.maps.workloads.keys().filter_map(Result::ok).collect();
        for ip in have4 {
            if !want.contains(&WorkloadKey::V4(ip)) {
                let _ = self.maps.workloads.remove(&ip);
            }
        }
        let have6: Vec<[u32; 4]> = self.maps.workloads6.keys().filter_map(Result::ok).collect();
        for ip in have6 {
            if !want.contains(&WorkloadKey::V6(ip)) {
                let _ = self.maps.workloads6.remove(&ip);
            }
        }
        for k in want {
            self.insert_workload(k)?;
        }
        Ok(())
    }

    /// Sets the node proxy's outbound listener for redirected connections.
    pub fn set_outbound(&mut self, addr: SocketAddrV4) -> anyhow::Result<()> {
        let cfg = ProxyConfig {
            ip: proxy_common::ipv4_to_be(u32::from(*addr.ip())),
            port: proxy_common::port_to_be(addr.port()),
            pad: 0,
        };
        self.maps.proxy_config.set(0, cfg, 0)?;
        Ok(())
    }

    /// Sets (or, with `None`, clears) the node proxy's IPv6 outbound
    /// listener: REDIRECT-mode TCP on IPv6 VIPs and TCP to meshed pods'
    /// IPv6 addresses are redirected there; without it they are refused.
    pub fn set_outbound6(&mut self, addr: Option<std::net::SocketAddrV6>) -> anyhow::Result<()> {
        let cfg = addr.map_or(proxy_common::ProxyConfig6::default(), |a| {
            proxy_common::ProxyConfig6 {
                ip: proxy_common::ipv6_words(a.ip().octets()),
                port: proxy_common::port_to_be(a.port()),
                pad: 0,
            }
        });
        self.maps.proxy_config6.set(0, cfg, 0)?;
        self.tables.proxy6 = addr.is_some();
        Ok(())
    }

    /// The original destination of a connection redirected to the proxy,
    /// by the peer address the proxy's `accept()` returned; see
    /// [`super::OriginalDestinations`] for a handle another component can
    /// hold.
    pub fn original_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
        match peer {
            SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none() => {
                orig_dst::lookup6(&self.maps.orig_dst6, a)
            }
            _ => orig_dst::lookup(&self.maps.orig_dst, peer),
        }
    }

    /// Counters of the service `vip:port/protocol` (IPv4 or IPv6; zero
    /// when it has had no connection yet).
    pub fn service_counters(
        &self,
        vip: impl Into<SocketAddr>,
        protocol: L4Protocol,
    ) -> ServiceCounters {
        let vip = vip.into();
        let key = tables::service_key(vip.ip(), vip.port(), protocol);
        let mut sum = ServiceCounters::default();
        let Some(i) = self.tables.service_stats_index(&key) else {
            return sum;
        };
        for v in counters::per_cpu(&self.maps.service_stats, i) {
            sum.connections += v.connections;
            sum.no_backend += v.no_backend;
        }
        sum
    }

    /// Connections the kernel sent to `backend` (IPv4 or IPv6) over all
    /// services.
    pub fn backend_connections(&self, backend: impl Into<SocketAddr>, protocol: L4Protocol) -> u64 {
        let key = tables::stats_key(&backend.into(), proto_number(protocol));
        self.tables.backend_stats_index(&key).map_or(0, |i| {
            counters::per_cpu(&self.maps.backend_stats, i).iter().sum()
        })
    }

    /// How many entries the kernel tables hold now (walks the maps; for
    /// tests, the admin API and capacity checks).
    pub fn kernel_entries(&self) -> KernelEntries {
        KernelEntries {
            services: self.maps.services.keys().count() + self.maps.services6.keys().count(),
            backend_slots: self.maps.backends.keys().count() + self.maps.backends6.keys().count(),
            maglev_tables: self.maps.maglev.keys().count(),
            workloads: self.maps.workloads.keys().count() + self.maps.workloads6.keys().count(),
        }
    }

    /// The loaded object (for [`super::inpod::InpodCapture`], which
    /// attaches its program per pod network namespace).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The pin directory in use.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Detaches every program and removes the pins (`strait cleanup`,
    /// tests): the pods' sockets are no longer balanced or redirected.
    pub fn cleanup(self) -> anyhow::Result<()> {
        let Self {
            ebpf,
            maps,
            links,
            pin_dir,
            deny,
            uplink_link,
            ..
        } = self;
        drop(deny);
        if let Some(l) = uplink_link {
            let _ = l.unpin();
        }
        for l in links {
            // Unpinned and dropped: the last reference, so it detaches.
            let _ = l.unpin();
        }
        drop(maps);
        drop(ebpf);
        remove_pins(&pin_dir)
    }
}

/// Removes a node's pins without loading anything: pinned links go first
/// (which detaches their programs once no process holds them), then maps.
pub fn remove_pins(pin_dir: &Path) -> anyhow::Result<()> {
    if !pin_dir.exists() {
        return Ok(());
    }
    std::fs::remove_dir_all(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    // `<bpffs>/strait` goes too once no node is left (fails while one is).
    if let Some(parent) = pin_dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

/// The uplink program of `ebpf`, loaded into the kernel if it is not yet.
fn xdp_lb(ebpf: &mut Ebpf) -> anyhow::Result<&mut aya::programs::Xdp> {
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(programs::XDP_LB)
        .with_context(|| format!("program {} missing from the eBPF object", programs::XDP_LB))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load()
            .context("loading xdp_lb (the verifier log is below)")?;
    }
    Ok(prog)
}

/// A `WORKLOADS` or `WORKLOADS6` key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum WorkloadKey {
    V4(u32),
    V6([u32; 4]),
}

fn workload_key(ip: &IpAddr) -> WorkloadKey {
    match ip {
        IpAddr::V4(a) => WorkloadKey::V4(proxy_common::ipv4_to_be(u32::from(*a))),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => WorkloadKey::V4(proxy_common::ipv4_to_be(u32::from(v4))),
            None => WorkloadKey::V6(proxy_common::ipv6_words(a.octets())),
        },
    }
}

fn proto_number(p: L4Protocol) -> u8 {
    match p {
        L4Protocol::Tcp => proxy_common::proto::TCP,
        L4Protocol::Udp => proxy_common::proto::UDP,
    }
}

/// Loads socket program `name` of `ebpf` if it is not loaded yet and
/// attaches it to `cgroup` through a new bpf_link (not pinned yet).
///
/// A bpf_link (5.7+) takes no attach flags and always coexists with other
/// programs on the hook (other agents, a data path in a parent cgroup):
/// `Single` is the mode that passes flags 0.
///
/// Errors: the cgroup cannot be opened; the program is missing from the
/// object, fails to load, or the kernel refuses the attach.
fn attach_cgroup_link(ebpf: &mut Ebpf, name: &str, cgroup: &Path) -> anyhow::Result<FdLink> {
    let cg = std::fs::File::open(cgroup)
        .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?;
    // The program types share no trait for load/attach: one body, each type.
    macro_rules! load_attach {
        ($ty:ty) => {{
            let p: &mut $ty = prog.try_into()?;
            if p.fd().is_err() {
                p.load().with_context(|| format!("loading {name}"))?;
            }
            let id = p
                .attach(cg, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
            p.take_link(id)?.try_into()?
        }};
    }
    let link: FdLink = if name == programs::SOCKOPS {
        load_attach!(SockOps)
    } else if name == programs::TCP_STATS_RELEASE {
        load_attach!(CgroupSock)
    } else {
        load_attach!(CgroupSockAddr)
    };
    Ok(link)
}

/// What counting closes at release needs ([`super::tcp_sock::TcpRelease`])
/// and the embedded object with its kfunc calls in place
/// ([`super::kfunc`]); `None` when the kernel's BTF lacks them (Linux <
/// 6.2), logged: closes are then counted by the sockops state callback.
fn tcp_release() -> Option<(super::tcp_sock::TcpRelease, super::kfunc::Patched)> {
    let found = super::tcp_sock::TcpRelease::of_kernel()
        .map_err(anyhow::Error::from)
        .and_then(|r| {
            let kfuncs = [
                (proxy_common::kfunc::CAST_TO_KERN_CTX, r.kfuncs[0]),
                (proxy_common::kfunc::RDONLY_CAST, r.kfuncs[1]),
            ];
            let object =
                super::kfunc::patch(super::EBPF_OBJECT, &["cgroup/sock_release"], &kfuncs)?;
            Ok((r, object))
        });
    match found {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::info!(
                "kernel-balanced TCP connections are counted closed by the sockops state callback (no release counter: {e:#})"
            );
            None
        }
    }
}

/// The running kernel's `[write_seq, sk_shutdown, skc_cookie]` socket offsets for the
/// sockops program's counters ([`super::tcp_sock`]); `[0, 0]` when the
/// kernel's BTF cannot say, which is logged as a warning: closes are then
/// counted at `TCP_CLOSE` (three state callbacks per connection instead of
/// one) and bytes still unacknowledged when the client closed are left
/// out.
fn tcp_sock_offsets() -> [u32; 3] {
    match super::tcp_sock::TcpSockOffsets::of_kernel() {
        Ok(o) => [o.write_seq, o.sk_shutdown, o.sk_cookie],
        Err(e) => {
            tracing::warn!(
                "kernel-balanced TCP connections are counted closed at TCP_CLOSE, their bytes as acknowledged (no socket offsets from the kernel's BTF: {e})"
            );
            [0; 3]
        }
    }
}

/// The entries of the per-CPU `TCP_STATS` / `TCP_STATS6` map `name`, each
/// summed over CPUs.
/// Adds `v` to `sum`.
fn add_stats(sum: &mut TcpStats, v: &TcpStats) {
    sum.opened += v.opened;
    sum.closed += v.closed;
    sum.sent += v.sent;
    sum.received += v.received;
}

/// The taken slots of `TCP_STATS_DIRECT` on every CPU, as (key, counts)
/// pairs (a key may appear once per CPU): the whole array in one
/// `BPF_MAP_LOOKUP_BATCH` ([`super::batch`]), or one lookup per slot on a
/// kernel without batch operations for arrays (before 5.6).
fn direct_entries(ebpf: &Ebpf) -> anyhow::Result<Vec<(TcpStatsKey, TcpStats)>> {
    use std::os::fd::AsFd;
    let name = proxy_common::TCP_STATS_DIRECT;
    let data = ebpf
        .map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))?;
    let mut out = Vec::new();
    let mut keep = |e: &proxy_common::TcpStatsEntry| {
        if e.key.src != 0 {
            out.push((e.key, e.stats));
        }
    };
    if let aya::maps::Map::PerCpuArray(m) = data {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let slots = m.info()?.max_entries();
        match super::batch::per_cpu_array::<proxy_common::TcpStatsEntry>(
            m.fd().as_fd(),
            slots,
            cpus,
        ) {
            Ok(slots) => {
                slots.iter().flatten().for_each(&mut keep);
                return Ok(out);
            }
            // EINVAL, EOPNOTSUPP, ENOTSUPP (524): the kernel has no batch
            // lookup for arrays; anything else is an error.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
                ) =>
            {
                tracing::debug!("{name}: no batch lookup ({e}), one lookup per slot");
            }
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
    }
    let map: aya::maps::PerCpuArray<_, proxy_common::TcpStatsEntry> =
        aya::maps::PerCpuArray::try_from(data)?;
    for slot in 0..map.len() {
        let per_cpu = map
            .get(&slot, 0)
            .with_context(|| format!("reading {name} slot {slot}"))?;
        per_cpu.iter().for_each(&mut keep);
    }
    Ok(out)
}

fn summed<K: aya::Pod>(ebpf: &Ebpf, name: &str) -> anyhow::Result<Vec<(K, TcpStats)>> {
    let map: aya::maps::PerCpuHashMap<_, K, TcpStats> = aya::maps::PerCpuHashMap::try_from(
        ebpf.map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))?,
    )?;
    let mut out = Vec::new();
    for item in map.iter() {
        let (k, per_cpu) = item.with_context(|| format!("reading {name}"))?;
        let mut sum = TcpStats::default();
        for v in per_cpu.iter() {
            add_stats(&mut sum, v);
        }
        out.push((k, sum));
    }
    Ok(out)
}
