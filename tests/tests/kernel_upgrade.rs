//! Tier 2/3: upgrading the kernel data path in place. A new loader (a
//! restarted or upgraded daemon) swaps its programs into the pinned links
//! while clients keep connecting; pinned maps are reused when their layout
//! is unchanged, migrated when only their capacity grew, and a layout it
//! cannot use makes it refuse to start having changed nothing (or, with
//! `reset_maps`, replace just that map). The uplink XDP program stays
//! attached through its pinned link while no loader runs, takes the new
//! program in place, and detaches when the uplink is dropped.
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aya::programs::links::{FdLink, PinnedLink};
use strait::datapath::{Datapath, DatapathConfig, L4LoadBalancer, SourcePrefix, UplinkConfig};
use strait_tests::bpffs::TestBpffs;
use strait_tests::cgroup::TestCgroup;
use strait_tests::lb::{load_and_exit, probe, service, tally, tcp_backend};
use strait_tests::node::echo::{self, Then};
use strait_tests::node::{names, netns, Daemon, Node};
use strait_tests::privileged;
use strait_tests::xdp_deny::tcp_frame;
use strait_tests::xdp_net::{ip_in, Topology};

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

fn config(bpffs: &Path, node: &str) -> DatapathConfig {
    let mut c = DatapathConfig::new(node);
    c.bpffs = bpffs.to_path_buf();
    c
}

/// Creates a map with `bpf(BPF_MAP_CREATE)` (as another build of Strait
/// would have) and pins it at `path`.
fn pin_raw_map(
    path: &Path,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let mut create = [0u32; 18];
    create[..5].copy_from_slice(&[map_type, key_size, value_size, max_entries, 0]);
    // SAFETY: a zeroed `union bpf_attr` prefix with the map fields set.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            create.as_ptr(),
            std::mem::size_of_val(&create),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    #[repr(C)]
    struct Pin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    use std::os::fd::AsRawFd;
    let attr = Pin {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    // SAFETY: a live `repr(C)` attr of BPF_OBJ_PIN's layout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            6, // BPF_OBJ_PIN
            &attr as *const Pin,
            std::mem::size_of::<Pin>(),
        )
    };
    assert_eq!(r, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    fd
}

/// Kernel id of every map and link pinned under `dir` (recursively), by
/// path: equal before and after means nothing was replaced.
fn pinned_ids(dir: &Path) -> BTreeMap<PathBuf, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                out.insert(p.clone(), 0);
                stack.push(p);
            } else if let Ok(info) = aya::maps::MapInfo::from_pin(&p) {
                out.insert(p, info.id());
            } else {
                let link = FdLink::from(PinnedLink::from_pin(&p).unwrap());
                out.insert(p, link.info().unwrap().id());
            }
        }
    }
    out
}

/// A new bpffs and the pin directory (not created here) that the data path
/// of `node` uses in it.
fn fresh_pins(node: &str) -> (TestBpffs, PathBuf) {
    let bpffs = TestBpffs::new().unwrap();
    let pins = config(bpffs.path(), node).pin_dir();
    (bpffs, pins)
}

/// What a loader that has exited left for the next one: a service in the
/// pins of `node`, attached to a new cgroup.
struct Loaded {
    bpffs: TestBpffs,
    cg: TestCgroup,
    /// The two TCP backends, answering with the names given to `loaded`.
    backends: [SocketAddrV4; 2],
    /// The pin directory of `node` in `bpffs`.
    pins: PathBuf,
}

/// Starts two TCP backends answering `names`, and has a loader that then
/// exits balance `vip` over them for a new cgroup (named `node`) in a new
/// bpffs under the node name `node`.
fn loaded(cgroup2: &Path, node: &str, names: [&str; 2], vip: SocketAddrV4) -> Loaded {
    let bpffs = TestBpffs::new().unwrap();
    let cg = TestCgroup::new(cgroup2, node).unwrap();
    let backends = names.map(tcp_backend);
    load_and_exit(PROBE, bpffs.path(), node, cg.path(), vip, &backends);
    let pins = config(bpffs.path(), node).pin_dir();
    Loaded {
        bpffs,
        cg,
        backends,
        pins,
    }
}

/// Asserts that `count` TCP connections (strait-probe's count argument)
/// from the cgroup `cg` to `vip` are answered, between them, by exactly
/// the backends named `want` (sorted), and nothing else.
fn assert_answered_by(cg: &Path, vip: SocketAddrV4, count: &str, want: &[&str]) {
    let lines = probe(PROBE, Some(cg), &["tcp", &vip.to_string(), count]);
    assert_eq!(tally(&lines).keys().collect::<Vec<_>>(), want, "{lines:?}");
}

/// Creates the pin directory `pins` and pins in it, as `name`, an empty map
/// of an earlier build (`pin_raw_map`'s type, key and value sizes in bytes,
/// and capacity); returns the map's pin path.
fn pin_earlier_map(
    pins: &Path,
    name: &str,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> PathBuf {
    std::fs::create_dir_all(pins).unwrap();
    let path = pins.join(name);
    drop(pin_raw_map(
        &path,
        map_type,
        key_size,
        value_size,
        max_entries,
    ));
    path
}

#[test]
fn clients_see_no_failure_while_loaders_restart_and_swap_their_programs_in() {
    let Some(p) = privileged::require(
        "clients_see_no_failure_while_loaders_restart_and_swap_their_programs_in",
    ) else {
        return;
    };
    let vip: SocketAddrV4 = "127.100.6.1:80".parse().unwrap();
    let Loaded { bpffs, cg, .. } = loaded(&p.cgroup2, "upgrade-load", ["u0", "u1"], vip);

    // Clients connect through the kernel-balanced VIP without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = {
        let (stop, ok, failed, errors) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
        let cg = cg.path().to_path_buf();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for line in probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "20"]) {
                    if line == "u0" || line == "u1" {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.lock().unwrap().push(line);
                    }
                }
            }
        })
    };
    // Three restarts: each new loader reuses the maps, swaps its programs
    // into the pinned links and exits (no loader runs in between).
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        let mut dp = Datapath::new(&config(bpffs.path(), "upgrade-load")).unwrap();
        assert_eq!(dp.service_count(), 1, "round {round}: the service is kept");
        dp.attach(cg.path()).unwrap();
        assert_eq!(dp.stale_links().unwrap(), 0, "round {round}: not swapped");
        drop(dp);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(ok >= 40, "only {ok} connections while restarting");
    assert_eq!(
        failed,
        0,
        "{failed} of {} connections failed across the restarts: {:?}",
        ok + failed,
        &errors.lock().unwrap()[..failed.min(5)]
    );
    let mut dp = Datapath::new(&config(bpffs.path(), "upgrade-load")).unwrap();
    dp.attach(cg.path()).unwrap();
    dp.cleanup().unwrap();
}

