//! MeshConfig (mesh.yaml / the `istio` ConfigMap) into the snapshot, the
//! not-enforced report (`STR0001`) and fail-closed security resources.
use std::net::IpAddr;

use strait_config::enforced::{Status, TABLE};
use strait_config::load::{load_paths, load_str};
use strait_config::mesh::{AccessLogEncoding, MeshConfig, OutboundMode};
use strait_config::snapshot::L4Mode;
use strait_config::{analyze, compile, Level, MeshSnapshot};

fn snap(yaml: &str) -> MeshSnapshot {
    let loaded = load_str(yaml, "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let (s, diags) = compile(&loaded.resources);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    s
}

const APP: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 8080}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: default, labels: {app: reviews}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.1, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: other-1, namespace: default, labels: {app: other}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.2, phase: Running}
---
";

#[test]
fn defaults_are_istios_when_no_mesh_config() {
    let s = snap(APP);
    let m = &s.mesh;
    assert_eq!(m.root_namespace, "istio-system");
    assert_eq!(m.trust_domain, "cluster.local");
    assert!(m.enable_auto_mtls);
    assert_eq!(m.outbound_traffic_policy.mode, OutboundMode::AllowAny);
    assert_eq!(m.access_log_file, "/dev/stdout");
    assert_eq!(m.access_log_encoding, AccessLogEncoding::Text);
    let r = &s
        .routes_for("reviews.default.svc.cluster.local", 9080)
        .unwrap()
        .http[0];
    assert_eq!(r.retries.attempts, 2);
    assert_eq!(
        r.retries.retry_on,
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
}

const MESH: &str = "rootNamespace: mesh-root
trustDomain: example.org
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
defaultHttpRetryPolicy: {attempts: 5, retryOn: 5xx, perTryTimeout: 2s}
accessLogFile: /tmp/strait-access.log
accessLogEncoding: JSON
enableTracing: true
";

#[test]
fn istio_config_map_sets_the_mesh_config() {
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: other, namespace: istio-system}}\ndata: {{mesh: 'rootNamespace: nope'}}\n---\n{APP}",
        MESH.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    let s = snap(&cm);
    assert_eq!(s.mesh.root_namespace, "mesh-root");
    assert_eq!(
        s.mesh.outbound_traffic_policy.mode,
        OutboundMode::RegistryOnly
    );
    assert_eq!(s.mesh.access_log_encoding, AccessLogEncoding::Json);
    assert_eq!(s.mesh.access_log_file, "/tmp/strait-access.log");
    // defaultHttpRetryPolicy reaches routes without `retries` ...
    let r = &s
        .routes_for("reviews.default.svc.cluster.local", 9080)
        .unwrap()
        .http[0];
    assert_eq!(
        (r.retries.attempts, r.retries.retry_on.as_str()),
        (5, "5xx")
    );
    assert_eq!(r.retries.per_try_timeout_ms, Some(2000));
    // ... and VirtualService routes without `retries`, not those with.
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n    retries: {attempts: 1}\n  - route: [{destination: {host: reviews}}]\n---\n";
    let s = snap(&format!("{cm}{vs}"));
    let http = &s
        .routes_for("reviews.default.svc.cluster.local", 9080)
        .unwrap()
        .http;
    assert_eq!(http[0].retries.attempts, 1);
    assert_eq!(http[1].retries.attempts, 5);
}

