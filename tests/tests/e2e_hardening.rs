//! Tier 3, issue 14 (config and daemon half): the daemon under hostile or
//! broken configuration and operator mistakes, on a simulated node running
//! bookinfo. Reloads stop after an edit (idle CPU ≈ 0); a config directory
//! that cannot be listed keeps the last good config; a FIFO and a
//! DestinationRule with 100,000 subsets are reported without blocking, and
//! SIGTERM stays responsive during a long reload; a second daemon for the
//! node is refused; capabilities are dropped after setup and reloads still
//! write the kernel maps; loopback endpoints are rejected.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use strait_tests::demo::{self, assert_checks, mesh, Check, Expect, Mesh};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo")
}

fn start(p: &strait_tests::privileged::Privileged, index: u8) -> Mesh {
    let s = samples();
    let opts = demo::test_options(
        s.join("platform.yaml"),
        vec![s.join("destination-rules.yaml"), s.join("all-v1.yaml")],
        index,
    )
    .unwrap();
    Mesh::start(p, opts).unwrap()
}

const ALL_V1: [Check; 1] = [Check {
    user: None,
    n: 5,
    expect: Expect::Version("v1"),
}];

/// Waits up to `limit` for `pred` over the daemon's log.
fn wait_log(mesh: &Mesh, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pred(&mesh.log()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred(&mesh.log())
}

/// User + system CPU time of `pid`, from /proc/<pid>/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted from the state (field 3).
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn reloads(log: &str) -> usize {
    log.matches("config files changed: reloading").count()
}

#[test]
fn reloads_stop_after_an_edit_and_the_idle_daemon_uses_no_cpu() {
    let name = "reloads_stop_after_an_edit_and_the_idle_daemon_uses_no_cpu";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mesh = start(&p, 231);
    let pid = mesh.daemon_pid().unwrap();
    mesh.set_config("all-v1.yaml", &[&samples().join("reviews-50-v1-v3.yaml")])
        .unwrap();
    // The edit is picked up once (a burst may give two reloads)...
    std::thread::sleep(Duration::from_secs(2));
    let after_edit = reloads(&mesh.log());
    assert!(
        (1..=2).contains(&after_edit),
        "{after_edit} reloads for one edit:\n{}",
        mesh.log_tail(30)
    );
    // ... and then nothing: no reload loop, no CPU.
    let cpu0 = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_time(pid) - cpu0;
    assert_eq!(
        reloads(&mesh.log()),
        after_edit,
        "reloads continue after the edit:\n{}",
        mesh.log_tail(30)
    );
    assert!(
        used < Duration::from_millis(400),
        "the idle daemon used {used:?} of CPU in 4 s"
    );
    // Rewriting a file with the same bytes reads it but compiles nothing.
    let same = std::fs::read(mesh.config_dir().join("all-v1.yaml")).unwrap();
    std::fs::write(mesh.config_dir().join("all-v1.yaml"), same).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        reloads(&mesh.log()),
        after_edit,
        "identical inputs reloaded"
    );
}

#[test]
fn a_config_directory_that_cannot_be_listed_keeps_the_last_good_config() {
    let name = "a_config_directory_that_cannot_be_listed_keeps_the_last_good_config";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mesh = start(&p, 232);
    assert_checks(&mesh, "before", &ALL_V1);
    // A subdirectory the daemon may not read: it runs as root but without
    // CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH after setup, so listing fails
    // with EACCES, as it would with EMFILE at descriptor exhaustion.
    let sub = mesh.config_dir().join("locked");
    std::fs::create_dir(&sub).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o000)).unwrap();
    let seen = wait_log(&mesh, Duration::from_secs(5), |l| {
        l.contains("cannot list the config directory")
    });
    let log = mesh.log();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(seen, "listing failure not reported:\n{log}");
    assert!(log.contains("still serving the last good config"), "{log}");
    assert_checks(&mesh, "while the directory cannot be listed", &ALL_V1);
    let (status, _) = mesh.admin("/config_dump").unwrap();
    assert_eq!(status, 200);
    let services = mesh.admin("/config_dump").unwrap().1["services"]
        .as_object()
        .map_or(0, |m| m.len());
    assert!(services >= 4, "services dropped: {services}");
}

