//! Incremental and full compiles agree: random edits of a generated mesh
//! (endpoint changes mostly, other changes sometimes), each applied with
//! [`Incremental::apply`] and compared with a full compile of the same
//! resources — snapshot and diff.
use std::collections::BTreeMap;

use super::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SERVICES: usize = 8;
/// A small address pool, so services share endpoint addresses and Pods.
const POOL: u64 = 12;

fn ip(i: u64) -> String {
    format!("10.1.0.{}", i + 1)
}

fn service(i: usize, target: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: ns{}}}\nspec:\n  clusterIP: 10.96.0.{}\n  selector: {{app: svc{i}}}\n  ports:\n  - {{name: http, port: 80, targetPort: {target}}}\n  - {{name: tcp-db, port: 5432, targetPort: 5432}}\n",
        i % 3,
        i + 1
    )
}

fn slice(name: &str, ns: usize, svc: usize, rng: &mut Rng) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: ns{ns}\n  labels: {{kubernetes.io/service-name: svc{svc}}}\naddressType: IPv4\nports:\n- {{name: http, port: 8080}}\n- {{name: tcp-db, port: 5432}}\nendpoints:\n"
    );
    for _ in 0..rng.below(4) {
        let ready = rng.below(4) != 0;
        let pod = if rng.below(2) == 0 {
            format!(", targetRef: {{kind: Pod, name: pod{}}}", rng.below(POOL))
        } else {
            String::new()
        };
        y.push_str(&format!(
            "- {{addresses: [\"{}\"], conditions: {{ready: {ready}}}{pod}}}\n",
            ip(rng.below(POOL))
        ));
    }
    y
}

fn endpoints(i: usize, rng: &mut Rng) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: svc{i}, namespace: ns{}}}\nsubsets:\n- ports: [{{name: http, port: 8080}}]\n  addresses:\n",
        i % 3
    );
    for _ in 0..=rng.below(3) {
        y.push_str(&format!("  - {{ip: \"{}\"}}\n", ip(rng.below(POOL))));
    }
    y
}

/// The generated mesh: file name → YAML.
fn mesh(rng: &mut Rng, policies: bool) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for i in 0..SERVICES {
        files.insert(format!("svc{i}"), service(i, 8080));
        match rng.below(3) {
            0 => {
                for k in 0..=rng.below(2) {
                    let name = format!("svc{i}-{k}");
                    files.insert(format!("slice-{name}"), slice(&name, i % 3, i, rng));
                }
            }
            1 => {
                files.insert(format!("ep-svc{i}"), endpoints(i, rng));
            }
            _ => {} // Pods by selector.
        }
    }
    for p in 0..POOL / 2 {
        let app = rng.below(SERVICES as u64);
        let version = if rng.below(2) == 0 { "v1" } else { "v2" };
        files.insert(
            format!("pod{p}"),
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod{p}, namespace: ns{}, labels: {{app: svc{app}, version: {version}}}}}\nspec: {{serviceAccountName: sa{p}, containers: [{{name: app, image: app, ports: [{{containerPort: 8080}}]}}]}}\nstatus: {{podIP: \"{}\", phase: Running}}\n",
                app % 3,
                ip(p)
            ),
        );
    }
    files.insert(
        "dr".into(),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc0, namespace: ns0}\nspec:\n  host: svc0\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n".into(),
    );
    files.insert(
        "vs".into(),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: svc1, namespace: ns1}\nspec:\n  hosts: [svc1]\n  http:\n  - route: [{destination: {host: svc1}}]\n".into(),
    );
    files.insert(
        "se".into(),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: ns0}}\nspec:\n  hosts: [ext.example.com]\n  addresses: [10.97.0.1]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{name: http, number: 80, protocol: HTTP}}]\n  endpoints: [{{address: \"{}\"}}]\n",
            ip(3)
        ),
    );
    if policies {
        files.insert(
            "authz".into(),
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: v2-only, namespace: ns1}\nspec:\n  selector: {matchLabels: {version: v2}}\n  action: ALLOW\n  rules: [{from: [{source: {namespaces: [ns1]}}]}]\n".into(),
        );
    }
    files
}

/// One random edit; whether it touches only endpoint objects.
fn edit(files: &mut BTreeMap<String, String>, rng: &mut Rng) -> bool {
    let i = rng.below(SERVICES as u64) as usize;
    match rng.below(10) {
        // Rewrite, add or move an EndpointSlice.
        0..=3 => {
            let k = rng.below(3);
            let name = format!("svc{i}-{k}");
            let svc = if rng.below(5) == 0 {
                rng.below(SERVICES as u64 + 1) as usize // svc8 does not exist
            } else {
                i
            };
            files.insert(format!("slice-{name}"), slice(&name, i % 3, svc, rng));
            true
        }
        4 | 5 => {
            let slices: Vec<String> = files
                .keys()
                .filter(|k| k.starts_with("slice-"))
                .cloned()
                .collect();
            if slices.is_empty() {
                return true;
            }
            let k = &slices[rng.below(slices.len() as u64) as usize];
            files.remove(k);
            true
        }
        6 => {
            if rng.below(3) == 0 {
                files.remove(&format!("ep-svc{i}"));
            } else {
                files.insert(format!("ep-svc{i}"), endpoints(i, rng));
            }
            true
        }
        7 => {
            // A slice whose body is invalid (bad address type): left out.
            if rng.below(4) == 0 {
                files.insert(
                    format!("slice-svc{i}-bad"),
                    slice(&format!("svc{i}-bad"), i % 3, i, rng)
                        .replace("addressType: IPv4", "addressType: Bogus"),
                );
                true
            } else {
                files.remove(&format!("slice-svc{i}-bad"));
                true
            }
        }
        // Not endpoints: a Service's target port, a Pod's labels.
        8 => {
            let target = if rng.below(2) == 0 { 8080 } else { 9090 };
            files.insert(format!("svc{i}"), service(i, target));
            false
        }
        _ => {
            let p = rng.below(POOL / 2);
            if let Some(y) = files.get_mut(&format!("pod{p}")) {
                *y = if y.contains("version: v1") {
                    y.replace("version: v1", "version: v2")
                } else {
                    y.replace("version: v2", "version: v1")
                };
            }
            false
        }
    }
}