#[test]
fn a_pinned_map_of_another_layout_is_refused_untouched_or_reset_alone() {
    let Some(p) =
        privileged::require("a_pinned_map_of_another_layout_is_refused_untouched_or_reset_alone")
    else {
        return;
    };
    let node = "upgrade-layout";
    let vip: SocketAddrV4 = "127.100.6.2:80".parse().unwrap();
    let Loaded {
        bpffs, cg, pins, ..
    } = loaded(&p.cgroup2, node, ["l0", "l1"], vip);

    // An "older build" whose WORKLOADS values were 8 bytes, not 4.
    let workloads = pins.join(proxy_common::WORKLOADS);
    std::fs::remove_file(&workloads).unwrap();
    let _old = pin_raw_map(&workloads, 1, 4, 8, proxy_common::MAX_WORKLOADS);
    let before = pinned_ids(&pins);

    let err = match Datapath::new(&config(bpffs.path(), node)) {
        Ok(_) => panic!("a pinned map of another layout was accepted"),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("refusal:\n{err}");
    for want in [
        workloads.to_str().unwrap(),
        "pinned:     hash, key 4 B, value 8 B, 65536 entries",
        "this build: hash, key 4 B, value 4 B, 65536 entries",
        "Nothing was changed",
        "strait run --reset-maps",
        "strait cleanup --node upgrade-layout",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert_eq!(
        pinned_ids(&pins),
        before,
        "a pin changed on a refused start"
    );
    // `strait run` refuses the same way, exits non-zero, changes nothing.
    let strait = strait_tests::demo::mesh::sibling("strait").unwrap();
    let config_dir = std::env::temp_dir().join(format!("strait-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&config_dir).unwrap();
    let out = Command::new(&strait)
        .arg("run")
        .arg("--config")
        .arg(&config_dir)
        .args(["--node", node, "--bpffs"])
        .arg(bpffs.path())
        .arg("--pods-cgroup")
        .arg(cg.path())
        .args(["--admin", "127.0.0.1:0", "--outbound", "127.0.0.1:0"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&config_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "strait run started: {stderr}");
    assert!(
        stderr.contains("pinned:     hash, key 4 B, value 8 B") && stderr.contains("--reset-maps"),
        "strait run's error: {stderr}"
    );
    assert_eq!(pinned_ids(&pins), before, "strait run changed a pin");
    // The earlier programs still balance.
    assert_answered_by(cg.path(), vip, "20", &["l0", "l1"]);

    // --reset-maps: only WORKLOADS is replaced (empty, this build's
    // layout); the service map and its entries are reused.
    let mut c = config(bpffs.path(), node);
    c.reset_maps = true;
    let mut dp = Datapath::new(&c).unwrap();
    let after = pinned_ids(&pins);
    for (path, id) in &before {
        if path == &workloads {
            assert_ne!(after[path], *id, "WORKLOADS not replaced");
        } else if !path.starts_with(pins.join("layout")) {
            assert_eq!(after.get(path), Some(id), "{} replaced", path.display());
        }
    }
    let info = aya::maps::MapInfo::from_pin(&workloads).unwrap();
    assert_eq!((info.key_size(), info.value_size()), (4, 4));
    assert_eq!(dp.service_count(), 1);
    dp.attach(cg.path()).unwrap();
    assert_eq!(dp.stale_links().unwrap(), 0);
    assert_answered_by(cg.path(), vip, "20", &["l0", "l1"]);
    // The versions are recorded beside the pins.
    assert!(pins.join("layout").join("WORKLOADS@1").is_dir());
    dp.cleanup().unwrap();
}

#[test]
fn a_pinned_map_with_a_smaller_capacity_is_migrated_with_its_entries() {
    let Some(p) =
        privileged::require("a_pinned_map_with_a_smaller_capacity_is_migrated_with_its_entries")
    else {
        return;
    };
    let node = "upgrade-grow";
    let vip: SocketAddrV4 = "127.100.6.3:80".parse().unwrap();
    let Loaded {
        bpffs,
        cg,
        backends: b,
        pins,
    } = loaded(&p.cgroup2, node, ["g0", "g1"], vip);

    // An older build with a smaller SERVICES map holding the service: its
    // entry is copied from the map the running programs use.
    let services = pins.join(proxy_common::SERVICES);
    let running = aya::maps::MapData::from_pin(&services).unwrap();
    std::fs::remove_file(&services).unwrap();
    let key = std::mem::size_of::<proxy_common::ServiceKey>() as u32;
    let value = std::mem::size_of::<proxy_common::ServiceValue>() as u32;
    let small = pin_raw_map(&services, 1, key, value, 1024);
    {
        let from: aya::maps::HashMap<_, proxy_common::ServiceKey, proxy_common::ServiceValue> =
            aya::maps::HashMap::try_from(aya::maps::Map::HashMap(running)).unwrap();
        let mut to: aya::maps::HashMap<_, proxy_common::ServiceKey, proxy_common::ServiceValue> =
            aya::maps::HashMap::try_from(aya::maps::Map::HashMap(
                aya::maps::MapData::from_pin(&services).unwrap(),
            ))
            .unwrap();
        for item in from.iter() {
            let (k, v) = item.unwrap();
            to.insert(k, v, 0).unwrap();
        }
    }
    let others: BTreeMap<_, _> = pinned_ids(&pins)
        .into_iter()
        .filter(|(p, _)| p != &services)
        .collect();

    let mut dp = Datapath::new(&config(bpffs.path(), node)).unwrap();
    let info = aya::maps::MapInfo::from_pin(&services).unwrap();
    assert_eq!(
        info.max_entries(),
        proxy_common::MAX_SERVICES,
        "not migrated"
    );
    assert_eq!(dp.service_count(), 1, "the entry was not copied");
    let now = pinned_ids(&pins);
    for (path, id) in &others {
        assert_eq!(now.get(path), Some(id), "{} replaced", path.display());
    }
    // What reaches the old map until the links run this build's programs
    // is copied once they do: keys the new map lacks, never over an entry
    // it has.
    let mut old: aya::maps::HashMap<_, proxy_common::ServiceKey, proxy_common::ServiceValue> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(
            aya::maps::MapData::from_fd(small).unwrap(),
        ))
        .unwrap();
    let existing: Vec<proxy_common::ServiceKey> = old.keys().map(Result::unwrap).collect();
    assert_eq!(existing.len(), 1);
    old.insert(existing[0], proxy_common::ServiceValue::default(), 0)
        .unwrap();
    let late = proxy_common::ServiceKey {
        vip: u32::from(Ipv4Addr::new(127, 100, 6, 99)).to_be(),
        port: 80u16.to_be(),
        proto: 6,
        pad: 0,
    };
    old.insert(late, proxy_common::ServiceValue::default(), 0)
        .unwrap();
    dp.attach(cg.path()).unwrap();
    assert_eq!(
        dp.kernel_entries().services,
        2,
        "the late entry was not copied"
    );
    assert_eq!(dp.stale_links().unwrap(), 0);
    assert_answered_by(cg.path(), vip, "20", &["g0", "g1"]);
    // The new map is the one the programs use: a change is seen.
    dp.apply(&[service(vip, L4LoadBalancer::Random, &[(b[1], 1, true)])])
        .unwrap();
    assert_answered_by(cg.path(), vip, "10", &["g1"]);
    dp.cleanup().unwrap();
}

// ---- the uplink XDP program across restarts -------------------------------

const PORT: u16 = 8080;

/// Whether a connection from `from` (a local address of the client
/// namespace) to `to` gets the server's answer within `timeout`.
fn reaches(ns: &str, from: Ipv4Addr, to: Ipv4Addr, timeout: Duration) -> bool {
    netns::run_in(ns, || {
        let s = connect_from(from, to, timeout);
        let Some(mut s) = s else { return false };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok"
    })
    .unwrap()
}

/// A TCP connection from `from` to `to:PORT`, or `None` within `timeout`.
fn connect_from(from: Ipv4Addr, to: Ipv4Addr, timeout: Duration) -> Option<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let s = TcpStream::from_raw_fd(fd);
        let sin = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(a).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sin(from, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            panic!("bind {from}: {}", std::io::Error::last_os_error());
        }
        s.set_nonblocking(true).unwrap();
        let remote = sin(to, PORT);
        libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, timeout.as_millis() as i32) != 1 {
            return None;
        }
        s.take_error().ok()?.is_none().then_some(())?;
        s.set_nonblocking(false).unwrap();
        Some(s)
    }
}

/// (link id, program id) of the pinned uplink link on `iface`.
fn uplink_link(pins: &Path, iface: &str) -> (u32, u32) {
    let link = FdLink::from(
        PinnedLink::from_pin(pins.join("uplink").join(format!("xdp_lb@{iface}"))).unwrap(),
    );
    let info = link.info().unwrap();
    (info.id(), info.program_id())
}

/// Whether `ip link` shows an XDP program on `iface` in `ns`.
fn xdp_attached(ns: &str, iface: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", iface])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip link show: {out:?}");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn the_uplink_xdp_program_stays_attached_across_restarts_and_detaches_when_dropped() {
    let name = "the_uplink_xdp_program_stays_attached_across_restarts_and_detaches_when_dropped";
    let Some(_p) = privileged::require(name) else {
        return;
    };
    let id = names::new_node_id();
    let node_name = format!("{}{id}-xdpup", names::PREFIX);
    let (client, node) = (format!("{node_name}-cli"), format!("{node_name}-node"));
    let spaces = Topology::create(&[&client, &node]);
    // 10.79.0.10 is denied in XDP, 10.79.0.20 is not.
    ip_in(
        &client,
        &[
            &format!("link add v0 type veth peer name v0 netns {node}"),
            "addr add 10.79.0.10/24 dev v0",
            "addr add 10.79.0.20/24 dev v0",
            "link set v0 up",
            "link set lo up",
        ],
    );
    ip_in(
        &node,
        &[
            "addr add 10.79.0.2/24 dev v0",
            "link set v0 up",
            "link set lo up",
        ],
    );
    let l = echo::listen(&node, ([0, 0, 0, 0], PORT)).unwrap();
    echo::tcp(l, |_| "ok".into(), Then::Close);
    let (denied, allowed) = (Ipv4Addr::new(10, 79, 0, 10), Ipv4Addr::new(10, 79, 0, 20));
    let web = Ipv4Addr::new(10, 79, 0, 2);
    let uplink = UplinkConfig {
        source: web,
        gateway_mac: [0x02, 0, 0, 0, 0, 1],
    };
    let (bpffs, pins) = fresh_pins(&node_name);
    let attach = |dp: &mut Datapath| {
        netns::run_in(&node, || dp.attach_uplink("v0", &uplink))
            .unwrap()
            .expect("attach xdp_lb to the node's veth");
    };
    let wait = Duration::from_secs(10);

    let mut dp = Datapath::new(&config(bpffs.path(), &node_name)).unwrap();
    attach(&mut dp);
    dp.set_deny_sources(&[(denied.into(), 32)]).unwrap();
    assert!(
        reaches(&client, allowed, web, wait),
        "allowed source before"
    );
    assert!(
        !reaches(&client, denied, web, Duration::from_millis(500)),
        "denied before"
    );
    let (link, first_prog) = uplink_link(&pins, "v0");

    // Both clients keep connecting through the restarts: the allowed one
    // never fails, the denied one never gets through (no moment without
    // the program or its tries).
    let watch = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let watcher = {
        let (watch, counts, client) = (watch.clone(), counts.clone(), client.clone());
        std::thread::spawn(move || {
            while !watch.load(Ordering::SeqCst) {
                if reaches(&client, allowed, web, Duration::from_secs(5)) {
                    counts[0].fetch_add(1, Ordering::SeqCst);
                } else {
                    counts[1].fetch_add(1, Ordering::SeqCst);
                }
                if reaches(&client, denied, web, Duration::from_millis(200)) {
                    counts[2].fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // The daemon exits: the pinned link keeps the program on the uplink.
    drop(dp);
    std::thread::sleep(Duration::from_millis(500));
    assert!(xdp_attached(&node, "v0"), "detached when the loader exited");
    // A new build starts: same link, its own program, the same tries and
    // counters.
    let mut dp = Datapath::new(&config(bpffs.path(), &node_name)).unwrap();
    let drops = dp.deny_drops();
    assert_eq!(drops.len(), 1, "deny prefix not recovered: {drops:?}");
    assert!(drops[0].1 >= 1, "drop counter not kept: {drops:?}");
    attach(&mut dp);
    let (link2, second_prog) = uplink_link(&pins, "v0");
    assert_eq!(link2, link, "the link was replaced, not updated");
    assert_ne!(
        second_prog, first_prog,
        "the new program was not swapped in"
    );
    assert_eq!(
        dp.stale_links().unwrap(),
        0,
        "the uplink runs an old program"
    );
    std::thread::sleep(Duration::from_millis(500));
    watch.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let [ok, failed, leaked] = [0, 1, 2].map(|i| counts[i].load(Ordering::SeqCst));
    assert!(ok >= 3, "only {ok} connections during the restart");
    assert_eq!(
        failed, 0,
        "{failed} allowed connections failed during the restart"
    );
    assert_eq!(
        leaked, 0,
        "{leaked} denied connections got through during the restart"
    );

    // The new object's tries are the ones the attached program reads.
    dp.set_deny_sources(&[]).unwrap();
    assert!(reaches(&client, denied, web, wait), "deny not lifted");
    dp.set_deny_sources(&[(denied.into(), 32)]).unwrap();
    assert!(!reaches(&client, denied, web, Duration::from_millis(500)));

    // Restarted without an uplink: the program is detached.
    drop(dp);
    let mut dp = Datapath::new(&config(bpffs.path(), &node_name)).unwrap();
    dp.detach_uplink();
    assert!(dp.pinned_uplinks().is_empty());
    assert!(
        !xdp_attached(&node, "v0"),
        "still attached without an uplink"
    );
    assert!(reaches(&client, denied, web, wait), "still dropped");
    dp.cleanup().unwrap();
    drop(bpffs);
    drop(spaces);
}

/// The index of each real in the pinned `XLB_REALS`.
fn real_indexes(pins: &Path) -> BTreeMap<Ipv4Addr, u32> {
    let reals: aya::maps::Array<_, proxy_common::XlbReal> = aya::maps::Array::try_from(
        aya::maps::Map::Array(aya::maps::MapData::from_pin(pins.join("XLB_REALS")).unwrap()),
    )
    .unwrap();
    reals
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let r = r.unwrap();
            (r.ip != 0).then(|| (Ipv4Addr::from(u32::from_be(r.ip)), i as u32))
        })
        .collect()
}

#[test]
fn external_vip_tables_and_flows_are_kept_across_a_restart() {
    let Some(_p) = privileged::require("external_vip_tables_and_flows_are_kept_across_a_restart")
    else {
        return;
    };
    use strait::datapath::{ExternalVip, L4Protocol};
    let node = "upgrade-xlb";
    let (bpffs, pins) = fresh_pins(node);
    let (a, b, c) = (
        Ipv4Addr::new(10, 80, 0, 1),
        Ipv4Addr::new(10, 80, 0, 2),
        Ipv4Addr::new(10, 80, 0, 3),
    );
    let vip = |reals: Vec<(Ipv4Addr, u32)>| ExternalVip {
        vip: Ipv4Addr::new(198, 51, 100, 9),
        port: 443,
        protocol: L4Protocol::Tcp,
        reals: reals.into_iter().map(|(a, w)| (a.into(), w)).collect(),
    };
    let mut dp = Datapath::new(&config(bpffs.path(), node)).unwrap();
    dp.set_external_vips(&[vip(vec![(a, 1), (b, 1)])]).unwrap();
    let first = real_indexes(&pins);
    assert_eq!(first.keys().copied().collect::<Vec<_>>(), [a, b]);
    // A flow the balancer pinned to b.
    let flow = proxy_common::XlbFlow {
        src: u32::from(Ipv4Addr::new(203, 0, 113, 7)).to_be(),
        dst: u32::from(Ipv4Addr::new(198, 51, 100, 9)).to_be(),
        sport: 40_000u16.to_be(),
        dport: 443u16.to_be(),
        proto: 6,
        pad: [0; 3],
    };
    let conns = || {
        let m: aya::maps::HashMap<_, proxy_common::XlbFlow, proxy_common::XlbConn> =
            aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(
                aya::maps::MapData::from_pin(pins.join("XLB_CONNS")).unwrap(),
            ))
            .unwrap();
        m
    };
    conns()
        .insert(
            flow,
            proxy_common::XlbConn {
                real: first[&b],
                pad: 0,
            },
            0,
        )
        .unwrap();
    drop(dp);

    // The next run learns the indexes: b keeps its own (the flow stays on
    // b), a's is cleared, and c gets an index no flow points at.
    let mut dp = Datapath::new(&config(bpffs.path(), node)).unwrap();
    let r = dp.set_external_vips(&[vip(vec![(b, 1), (c, 1)])]).unwrap();
    assert_eq!((r.vips, r.reals), (1, 2), "{r:?}");
    let second = real_indexes(&pins);
    assert_eq!(second[&b], first[&b], "b moved: {first:?} → {second:?}");
    assert!(!second.contains_key(&a));
    assert!(
        !first.values().any(|i| *i == second[&c]),
        "c took an index a flow may still name: {first:?} → {second:?}"
    );
    assert_eq!(conns().get(&flow, 0).unwrap().real, first[&b], "flow lost");
    dp.cleanup().unwrap();
}

/// Fills the VIP hash map an earlier build pinned at `v1` as it left it:
/// `key` on ring 0 (ids started at 0 then) and the address `marker`.
fn fill_v1_vips<K: aya::Pod>(v1: &Path, key: K, marker: K) {
    use proxy_common::{XlbVip, XLB_ADDRESS_ONLY};
    let mut m: aya::maps::HashMap<_, K, XlbVip> = aya::maps::HashMap::try_from(
        aya::maps::Map::HashMap(aya::maps::MapData::from_pin(v1).unwrap()),
    )
    .unwrap();
    m.insert(key, XlbVip { ring: 0, flags: 0 }, 0).unwrap();
    let v = XlbVip {
        ring: XLB_ADDRESS_ONLY,
        flags: 0,
    };
    m.insert(marker, v, 0).unwrap();
}

/// The used slots of the pinned VIP bucket table at `path` (buckets of
/// type `B`; `slots` gives a bucket's slots as (key with `pad` 0, or
/// `None` when unused; value)), sorted by key.
fn vip_table<B: aya::Pod, K: Ord>(
    path: &Path,
    slots: impl Fn(B) -> Vec<(Option<K>, proxy_common::XlbVip)>,
) -> Vec<(K, proxy_common::XlbVip)> {
    let a: aya::maps::Array<_, B> = aya::maps::Array::try_from(aya::maps::Map::Array(
        aya::maps::MapData::from_pin(path).unwrap(),
    ))
    .unwrap();
    let mut v: Vec<(K, proxy_common::XlbVip)> = a
        .iter()
        .flat_map(|b| slots(b.unwrap()))
        .filter_map(|(k, v)| k.map(|k| (k, v)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Asserts that the earlier build's VIP hash map at `v1` is unpinned and
/// that `table` (the VIP table, as `vip_table` reads it) now holds its two
/// entries: `marker` (address only) first, then `key` on a ring id this
/// build uses (never 0). Returns that ring id.
fn assert_copied_from_v1<K: PartialEq + std::fmt::Debug>(
    v1: &Path,
    table: impl Fn() -> Vec<(K, proxy_common::XlbVip)>,
    marker: K,
    key: K,
) -> u32 {
    use proxy_common::{XlbVip, XLB_ADDRESS_ONLY};
    assert!(!v1.exists(), "the earlier build's map is still pinned");
    let got = table();
    assert_eq!(got.len(), 2, "{got:?}");
    let v = XlbVip {
        ring: XLB_ADDRESS_ONLY,
        flags: 0,
    };
    assert_eq!(got[0], (marker, v));
    assert_eq!(got[1].0, key);
    let ring = got[1].1.ring;
    assert_ne!(ring, 0, "ring id 0 is never used by this build");
    ring
}

/// The ring ids in the pinned rings map at `path`.
fn ring_ids(path: &Path) -> Vec<u32> {
    let rings: aya::maps::HashMap<_, u32, proxy_common::MaglevTable> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(
            aya::maps::MapData::from_pin(path).unwrap(),
        ))
        .unwrap();
    rings.keys().map(|k| k.unwrap()).collect()
}

#[test]
fn an_earlier_builds_vip_hash_map_is_copied_into_the_vip_table_and_unpinned() {
    let Some(_p) = privileged::require(
        "an_earlier_builds_vip_hash_map_is_copied_into_the_vip_table_and_unpinned",
    ) else {
        return;
    };
    use proxy_common::{XlbVip, XlbVipBucket, XlbVipKey, XLB_VIP_USED};
    use strait::datapath::{ExternalVip, L4Protocol};
    let node = "upgrade-xlb-v1";
    let (bpffs, pins) = fresh_pins(node);
    // What a build with the hash map left: 198.51.100.9:443/TCP on ring 0
    // (ids started at 0 then) and the address marker.
    let max = proxy_common::MAX_XLB_VIPS;
    let v1 = pin_earlier_map(&pins, proxy_common::XLB_VIPS_V1, 1, 8, 8, max);
    let addr = u32::from(Ipv4Addr::new(198, 51, 100, 9)).to_be();
    let key = XlbVipKey {
        vip: addr,
        port: 443u16.to_be(),
        proto: 6,
        pad: 0,
    };
    let marker = XlbVipKey {
        vip: addr,
        port: 0,
        proto: 0,
        pad: 0,
    };
    fill_v1_vips(&v1, key, marker);
    let table = || {
        vip_table(&pins.join(proxy_common::XLB_VIPS), |b: XlbVipBucket| {
            b.slots
                .iter()
                .map(|s| {
                    let k = (s.key.pad == XLB_VIP_USED).then_some(XlbVipKey { pad: 0, ..s.key });
                    (k, s.vip)
                })
                .collect()
        })
    };
    let mut dp = Datapath::new(&config(bpffs.path(), node)).unwrap();
    let ring = assert_copied_from_v1(&v1, table, marker, key);
    // The next apply keeps the VIP on its (new) ring id and builds it.
    let r = dp
        .set_external_vips(&[ExternalVip {
            vip: Ipv4Addr::new(198, 51, 100, 9),
            port: 443,
            protocol: L4Protocol::Tcp,
            reals: vec![(Ipv4Addr::new(10, 80, 0, 1).into(), 1)],
        }])
        .unwrap();
    assert_eq!((r.vips, r.without_reals), (1, 0), "{r:?}");
    let again = table();
    assert!(
        again.contains(&(key, XlbVip { ring, flags: 0 })),
        "{again:?}"
    );
    let ids = ring_ids(&pins.join(proxy_common::XLB_RINGS));
    assert_eq!(ids, [ring], "rings left: {ids:?}");
    dp.cleanup().unwrap();
}

/// Gives `dp` an IPv6 uplink (source fd00::1, gateway MAC
/// 02:00:00:00:00:fd), so IPv6 VIPs are tunnelled to their nodes.
fn configure_uplink6(dp: &mut Datapath) {
    dp.configure_uplink6(Some(&strait::datapath::UplinkConfig6 {
        source: "fd00::1".parse().unwrap(),
        gateway_mac: [2, 0, 0, 0, 0, 0xfd],
    }))
    .unwrap();
}

/// Runs `prog` on an IPv6 TCP segment from `src`:`sport` to `dst`:443 with
/// TCP `flags`, asserts it is transmitted (XDP_TX), and returns the outer
/// IPv6 destination it was tunnelled to (the real's address).
fn tunnelled_to(
    prog: &aya::programs::Xdp,
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    sport: u16,
    flags: u8,
) -> [u8; 16] {
    let mut f = strait_tests::xdp::eth([0x86, 0xdd]);
    let l4 = strait_tests::xdp::tcp(sport, 443, flags, b"");
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, l4.len() as u8, 6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&l4);
    let (v, out) = strait_tests::xdp::run(prog, &f);
    assert_eq!(v, strait_tests::xdp::XDP_TX);
    out[38..54].try_into().unwrap()
}

#[test]
fn an_earlier_builds_ipv6_vip_hash_map_is_copied_into_the_bucket_table_and_unpinned() {
    let Some(_p) = privileged::require(
        "an_earlier_builds_ipv6_vip_hash_map_is_copied_into_the_bucket_table_and_unpinned",
    ) else {
        return;
    };
    use proxy_common::{XlbVip, XlbVipBucket6, XlbVipKey6, XLB_VIP_USED};
    use std::net::Ipv6Addr;
    use strait::datapath::{ExternalVip6, L4Protocol};
    let node = "upgrade-xlb6-v1";
    let (bpffs, pins) = fresh_pins(node);
    // What a build with the IPv6 VIP hash map left: [2001:db8:7::9]:443/TCP
    // on ring 0 (ids started at 0 then) and the address marker.
    let max = proxy_common::MAX_XLB_VIPS6;
    let v1 = pin_earlier_map(&pins, proxy_common::XLB_VIPS6_V1, 1, 20, 8, max);
    let addr: Ipv6Addr = "2001:db8:7::9".parse().unwrap();
    let key = XlbVipKey6 {
        vip: addr.octets(),
        port: 443u16.to_be(),
        proto: 6,
        pad: 0,
    };
    let marker = XlbVipKey6 {
        port: 0,
        proto: 0,
        ..key
    };
    fill_v1_vips(&v1, key, marker);
    let table = || {
        vip_table(&pins.join(proxy_common::XLB_VIPS6), |b: XlbVipBucket6| {
            b.slots
                .iter()
                .map(|s| {
                    let k = (s.key.pad == XLB_VIP_USED).then_some(XlbVipKey6 { pad: 0, ..s.key });
                    (k, s.vip)
                })
                .collect()
        })
    };
    let mut dp = Datapath::new(&config(bpffs.path(), node)).unwrap();
    let ring = assert_copied_from_v1(&v1, table, marker, key);
    // The next apply keeps the VIP on its (new) ring id and builds it; the
    // VIP's packets reach its node.
    let real: Ipv6Addr = "fd00::80:1".parse().unwrap();
    configure_uplink6(&mut dp);
    let r = dp
        .set_external_vips6(&[ExternalVip6 {
            vip: addr,
            port: 443,
            protocol: L4Protocol::Tcp,
            reals: vec![(real, 1)],
        }])
        .unwrap();
    assert_eq!((r.vips, r.without_reals), (1, 0), "{r:?}");
    assert!(table().contains(&(key, XlbVip { ring, flags: 0 })));
    let ids = ring_ids(&pins.join(proxy_common::XLB_RINGS6));
    assert_eq!(ids, [ring], "rings left: {ids:?}");
    strait::datapath::load_xdp_lb(dp.ebpf_mut()).unwrap();
    let prog = strait_tests::xdp::prog(dp.ebpf_mut());
    let client: Ipv6Addr = "2001:db8:99::1".parse().unwrap();
    assert_eq!(
        tunnelled_to(prog, client, addr, 40000, 0x10),
        real.octets(),
        "tunnelled to the VIP's node"
    );
    dp.cleanup().unwrap();
}

#[test]
fn an_earlier_builds_ipv6_connection_table_is_copied_and_its_flows_keep_their_node() {
    let Some(_p) = privileged::require(
        "an_earlier_builds_ipv6_connection_table_is_copied_and_its_flows_keep_their_node",
    ) else {
        return;
    };
    use proxy_common::{flow_hash6, XlbConn, XlbConn6, XlbFlow6};
    use std::net::Ipv6Addr;
    use strait::datapath::{ExternalVip6, L4Protocol};
    let node = "upgrade-xlb6-conns";
    let (bpffs, pins) = fresh_pins(node);
    let vip: Ipv6Addr = "2001:db8:7::9".parse().unwrap();
    let client: Ipv6Addr = "2001:db8:99::1".parse().unwrap();
    let (a, b): (Ipv6Addr, Ipv6Addr) =
        ("fd00::80:1".parse().unwrap(), "fd00::80:2".parse().unwrap());
    let flow = |sport: u16| XlbFlow6 {
        src: client.octets(),
        dst: vip.octets(),
        sport: sport.to_be(),
        dport: 443u16.to_be(),
        proto: 6,
        pad: [0; 3],
    };
    // What a build keyed by the whole flow left: 32 flows pinned to real
    // index 1 (b: reals take indexes in address order).
    let max = proxy_common::MAX_XLB_CONNS6;
    let v1 = pin_earlier_map(&pins, proxy_common::XLB_CONNS6_V1, 9, 40, 8, max);
    {
        let mut m: aya::maps::HashMap<_, XlbFlow6, XlbConn> = aya::maps::HashMap::try_from(
            aya::maps::Map::LruHashMap(aya::maps::MapData::from_pin(&v1).unwrap()),
        )
        .unwrap();
        for sport in 1000..1032 {
            m.insert(flow(sport), XlbConn { real: 1, pad: 0 }, 0)
                .unwrap();
        }
    }
    let mut dp = Datapath::new(&config(bpffs.path(), node)).unwrap();
    assert!(!v1.exists(), "the earlier build's table is still pinned");
    {
        let m: aya::maps::HashMap<_, u64, XlbConn6> =
            aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(
                aya::maps::MapData::from_pin(pins.join(proxy_common::XLB_CONNS6)).unwrap(),
            ))
            .unwrap();
        for sport in 1000..1032 {
            let f = flow(sport);
            let want = XlbConn6 {
                real: 1,
                pad: 0,
                flow: f,
            };
            assert_eq!(m.get(&flow_hash6(&f), 0).unwrap(), want);
        }
    }
    configure_uplink6(&mut dp);
    dp.set_external_vips6(&[ExternalVip6 {
        vip,
        port: 443,
        protocol: L4Protocol::Tcp,
        reals: vec![(a, 1), (b, 1)],
    }])
    .unwrap();
    strait::datapath::load_xdp_lb(dp.ebpf_mut()).unwrap();
    let prog = strait_tests::xdp::prog(dp.ebpf_mut());
    let send = |sport: u16, flags: u8| tunnelled_to(prog, client, vip, sport, flags);
    // Every migrated flow stays on b, though the ring sends some of them
    // (as new flows) to a.
    for sport in 1000..1032 {
        assert_eq!(send(sport, 0x10), b.octets(), "flow {sport} moved");
    }
    let by_ring: Vec<[u8; 16]> = (1000..1032).map(|s| send(s, 0x02)).collect();
    assert!(by_ring.contains(&a.octets()), "the ring sends no flow to a");
    dp.cleanup().unwrap();
}

/// `strait run` on `node` (with `extra` flags), logging to `log_name` in
/// the node's directory, once its admin API says `/ready`.
fn start_daemon(node: &Node, config_dir: &Path, log_name: &str, extra: &[&str]) -> Daemon {
    let mut daemon = Daemon::on(node, config_dir)
        .args(["--admin", "127.0.0.1:15000"])
        .args(extra)
        .log_name(log_name)
        .spawn()
        .unwrap();
    daemon.wait_ready(
        node,
        "127.0.0.1:15000".parse().unwrap(),
        Duration::from_secs(30),
    );
    daemon
}

#[test]
fn strait_run_keeps_its_uplink_program_across_a_restart_and_detaches_it_without_the_flag() {
    let name =
        "strait_run_keeps_its_uplink_program_across_a_restart_and_detaches_it_without_the_flag";
    let Some(p) = privileged::require(name) else {
        return;
    };
    let node = Node::new(&p.cgroup2, "upgrade-daemon", 191).unwrap();
    // The uplink: a veth pair inside the node's namespace (removed with it).
    ip_in(
        node.netns(),
        &[
            "link add up0 type veth peer name up1",
            "addr add 10.81.0.2/24 dev up0",
            "link set up0 up",
            "link set up1 up",
        ],
    );
    let config_dir = node.tmp_dir().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    node.write_config(&config_dir).unwrap();
    let pins = config(&node.bpffs_dir(), node.name()).pin_dir();
    let uplink = [
        "--xdp-uplink",
        "up0",
        "--xdp-source",
        "10.81.0.2",
        "--xdp-gateway-mac",
        "02:00:00:00:00:01",
        "--xdp-source6",
        "fd81::2",
    ];

    let stop = Duration::from_secs(15);
    let daemon = start_daemon(&node, &config_dir, "strait-1.log", &uplink);
    assert!(xdp_attached(node.netns(), "up0"), "not attached");
    // An IPv6 source but no IPv6 default route: IPv6 VIPs fail closed
    // (the IPv4 gateway's MAC is not reused), said at start.
    let said = daemon.log();
    assert!(
        said.contains("no IPv6 gateway MAC for the uplink up0")
            && said.contains("no IPv6 default route"),
        "{said}"
    );
    let (link, first_prog) = uplink_link(&pins, "up0");
    assert!(daemon.terminate(stop).success());
    assert!(
        xdp_attached(node.netns(), "up0"),
        "the uplink program detached when the daemon stopped"
    );
    assert_eq!(uplink_link(&pins, "up0").0, link);

    let daemon = start_daemon(&node, &config_dir, "strait-2.log", &uplink);
    let (link2, second_prog) = uplink_link(&pins, "up0");
    assert_eq!(link2, link, "the restarted daemon made a new link");
    assert_ne!(second_prog, first_prog, "its program was not swapped in");
    assert!(daemon.terminate(stop).success());

    // SIGTERM in the middle of a start (config read, programs not yet
    // swapped in): the start completes, then the daemon stops with exit 0
    // — never killed by the signal, never leaving a half-made attach.
    let daemon = Daemon::on(&node, &config_dir)
        .args(["--admin", "127.0.0.1:15000"])
        .args(uplink)
        .log_name("strait-sigterm.log")
        .spawn()
        .unwrap();
    daemon.wait_log("config compiled", 1);
    assert!(daemon.terminate(stop).success());
    assert!(xdp_attached(node.netns(), "up0"), "detached by a cut start");
    let (link3, third_prog) = uplink_link(&pins, "up0");
    assert_eq!(link3, link);
    assert_ne!(third_prog, second_prog, "the start was cut before its swap");

    // Started without --xdp-uplink: the program goes.
    let daemon = start_daemon(&node, &config_dir, "strait-3.log", &[]);
    assert!(
        !xdp_attached(node.netns(), "up0"),
        "still attached without --xdp-uplink"
    );
    assert!(!pins.join("uplink").join("xdp_lb@up0").exists());
    assert!(daemon.terminate(stop).success());
    let out = Command::new(strait_tests::demo::mesh::sibling("strait").unwrap())
        .args(["cleanup", "--node", node.name(), "--bpffs"])
        .arg(node.bpffs_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `(address, length)` of the source prefix `addr`/`len`.
fn prefix(addr: &str, len: u8) -> SourcePrefix {
    (addr.parse().unwrap(), len)
}

/// Has a loader for `node` in `bpffs` pin the deny state for `prefixes`,
/// then exit.
fn pin_deny_sources(bpffs: &Path, node: &str, prefixes: &[SourcePrefix]) {
    let mut dp = Datapath::new(&config(bpffs, node)).unwrap();
    dp.set_deny_sources(prefixes).unwrap();
}

/// A (re)started loader for `node` in `bpffs`, reusing its pins, with
/// `xdp_deny` loaded (not attached).
fn with_xdp_deny(bpffs: &Path, node: &str) -> Datapath {
    let mut dp = Datapath::new(&config(bpffs, node)).unwrap();
    strait::datapath::load_xdp_deny(dp.ebpf_mut()).unwrap();
    dp
}

/// An earlier build's IPv6 deny state — the `DENY_V6` trie, its "maybe"
/// bitmap `DENY_V6_SUMMARY`, `DENY_CONFIG` naming that bitmap, and no
/// `DENY_V6_LEN`/`DENY_V6_BUCKETS` — is adopted: the bitmap is unpinned,
/// the program walks the trie until the first sync, the recovered
/// prefixes get their buckets, and across a restart of this build the
/// buckets are reused and a removed prefix leaves none behind.
#[test]
fn an_earlier_builds_ipv6_deny_bitmap_is_unpinned_and_its_prefixes_get_buckets() {
    let Some(_p) = privileged::require(
        "an_earlier_builds_ipv6_deny_bitmap_is_unpinned_and_its_prefixes_get_buckets",
    ) else {
        return;
    };
    use proxy_common::{deny_mode, DenyConfig, DenyV6Bucket};
    let node = "upgrade-deny6";
    let (bpffs, pins) = fresh_pins(node);
    let site = prefix("2001:db8:bad::", 48);
    let host = prefix("2001:db8:5::7", 128);
    pin_deny_sources(bpffs.path(), node, &[site, host]);
    // Made to look like the earlier build's pins.
    for name in [proxy_common::DENY_V6_LEN, proxy_common::DENY_V6_BUCKETS] {
        std::fs::remove_file(pins.join(name)).unwrap();
    }
    let summary = pins.join(proxy_common::DENY_V6_SUMMARY_V1);
    drop(pin_raw_map(&summary, 2, 4, 8, 33_792));
    {
        let mut cfg: aya::maps::Array<_, DenyConfig> =
            aya::maps::Array::try_from(aya::maps::Map::Array(
                aya::maps::MapData::from_pin(pins.join(proxy_common::DENY_CONFIG)).unwrap(),
            ))
            .unwrap();
        let mut c = cfg.get(&0, 0).unwrap();
        c.v6_mode = deny_mode::BY_SUMMARY6;
        cfg.set(0, c, 0).unwrap();
    }
    let verdict = |dp: &mut Datapath, src: &str| {
        let dst = "fd00::5".parse().unwrap();
        deny_verdict(dp, &tcp_frame(src.parse().unwrap(), dst, 0x10))
    };
    let buckets = |pins: &Path| -> usize {
        let a: aya::maps::Array<_, DenyV6Bucket> =
            aya::maps::Array::try_from(aya::maps::Map::Array(
                aya::maps::MapData::from_pin(pins.join(proxy_common::DENY_V6_BUCKETS)).unwrap(),
            ))
            .unwrap();
        a.iter()
            .filter(|b| *b.as_ref().unwrap() != DenyV6Bucket::default())
            .count()
    };

    let mut dp = with_xdp_deny(bpffs.path(), node);
    assert!(
        !summary.exists(),
        "the earlier build's bitmap is still pinned"
    );
    // Before any sync: the earlier mode, read as "walk the trie".
    assert_eq!(verdict(&mut dp, "2001:db8:bad::9"), 1);
    assert_eq!(verdict(&mut dp, "2001:db8:5::7"), 1);
    assert_eq!(verdict(&mut dp, "2001:db8:5::8"), 2);
    // The recovered prefixes already have their buckets.
    assert_eq!(buckets(&pins), 2);
    dp.set_deny_sources(&[site, host]).unwrap();
    assert_eq!(verdict(&mut dp, "2001:db8:bad::9"), 1);
    assert_eq!(verdict(&mut dp, "2001:db8:5::7"), 1);
    assert_eq!(verdict(&mut dp, "2001:db8:bae::9"), 2);
    drop(dp);

    // A restart of this build: buckets reused; the host removed.
    let mut dp = with_xdp_deny(bpffs.path(), node);
    assert_eq!(buckets(&pins), 2);
    assert_eq!(verdict(&mut dp, "2001:db8:5::7"), 1);
    dp.set_deny_sources(&[site]).unwrap();
    assert_eq!(buckets(&pins), 1);
    assert_eq!(verdict(&mut dp, "2001:db8:5::7"), 2);
    assert_eq!(verdict(&mut dp, "2001:db8:bad::9"), 1);
    let drops = dp.deny_drops();
    assert_eq!(drops, vec![(site, 3)], "{drops:?}");
    dp.cleanup().unwrap();
}

/// The verdict of `dp`'s loaded `xdp_deny` for `frame`.
fn deny_verdict(dp: &mut Datapath, frame: &[u8]) -> u32 {
    let prog: &aya::programs::Xdp = dp
        .ebpf_mut()
        .program("xdp_deny")
        .unwrap()
        .try_into()
        .unwrap();
    strait_tests::xdp::run(prog, frame).0
}

/// An earlier build's IPv4 deny state — `DENY_V4_SLASH16` holding length
/// summaries only and no `DENY_V4_DIR24` — is adopted: until the first
/// sync every source takes the length path (same verdicts), the sync gives
/// the /16s their leaves and blocks, and across a restart of this build
/// the blocks are adopted and a removed prefix's block is released.
#[test]
fn an_earlier_builds_ipv4_deny_summary_is_adopted_and_its_slash16s_get_blocks() {
    let Some(_p) = privileged::require(
        "an_earlier_builds_ipv4_deny_summary_is_adopted_and_its_slash16s_get_blocks",
    ) else {
        return;
    };
    use proxy_common::{deny4_kind, DENY_V4_DIRECT_MASK, DENY_V4_KIND_SHIFT};
    let node = "upgrade-deny4";
    let (bpffs, pins) = fresh_pins(node);
    let site = prefix("192.0.2.0", 24);
    let host = prefix("198.51.100.7", 32);
    let wide = prefix("10.0.0.0", 8);
    pin_deny_sources(bpffs.path(), node, &[site, host, wide]);
    let summary = || -> aya::maps::Array<_, u64> {
        aya::maps::Array::try_from(aya::maps::Map::Array(
            aya::maps::MapData::from_pin(pins.join(proxy_common::DENY_V4_SLASH16)).unwrap(),
        ))
        .unwrap()
    };
    // (leaf entries, block entries) in the pinned summary.
    let kinds = || -> (usize, usize) {
        let a = summary();
        let kind = |k| {
            a.iter()
                .filter(|e| *e.as_ref().unwrap() >> DENY_V4_KIND_SHIFT == k)
                .count()
        };
        (kind(deny4_kind::LEAF), kind(deny4_kind::BLOCK))
    };
    assert_eq!(kinds(), (256, 2));
    // Made to look like the earlier build's pins.
    std::fs::remove_file(pins.join(proxy_common::DENY_V4_DIR24)).unwrap();
    {
        let mut a = summary();
        let entries: Vec<(u32, u64)> = (0..65_536u32)
            .map(|i| (i, a.get(&i, 0).unwrap()))
            .filter(|(_, e)| *e != 0)
            .collect();
        for (i, e) in entries {
            a.set(i, e & !DENY_V4_DIRECT_MASK, 0).unwrap();
        }
    }
    assert_eq!(kinds(), (0, 0));
    let verdict = |dp: &mut Datapath, src: &str| {
        let dst = Ipv4Addr::new(10, 96, 0, 5).into();
        deny_verdict(dp, &tcp_frame(src.parse().unwrap(), dst, 0x10))
    };

    let check = |dp: &mut Datapath, host_denied: bool| {
        for (src, want) in [
            ("192.0.2.9", 1),
            ("192.0.3.9", 2),
            ("10.200.1.1", 1),
            ("11.0.0.1", 2),
            ("198.51.100.7", if host_denied { 1 } else { 2 }),
            ("198.51.100.8", 2),
        ] {
            assert_eq!(verdict(dp, src), want, "{src}");
        }
    };

    let mut dp = with_xdp_deny(bpffs.path(), node);
    // Before any sync: the length path.
    check(&mut dp, true);
    assert_eq!(kinds(), (0, 0));
    dp.set_deny_sources(&[site, host, wide]).unwrap();
    assert_eq!(kinds(), (256, 2));
    check(&mut dp, true);
    drop(dp);

    // A restart of this build: blocks adopted; the host removed.
    let mut dp = with_xdp_deny(bpffs.path(), node);
    assert_eq!(kinds(), (256, 2));
    check(&mut dp, true);
    dp.set_deny_sources(&[site, wide]).unwrap();
    assert_eq!(kinds(), (256, 1));
    check(&mut dp, false);
    let drops = dp.deny_drops();
    assert_eq!(drops, vec![(wide, 4), (site, 4)], "{drops:?}");
    dp.cleanup().unwrap();
}