#[test]
fn a_fifo_and_100000_subsets_do_not_block_and_sigterm_stays_responsive() {
    let name = "a_fifo_and_100000_subsets_do_not_block_and_sigterm_stays_responsive";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mut mesh = start(&p, 233);
    let dir = mesh.config_dir().to_path_buf();
    let fifo = std::ffi::CString::new(dir.join("pipe.yaml").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(
        wait_log(&mesh, Duration::from_secs(10), |l| l.contains("pipe.yaml")
            && l.contains("not a regular file (a FIFO)")),
        "FIFO not reported:\n{}",
        mesh.log_tail(20)
    );
    let big = |label: &str| {
        let mut y = String::from("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: details-many, namespace: default}\nspec:\n  host: details\n  subsets:\n");
        for i in 0..100_000 {
            y.push_str(&format!(
                "  - name: s{i}\n    labels: {{version: {label}{i}}}\n"
            ));
        }
        y
    };
    let t0 = Instant::now();
    std::fs::write(dir.join(".big.tmp"), big("a")).unwrap();
    std::fs::rename(dir.join(".big.tmp"), dir.join("big.yaml")).unwrap();
    // While it loads, the admin API answers and routing works.
    assert_checks(&mesh, "during the big reload", &ALL_V1);
    let n = mesh.log().matches("config reloaded").count();
    let done = wait_log(&mesh, Duration::from_secs(180), |l| {
        l.matches("config reloaded").count() > n
    });
    assert!(done, "100,000 subsets not loaded in 180 s");
    eprintln!("100,000 subsets reloaded in {:?}", t0.elapsed());
    let (status, _) = mesh.admin("/ready").unwrap();
    assert_eq!(status, 200);
    assert_checks(&mesh, "after the big reload", &ALL_V1);
    // SIGTERM in the middle of the next big reload exits promptly.
    std::fs::write(dir.join(".big.tmp"), big("b")).unwrap();
    std::fs::rename(dir.join(".big.tmp"), dir.join("big.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let t1 = Instant::now();
    let status = mesh.stop_daemon().expect("SIGTERM during a reload");
    assert!(status.success(), "exit {status}");
    assert!(t1.elapsed() < Duration::from_secs(10), "{:?}", t1.elapsed());
}

#[test]
fn a_second_daemon_for_the_same_node_is_refused_and_the_first_keeps_serving() {
    let name = "a_second_daemon_for_the_same_node_is_refused_and_the_first_keeps_serving";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mesh = start(&p, 234);
    let node = mesh.node();
    let mut second = node.command(mesh.strait_bin()).unwrap();
    second
        .arg("run")
        .arg("--config")
        .arg(mesh.config_dir())
        .args(["--node", node.name()])
        .arg("--pods-cgroup")
        .arg(node.pods_cgroup())
        .arg("--bpffs")
        .arg(node.bpffs_dir())
        .args(["--outbound", &format!("{}:15101", node.gateway())])
        .args(["--admin", "127.0.0.1:15100"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = second.spawn().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second daemon started:\n{err}");
    assert!(
        err.contains(&format!(
            "another strait is already running for node {}",
            node.name()
        )) && err.contains(&format!("pid {}", mesh.daemon_pid().unwrap())),
        "{err}"
    );
    assert_checks(&mesh, "after the second daemon was refused", &ALL_V1);
    let (status, _) = mesh.admin("/ready").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn capabilities_are_dropped_and_a_reload_still_writes_the_kernel_maps() {
    let name = "capabilities_are_dropped_and_a_reload_still_writes_the_kernel_maps";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mesh = start(&p, 235);
    let pid = mesh.daemon_pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    // CAP_BPF for map writes, CAP_NET_ADMIN for attaching the socket
    // programs to pods that join the mesh, and (the daemon has a CA, so
    // mutual TLS is on) CAP_SYS_ADMIN for opening HBONE sockets inside the
    // pods' network namespaces, and CAP_SYS_NICE for the proxy workers'
    // scheduling (`--worker-priority auto`, the default).
    const KEPT: u64 = (1 << 39) | (1 << 23) | (1 << 21) | (1 << 12);
    for k in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let v = u64::from_str_radix(&field(k), 16).unwrap();
        assert_eq!(
            v, KEPT,
            "{k} {v:016x}: only CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_SYS_NICE are kept"
        );
    }
    assert_eq!(u64::from_str_radix(&field("CapInh:"), 16).unwrap(), 0);
    assert_eq!(field("NoNewPrivs:"), "1");
    // Every thread, not only the main one.
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let s = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        assert!(
            s.contains("CapEff:\t0000008000a01000"),
            "a thread kept capabilities"
        );
    }
    // With the capability kept, the idle proxy workers run `SCHED_FIFO`
    // (policy 1, `/proc/<pid>/task/<tid>/stat` field 41).
    let mut workers = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("strait-worker") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after_comm.split(' ').nth(38).unwrap();
        assert_eq!(
            policy,
            "1",
            "{} runs policy {policy}, not SCHED_FIFO",
            comm.trim()
        );
        workers += 1;
    }
    assert!(workers > 0, "no strait-worker thread found");
    // A reload after the drop writes the kernel tables: a new TCP Service
    // (no VirtualService, so balanced in the kernel, mode L4).
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ratings-tcp\n  namespace: default\nspec:\n  clusterIP: 10.96.222.222\n  selector:\n    app: ratings\n  ports:\n  - name: tcp-ratings\n    port: 9080\n";
    mesh.write_config_file("ratings-tcp.yaml", svc).unwrap();
    let out = mesh
        .client_command()
        .unwrap()
        .args([
            "--url",
            "http://10.96.222.222:9080/ratings/0",
            "--count",
            "5",
        ])
        .output()
        .unwrap();
    let samples = mesh::parse_samples(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(samples.len(), 5, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        samples.iter().all(|s| s.status == 200),
        "the new kernel service does not answer: {samples:?}\n{}",
        mesh.log_tail(20)
    );
    assert!(
        !mesh.log().contains("writing the kernel"),
        "kernel map writes failed after the drop:\n{}",
        mesh.log_tail(20)
    );
}

#[test]
fn a_loopback_endpoint_is_rejected_and_never_reaches_the_admin_api() {
    let name = "a_loopback_endpoint_is_rejected_and_never_reaches_the_admin_api";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mesh = start(&p, 236);
    // A Service whose endpoint is the node's admin API, behind a route.
    let leak = "apiVersion: v1\nkind: Service\nmetadata: {name: leak, namespace: default}\nspec:\n  clusterIP: 10.96.233.233\n  ports:\n  - {name: http, port: 80, targetPort: 15000}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: leak, namespace: default}\nsubsets:\n- addresses: [{ip: 127.0.0.1}]\n  ports: [{name: http, port: 15000}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: leak, namespace: default}\nspec:\n  hosts: [leak]\n  http:\n  - route:\n    - destination: {host: leak}\n";
    mesh.write_config_file("leak.yaml", leak).unwrap();
    let log = mesh.log();
    let line = log
        .lines()
        .find(|l| l.contains("127.0.0.1: may not be in the loopback range"))
        .unwrap_or_else(|| panic!("loopback endpoint not rejected:\n{log}"));
    assert!(
        line.contains("leak.yaml")
            && line.contains("Endpoints/default/leak")
            && line.contains("subsets[0].addresses[0].ip"),
        "{line}"
    );
    let out = mesh
        .client_command()
        .unwrap()
        .args(["--url", "http://10.96.233.233/config_dump", "--count", "3"])
        .output()
        .unwrap();
    let samples = mesh::parse_samples(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert!(
        samples.iter().all(|s| s.status != 200),
        "a pod read the admin API through the proxy: {samples:?}"
    );
    // `strait validate` reports it too.
    let v = std::process::Command::new(mesh.strait_bin())
        .args(["validate", "-f"])
        .arg(mesh.config_dir().join("leak.yaml"))
        .output()
        .unwrap();
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stderr).contains("may not be in the loopback range"));
}

#[test]
fn the_admin_api_backs_off_at_descriptor_exhaustion_and_recovers() {
    let name = "the_admin_api_backs_off_at_descriptor_exhaustion_and_recovers";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mesh = start(&p, 237);
    let pid = mesh.daemon_pid().unwrap();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads the limit of an existing pid into `old`.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let set_nofile = |soft: u64| {
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        // SAFETY: a valid rlimit for an existing pid; the old value is not read.
        let r = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &new,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    set_nofile(open_fds + 8);
    // More admin connections than descriptors left: accept fails (EMFILE)
    // while connections wait in the backlog.
    let conns = mesh
        .node()
        .run_in(|| {
            (0..64)
                .filter_map(|_| std::net::TcpStream::connect(mesh::ADMIN).ok())
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert!(conns.len() >= 32, "only {} connections", conns.len());
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_time(pid) - cpu0;
    drop(conns);
    set_nofile(old.rlim_cur);
    assert!(
        used < Duration::from_millis(600),
        "the daemon used {used:?} of CPU in 3 s at descriptor exhaustion (accept loop spinning)"
    );
    assert!(
        mesh.log()
            .contains("admin listener cannot accept; backing off"),
        "{}",
        mesh.log_tail(20)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = mesh.admin("/ready") {
            break;
        }
        assert!(Instant::now() < deadline, "/ready did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_checks(&mesh, "after descriptor exhaustion", &ALL_V1);
}