#[test]
fn mesh_yaml_in_the_config_directory_wins_and_unapplied_fields_are_reported() {
    let dir = std::env::temp_dir().join(format!("strait-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    std::fs::write(dir.join("app.yaml"), APP).unwrap();
    let loaded = load_paths(&[&dir]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let (s, _) = compile(&loaded.resources);
    assert_eq!(s.mesh.trust_domain, "example.org");
    let report = analyze::analyze(&loaded.resources);
    let str0001: Vec<String> = report
        .iter()
        .filter(|d| d.code.as_deref() == Some("STR0001"))
        .map(|d| format!("{} {}", d.field.clone().unwrap_or_default(), d.message))
        .collect();
    assert!(
        str0001.iter().any(|m| m.starts_with("trustDomain ")),
        "{str0001:?}"
    );
    assert!(
        str0001.iter().any(|m| m.starts_with("enableTracing ")),
        "{str0001:?}"
    );
    assert!(
        !str0001
            .iter()
            .any(|m| m.starts_with("outboundTrafficPolicy")),
        "{str0001:?}"
    );
}

#[test]
fn invalid_mesh_config_is_an_error_naming_the_field() {
    let l = load_str(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: 'outboundTrafficPolicy: {mode: SOMETIMES}'\n",
        "cm.yaml",
    );
    let e = l.diagnostics.iter().find(|d| d.is_error()).expect("error");
    assert!(e.message.contains("invalid MeshConfig: data.mesh"), "{e}");
    assert!(e.message.contains("SOMETIMES"), "{e}");
    assert!(MeshConfig::parse("defaultHttpRetryPolicy: {perTryTimeout: 1x}").is_err());
}

fn policy(kind: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: p, namespace: default}}\nspec:\n{spec}---\n")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn security_resources_strait_cannot_enforce_fail_closed() {
    // AuthorizationPolicy and RequestAuthentication are enforced by the
    // proxy's policy engine (proxy-userspace/src/policy): their workloads
    // keep their endpoints. PeerAuthentication STRICT is not enforced yet.
    let cases = [
        (policy("AuthorizationPolicy", "  selector: {matchLabels: {app: reviews}}\n  action: ALLOW\n  rules: [{}]\n"), vec![]),
        (policy("RequestAuthentication", "  selector: {matchLabels: {app: reviews}}\n  jwtRules: [{issuer: x}]\n"), vec![]),
        (policy("PeerAuthentication", "  mtls: {mode: STRICT}\n"), vec!["10.0.0.1", "10.0.0.2"]),
        (policy("PeerAuthentication", "  mtls: {mode: PERMISSIVE}\n"), vec![]),
        (
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: mesh, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n".to_string(),
            vec!["10.0.0.1", "10.0.0.2"],
        ),
        (
            policy("PeerAuthentication", "  selector: {matchLabels: {app: reviews}}\n  portLevelMtls: {\"9080\": {mode: STRICT}}\n"),
            vec!["10.0.0.1"],
        ),
    ];
    for (p, denied) in cases {
        let s = snap(&format!("{APP}{p}"));
        let got: Vec<IpAddr> = s.deny.keys().copied().collect();
        let want: Vec<IpAddr> = denied.iter().map(|a| ip(a)).collect();
        assert_eq!(got, want, "{p}");
        let c = &s.clusters["outbound|9080||reviews.default.svc.cluster.local"];
        let l4 = s
            .l4_service(
                ip("10.96.0.10"),
                9080,
                strait_config::snapshot::L4Protocol::Tcp,
            )
            .unwrap();
        if want.contains(&ip("10.0.0.1")) {
            assert!(c.endpoints.is_empty(), "{p}: {:?}", c.endpoints);
            assert!(l4.backends.is_empty(), "{p}");
            assert_eq!(l4.mode, L4Mode::Redirect, "{p}: the proxy answers 503 UH");
            assert!(
                s.deny[&ip("10.0.0.1")].contains("not enforced by Strait"),
                "{p}"
            );
        } else {
            assert_eq!(c.endpoints.len(), 1, "{p}");
            assert_eq!(l4.backends.len(), 1, "{p}");
        }
    }
}

#[test]
fn analyze_reports_unenforced_fields_once_per_resource_and_istio_mutual_still_routes() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n  subsets:\n  - name: v1\n    labels: {app: reviews}\n    trafficPolicy:\n      tls: {mode: ISTIO_MUTUAL}\n      tunnel: {protocol: CONNECT, targetHost: a, targetPort: 80}\n";
    let loaded = load_str(&format!("{APP}{dr}"), "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let report = analyze::analyze(&loaded.resources);
    let got: Vec<String> = report
        .iter()
        .filter(|d| d.code.as_deref() == Some("STR0001"))
        .map(|d| format!("{} {}", d.field.clone().unwrap_or_default(), d.level))
        .collect();
    assert_eq!(
        got,
        // One finding per row and resource, at the first place it is set.
        ["spec.subsets[0].trafficPolicy.tunnel.protocol Warning"],
        "{report:#?}"
    );
    assert!(report.iter().all(|d| d.level != Level::Error));
    let (s, _) = compile(&loaded.resources);
    assert!(s.deny.is_empty());
    assert_eq!(
        s.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
            .endpoints
            .len(),
        1
    );
}

/// The README's "Not yet enforced" table lists every row of the code's table.
#[test]
fn readme_mirrors_the_not_enforced_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("## Not yet enforced")
        .nth(1)
        .expect("README has a \"Not yet enforced\" section")
        .split("\n## ")
        .next()
        .unwrap();
    for row in TABLE {
        let status = match row.status {
            Status::NotEnforced => "no effect",
            Status::FailClosed => "fail closed",
        };
        let line = format!("| {} | `{}` | {status} |", row.kind, row.path);
        assert!(section.contains(&line), "README lacks the row: {line}");
    }
    let rows = section
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains(" | `"))
        .count();
    assert_eq!(
        rows,
        TABLE.len(),
        "README lists rows the code's table does not have"
    );
}