thread_local! {
    /// Parsed files by content: the loader is the slow part in debug builds.
    static PARSED: std::cell::RefCell<std::collections::HashMap<String, Vec<Resource>>> =
        Default::default();
}

fn load(y: &str) -> Vec<Resource> {
    PARSED.with(|c| {
        c.borrow_mut()
            .entry(y.to_owned())
            .or_insert_with(|| crate::load::load_str(y, "gen.yaml").resources)
            .clone()
    })
}

fn all(files: &BTreeMap<String, String>) -> Vec<Resource> {
    files.values().flat_map(|y| load(y)).collect()
}

fn run(seed: u64, policies: bool) -> (usize, usize) {
    let mut rng = Rng(seed);
    let mut files = mesh(&mut rng, policies);
    let resources = all(&files);
    let (mut inc, mut snap, _) = Incremental::compile(&resources);
    assert_eq!(snap, crate::compile(&resources).0);
    let (mut fast, mut endpoint_edits) = (0, 0);
    for step in 0..100 {
        let before = files.clone();
        let only_endpoints = edit(&mut files, &mut rng);
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for k in before.keys().chain(files.keys()) {
            let (b, a) = (before.get(k), files.get(k));
            if b != a {
                removed.extend(b.map(|y| load(y)).unwrap_or_default());
                added.extend(a.map(|y| load(y)).unwrap_or_default());
            }
        }
        // Each changed file once (keys of both maps may repeat).
        removed.dedup_by(|a, b| a.key() == b.key());
        added.dedup_by(|a, b| a.key() == b.key());
        // An edit that changed nothing (same bytes) is trivially endpoint-only.
        let only_endpoints = only_endpoints || (removed.is_empty() && added.is_empty());
        let resources = all(&files);
        let old = snap.clone();
        let (diff, how) = inc.apply(&mut snap, &resources, Some((&removed, &added)));
        let (full, _) = crate::compile(&resources);
        assert!(
            snap == full,
            "seed {seed} step {step} ({how:?}): incremental snapshot differs from a full compile"
        );
        assert_eq!(
            diff,
            crate::snapshot::diff(&old, &full),
            "seed {seed} step {step} ({how:?})"
        );
        if only_endpoints {
            endpoint_edits += 1;
            if matches!(how, Applied::Incremental) {
                fast += 1;
            }
        } else {
            assert!(matches!(how, Applied::Full { .. }), "step {step}");
        }
    }
    (fast, endpoint_edits)
}

#[test]
fn incremental_equals_full_on_random_edits() {
    let (mut fast, mut edits) = (0, 0);
    for seed in 1..=8u64 {
        let (f, e) = run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), seed % 2 == 0);
        fast += f;
        edits += e;
    }
    // Most endpoint edits take the incremental path (the rest: an invalid
    // slice in the mesh, or a policy-relevant workload change).
    assert!(
        fast * 2 > edits,
        "only {fast} of {edits} endpoint edits were incremental"
    );
}

#[test]
fn one_endpoint_change_touches_one_service() {
    let mut rng = Rng(7);
    let mut files = mesh(&mut rng, false);
    files.insert("ep-svc5".into(), endpoints(5, &mut rng));
    files.retain(|k, _| !k.starts_with("slice-svc5"));
    let resources = all(&files);
    let (mut inc, mut snap, _) = Incremental::compile(&resources);
    let old_ep = load(&files["ep-svc5"]);
    let new_y = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: svc5, namespace: ns2}\nsubsets:\n- ports: [{name: http, port: 8080}]\n  addresses: [{ip: 10.2.0.1}]\n";
    files.insert("ep-svc5".into(), new_y.into());
    let resources = all(&files);
    let (diff, how) = inc.apply(&mut snap, &resources, Some((&old_ep, &load(new_y))));
    assert!(matches!(how, Applied::Incremental), "{how:?}");
    assert_eq!(snap, crate::compile(&resources).0);
    assert!(diff.services.is_empty() && diff.routes.is_empty());
    assert!(diff
        .clusters
        .changed
        .iter()
        .all(|c| c.ends_with("|svc5.ns2.svc.cluster.local")));
    assert!(!diff.l4.is_empty());
    assert!(diff.workloads.added.contains(&"10.2.0.1".parse().unwrap()));
}
