//! The evaluation shortcuts give the decisions a full scan gives: the path
//! index of long policy lists, and the per-port policy lists of a guard.
use std::sync::Arc;

use http::HeaderMap;
use strait_config::snapshot::AuthzAction;

use super::tests::{set, snapshot};
use super::*;

/// Istio's order over every policy of `s`, one by one (no index): the
/// reference the indexed evaluation must agree with.
fn reference(s: &PolicySet, a: &Attrs<'_>) -> (bool, Option<Arc<str>>, Vec<Arc<str>>) {
    if let Some(p) = s.deny.iter().find(|p| p.matches(a) != Tri::No) {
        return (false, Some(p.name.clone()), Vec::new());
    }
    let audited = s
        .audit
        .iter()
        .filter(|p| p.matches(a) != Tri::No)
        .map(|p| p.name.clone())
        .collect();
    if s.allow.is_empty() {
        return (true, None, audited);
    }
    match s.allow.iter().find(|p| p.matches(a) == Tri::Yes) {
        Some(p) => (true, Some(p.name.clone()), audited),
        None => (false, None, audited),
    }
}

/// 60 ALLOW, 20 DENY and 20 AUDIT policies mixing what the index keys on
/// (exact paths, `prefix*`, exact header values) with what it cannot
/// (templates, `*suffix`, `notPaths` only, paths in one operation but not
/// another).
fn many() -> String {
    let mut y = String::new();
    for i in 0..100 {
        let action = match i % 5 {
            0 => "DENY",
            1 => "AUDIT",
            _ => "ALLOW",
        };
        let rules = match i % 7 {
            0 => format!("[{{to: [{{operation: {{paths: [\"/exact-{i}\"]}}}}]}}]"),
            1 => format!("[{{to: [{{operation: {{paths: [\"/p{i}/*\", \"/q/{i}\"], methods: [GET]}}}}]}}]"),
            2 => format!("[{{to: [{{operation: {{paths: [\"/t/{{*}}/{i}\"]}}}}]}}]"),
            3 => format!("[{{to: [{{operation: {{paths: [\"*.{i}\"]}}}}]}}]"),
            4 => format!("[{{when: [{{key: \"request.headers[x-n]\", values: [\"{i}\"]}}]}}]"),
            5 => format!("[{{to: [{{operation: {{notPaths: [\"/p{i}/*\"]}}}}], from: [{{source: {{ipBlocks: [\"10.0.{i}.0/24\"]}}}}]}}]"),
            _ => format!("[{{to: [{{operation: {{paths: [\"/p{i}/*\"]}}}}, {{operation: {{methods: [DELETE]}}}}]}}]"),
        };
        y.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i:03}, namespace: default}}\nspec:\n  action: {action}\n  rules: {rules}\n"
        ));
    }
    y
}

#[test]
fn indexed_lists_decide_as_a_full_scan() {
    let s = set(&many());
    assert!(s.allow.len() >= 16 && s.deny.len() >= 16 && s.audit.len() >= 16);
    let mut paths: Vec<String> = vec!["/".into(), "/q/1".into(), "/q/8".into()];
    for i in 0..100 {
        paths.push(format!("/exact-{i}"));
        paths.push(format!("/exact-{i}/more"));
        paths.push(format!("/p{i}/x"));
        paths.push(format!("/p{i}"));
        paths.push(format!("/t/a/{i}"));
        paths.push(format!("/file.{i}"));
    }
    let mut checked = (0, 0);
    for path in &paths {
        for method in ["GET", "DELETE"] {
            for (hdr, src) in [
                ("none", "10.0.5.1"),
                ("4", "10.0.12.9"),
                ("11", "10.1.0.1"),
                ("4,11", "10.0.5.1"),
            ] {
                // Repeated headers are matched joined with `,`.
                let mut h = HeaderMap::new();
                for v in hdr.split(',') {
                    h.append("x-n", v.parse().unwrap());
                }
                let a = Attrs {
                    source_ip: src.parse().unwrap(),
                    remote_ip: src.parse().unwrap(),
                    dest_ip: None,
                    dest_port: 80,
                    sni: None,
                    peer: None,
                    http: Some(HttpAttrs {
                        method,
                        path,
                        host: "web",
                        headers: &h,
                        auth: None,
                    }),
                };
                let d = s.authorize(&a);
                let (allowed, policy, audited) = reference(&s, &a);
                assert_eq!(
                    (d.allowed, &d.policy, &d.audited),
                    (allowed, &policy, &audited),
                    "{method} {path} x-n={hdr} from {src}"
                );
                if allowed {
                    checked.0 += 1;
                } else {
                    checked.1 += 1;
                }
            }
        }
    }
    // Both outcomes were exercised.
    assert!(checked.0 > 100 && checked.1 > 100, "{checked:?}");
}

