//! Analysis messages with Istio's codes and templates.
use strait_config::analyze::analyze;
use strait_config::load::load_str;

/// `CODE field: message` of every coded finding.
fn findings(yaml: &str) -> Vec<String> {
    let loaded = load_str(yaml, "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    analyze(&loaded.resources)
        .into_iter()
        .filter_map(|d| {
            Some(format!(
                "{} {}: {}",
                d.code?,
                d.field.unwrap_or_default(),
                d.message
            ))
        })
        .collect()
}

const BASE: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
";

fn vs(spec: &str) -> String {
    format!("{BASE}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n{spec}")
}

#[test]
fn clean_config_has_no_findings() {
    assert!(findings(&vs(
        "  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n"
    ))
    .is_empty());
}

#[test]
fn missing_subset_host_and_gateway_are_ist0101() {
    let f = findings(&vs(
        "  gateways: [mesh, missing-gw]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v9}\n  - route:\n    - destination: {host: ratings}\n",
    ));
    assert_eq!(
        f,
        [
            "IST0101 spec.gateways[1]: Referenced gateway not found: \"missing-gw\"",
            "IST0101 spec.http[0].route[0].destination.subset: Referenced host+subset in destinationrule not found: \"reviews+v9\"",
            "IST0101 spec.http[1].route[0].destination.host: Referenced host not found: \"ratings\"",
            "IST0130 spec.http[1]: VirtualService rule #1 not used (only the last rule can have no matches).",
        ]
    );
}

#[test]
fn rules_after_a_catch_all_or_duplicate_matches_are_ist0130() {
    let f = findings(&vs(
        "  http:\n  - name: jason\n    match:\n    - headers: {end-user: {exact: jason}}\n    route:\n    - destination: {host: reviews}\n  - match:\n    - headers: {end-user: {exact: jason}}\n    route:\n    - destination: {host: reviews}\n  - route:\n    - destination: {host: reviews}\n  - route:\n    - destination: {host: reviews}\n",
    ));
    assert_eq!(
        f,
        [
            "IST0130 spec.http[1]: VirtualService rule #1 not used (all matches used by prior rules).",
            "IST0130 spec.http[3]: VirtualService rule #3 not used (only the last rule can have no matches).",
            "IST0131 spec.http[1].match[0]: VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule \"jason\").",
        ]
    );
}

#[test]
fn two_mesh_virtual_services_for_one_host_are_ist0109() {
    let yaml = format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: other, namespace: team}}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  http:\n  - route:\n    - destination: {{host: reviews.default.svc.cluster.local}}\n",
        vs("  http:\n  - route:\n    - destination: {host: reviews}\n")
    );
    let f = findings(&yaml);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().all(|m| m.starts_with("IST0109 spec.hosts: The VirtualServices default/reviews,team/other associated with mesh gateway define the same host reviews.default.svc.cluster.local")), "{f:?}");
}

#[test]
fn unnamed_service_port_is_ist0118() {
    let f = findings("apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\nspec:\n  ports: [{name: mysqldb, port: 3306, targetPort: 3306}]\n");
    assert_eq!(
        f,
        ["IST0118 spec.ports[0].name: Port name mysqldb (port: 3306, targetPort: 3306) doesn't follow the naming convention of Istio port."]
    );
}

#[test]
fn conflicting_destination_rules_are_reported() {
    let yaml = format!(
        "{BASE}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews-2, namespace: default}}\nspec:\n  host: reviews.default.svc.cluster.local\n  subsets: [{{name: v1, labels: {{version: v2}}}}]\n"
    );
    let loaded = load_str(&yaml, "t.yaml");
    let all = analyze(&loaded.resources);
    let conflicts: Vec<_> = all
        .iter()
        .filter(|d| d.message.starts_with("ConflictingDestinationRules"))
        .collect();
    assert_eq!(conflicts.len(), 2, "{all:?}");
    assert!(conflicts[0]
        .message
        .contains("subsets [\"v1\"] are defined more than once"));
}

#[test]
fn authorization_policies_strait_enforces_only_fail_closed_are_warned() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: default}\nspec:\n  action: CUSTOM\n  provider: {name: my-authz}\n  rules: [{}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: peers, namespace: default}\nspec:\n  rules:\n  - from: [{source: {principals: [\"cluster.local/ns/default/sa/sleep\"]}}]\n    when: [{key: experimental.unknown, values: [x]}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: fine, namespace: default}\nspec:\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n";
    let loaded = load_str(yaml, "t.yaml");
    let warnings: Vec<String> = analyze(&loaded.resources)
        .into_iter()
        .filter(|d| d.message.contains("not enforced as Istio would"))
        .map(|d| d.to_string())
        .collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    let all = warnings.join("\n");
    assert!(
        all.contains("AuthorizationPolicy/default/ext") && all.contains("CUSTOM"),
        "{all}"
    );
    assert!(all.contains("mTLS identity"), "{all}");
    assert!(all.contains("experimental.unknown"), "{all}");
    assert!(!all.contains("/fine"), "{all}");
}

#[test]
fn custom_policies_are_warned_only_when_their_provider_cannot_be_asked() {
    let mesh = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: http-ok\n      envoyExtAuthzHttp: {service: 10.0.0.9, port: 8000, includeRequestHeadersInCheck: [x-ext-authz]}\n    - name: grpc\n      envoyExtAuthzGrpc: {service: 10.0.0.9, port: 9000}\n    - name: with-body\n      envoyExtAuthzHttp: {service: 10.0.0.9, port: 8000, includeRequestBodyInCheck: {maxRequestBytes: 10}}\n    - name: not-registered\n      envoyExtAuthzHttp: {service: authz.nowhere.svc.cluster.local, port: 8000}\n";
    let mut yaml = mesh.to_string();
    for p in ["http-ok", "grpc", "with-body", "not-registered", "missing"] {
        yaml.push_str(&format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ext-{p}, namespace: default}}\nspec:\n  action: CUSTOM\n  provider: {{name: {p}}}\n  rules: [{{}}]\n"));
    }
    let loaded = load_str(&yaml, "t.yaml");
    let warnings: Vec<String> = analyze(&loaded.resources)
        .into_iter()
        .filter(|d| d.message.contains("not enforced as Istio would"))
        .map(|d| d.to_string())
        .collect();
    let all = warnings.join("\n");
    assert_eq!(warnings.len(), 4, "{all}");
    assert!(!all.contains("ext-http-ok"), "{all}");
    assert!(all.contains("envoyExtAuthzGrpc"), "{all}");
    assert!(all.contains("includeRequestBodyInCheck"), "{all}");
    assert!(all.contains("not in the registry"), "{all}");
    assert!(all.contains("no extension provider \"missing\""), "{all}");
    assert!(all.contains("denied with 403"), "{all}");
}