/// Every `tls.mode` is enforced (no STR0001; ISTIO_MUTUAL is HBONE or a
/// refusal); `credentialName` and ISTIO_MUTUAL to endpoints outside the
/// mesh are warned about (the daemon refuses them).
#[test]
fn analyze_reports_destination_rule_tls_the_daemon_refuses() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.10}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: default}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, sni: api.example.com}
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, credentialName: client-cert}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext-mtls, namespace: other}
spec:
  host: api.example.com
  subsets:
  - name: v1
    labels: {}
    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
";
    let loaded = load_str(yaml, "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let report = analyze::analyze(&loaded.resources);
    let line = |d: &strait_config::Diagnostic| {
        format!(
            "{} {} {}",
            d.resource.as_deref().unwrap_or_default(),
            d.field.as_deref().unwrap_or_default(),
            d.level
        )
    };
    let str0001: Vec<String> = report
        .iter()
        .filter(|d| d.code.as_deref() == Some("STR0001"))
        .map(line)
        .collect();
    assert!(str0001.is_empty(), "{report:#?}");
    let cred = report
        .iter()
        .find(|d| d.message.contains("credentialName"))
        .expect("a credentialName finding");
    assert_eq!(
        line(cred),
        "DestinationRule/default/ext spec.trafficPolicy.portLevelSettings[0].tls.credentialName Warning"
    );
    let outside = report
        .iter()
        .find(|d| d.message.contains("outside the mesh"))
        .expect("an ISTIO_MUTUAL-outside-the-mesh finding");
    assert!(outside.message.contains("192.0.2.10:443"), "{outside:?}");
    assert_eq!(outside.level, Level::Warning);
}

/// The daemon's file store reads each file with `load_str_with`: a plain
/// MeshConfig `mesh.yaml` loads there too.
#[test]
fn plain_mesh_yaml_loads_file_by_file() {
    let loaded = strait_config::load::load_str_with(
        "accessLogFormat: \"%RESPONSE_CODE%\\n\"\n",
        "/etc/strait/mesh.yaml",
        &strait_config::load::Limits::default(),
    );
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let (s, _) = compile(&loaded.resources);
    assert_eq!(s.mesh.access_log_format, "%RESPONSE_CODE%\n");
}
