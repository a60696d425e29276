//! The stale-leftover sweeper: what a killed test run left behind is
//! removed; what a live run owns, or other tests' names, are not.
use std::path::Path;
use std::process::Command;

use strait_tests::node::{names, sweep, Node};

#[test]
fn leftovers_of_dead_runs_are_swept_and_live_ones_kept() {
    let Some(p) =
        strait_tests::privileged::require("leftovers_of_dead_runs_are_swept_and_live_ones_kept")
    else {
        return;
    };
    // The first node of a process also sweeps (once); made first here so
    // that the explicit sweep below is the one under test.
    let live = Node::new(&p.cgroup2, "live", 50).unwrap();
    // A pid that surely ended: a child we started and reaped.
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = names::id_for(child.id(), 7);

    // What a run killed with SIGKILL leaves: netns, cgroup tree with a
    // process still inside, tmp dir.
    let netns = format!("strait-{dead}-node");
    assert!(Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .unwrap()
        .success());
    let cgroup = p.cgroup2.join(format!("strait-{dead}"));
    std::fs::create_dir_all(cgroup.join("pods/default_web")).unwrap();
    let mut orphan = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(
        cgroup.join("pods/default_web/cgroup.procs"),
        orphan.id().to_string(),
    )
    .unwrap();
    let tmp = std::env::temp_dir().join(format!("strait-{dead}"));
    std::fs::create_dir_all(tmp.join("config")).unwrap();
    std::fs::write(tmp.join("config/k8s-services.yaml"), "").unwrap();
    // Not a node id: another helper's cgroup naming, must survive.
    let other = strait_tests::cgroup::TestCgroup::new(&p.cgroup2, "sweep").unwrap();

    let removed = sweep::stale(&p.cgroup2);

    assert!(!Path::new("/run/netns").join(&netns).exists());
    assert!(!cgroup.exists());
    assert!(!tmp.exists());
    assert!(
        orphan.wait().unwrap().code().is_none(),
        "the orphan was killed"
    );
    assert!(
        removed.contains(&cgroup) && removed.contains(&tmp),
        "{removed:?}"
    );
    assert!(other.path().exists());
    // This run's node is untouched.
    assert!(Path::new("/run/netns").join(live.netns()).exists());
    assert!(live.cgroup().exists() && live.tmp_dir().exists());
}