#[test]
fn guards_check_only_the_policies_of_their_port() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}, {name: http-admin, port: 90, targetPort: 9090}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: default, labels: {app: web}}\nstatus: {podIP: 10.244.0.10}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: app-get, namespace: default}\nspec:\n  selector: {matchLabels: {app: web}}\n  rules: [{to: [{operation: {ports: [\"8080\"], methods: [GET]}}]}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: admin-no-post, namespace: default}\nspec:\n  selector: {matchLabels: {app: web}}\n  action: DENY\n  rules: [{to: [{operation: {methods: [POST]}}], when: [{key: destination.port, values: [\"9090\"]}]}]\n";
    let t = PolicyTable::build(&snapshot(yaml), &Scope::default()).unwrap();
    let app = t
        .guard("outbound|80||web.default.svc.cluster.local")
        .unwrap();
    let admin = t
        .guard("outbound|90||web.default.svc.cluster.local")
        .unwrap();
    // Port 8080's list has no DENY (it names 9090 only).
    assert_eq!(app.entries[0].set.allow.len(), 1);
    assert!(app.entries[0].set.deny.is_empty());
    // Port 9090: the only ALLOW policy names 8080, so nothing is allowed
    // there (the list keeps it rather than become "no ALLOW policy").
    assert_eq!(admin.entries[0].set.allow.len(), 1);
    assert_eq!(admin.entries[0].set.deny.len(), 1);
    assert_eq!(
        t.workloads.values().next().unwrap().set.allow[0].action,
        AuthzAction::Allow
    );
    let h = HeaderMap::new();
    let req = |method| Request {
        source_ip: "10.244.0.5".parse().unwrap(),
        sni: None,
        http: Some(HttpRequest {
            method,
            path: "/",
            query: None,
            host: "web",
            headers: &h,
        }),
    };
    assert!(matches!(enforce(app, &req("GET")), Outcome::Allow { .. }));
    assert!(
        matches!(enforce(app, &req("POST")), Outcome::Denied(d) if d.why == Why::NoAllowMatched)
    );
    assert!(
        matches!(enforce(admin, &req("GET")), Outcome::Denied(d) if d.why == Why::NoAllowMatched)
    );
    assert!(
        matches!(enforce(admin, &req("POST")), Outcome::Denied(d) if d.why == Why::DenyMatched)
    );
}

/// Which ports are decided per HTTP request (the HBONE destination side
/// parses the tunnel's HTTP for them) and which once per connection.
#[test]
fn needs_http_follows_the_policies_that_can_match_the_port() {
    let ap = |name: &str, action: &str, rules: &str| {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  action: {action}\n  rules: {rules}\n"
        )
    };
    // L4 only: principals and ports.
    let l4 = set(&ap(
        "l4",
        "ALLOW",
        "[{from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}], to: [{operation: {ports: [\"9000\"]}}]}]",
    ));
    assert!(!l4.needs_http(9000));
    // Methods on port 8080 only: HTTP there, not on 9000.
    let l7 = set(&(ap(
        "get",
        "ALLOW",
        "[{to: [{operation: {methods: [GET], ports: [\"8080\"]}}]}]",
    ) + &ap("l4", "ALLOW", "[{to: [{operation: {ports: [\"9000\"]}}]}]")));
    assert!(l7.needs_http(8080));
    assert!(!l7.needs_http(9000));
    // A DENY with a header condition and no port: every port.
    let deny = set(&ap(
        "deny",
        "DENY",
        "[{when: [{key: \"request.headers[x-evil]\", values: [\"1\"]}]}]",
    ));
    assert!(deny.needs_http(1) && deny.needs_http(65535));
    // AUDIT only logs: never makes a port HTTP.
    let audit = set(&ap(
        "audit",
        "AUDIT",
        "[{to: [{operation: {paths: [\"/x\"]}}]}]",
    ));
    assert!(!audit.needs_http(80));
    // A RequestAuthentication: JWTs are per request, every port.
    let ra = set(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: default}\nspec:\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwksUri: https://example.com/jwks.json\n",
    );
    assert!(ra.needs_http(9000));
}
