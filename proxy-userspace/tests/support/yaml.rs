//! Istio resources as YAML text for tests: the fixed head of a
//! VirtualService or DestinationRule, with the part a test is about given
//! by the test.

/// The first lines of a `networking.istio.io/v1` resource of `kind` named
/// `name` in namespace `default`, up to and including `spec:` and its
/// newline.
fn head(kind: &str, name: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: default}}\nspec:\n"
    )
}

/// A VirtualService named `host` (namespace `default`) for
/// `hosts: [host]`, whose `http:` list is `routes`: YAML text that starts
/// with a newline and is indented as under `  http:`. Returns the document
/// (no `---` separator).
pub fn virtual_service(host: &str, routes: &str) -> String {
    let head = head("VirtualService", host);
    format!("{head}  hosts: [{host}]\n  http:{routes}")
}

/// A DestinationRule named `host` (namespace `default`) for `host: host`,
/// whose remaining `spec` fields are `spec`: YAML text that starts with a
/// newline and is indented as under `spec:`. Returns the document (no
/// `---` separator).
pub fn destination_rule(host: &str, spec: &str) -> String {
    let head = head("DestinationRule", host);
    format!("{head}  host: {host}{spec}")
}

/// [`destination_rule`] for `host` whose only field is
/// `trafficPolicy.connectionPool.http: <http>` (`http` a YAML flow map such
/// as `{maxRequestsPerConnection: 1}`), with a trailing newline.
pub fn http_pool_rule(host: &str, http: &str) -> String {
    let spec = format!("\n  trafficPolicy:\n    connectionPool:\n      http: {http}\n");
    destination_rule(host, &spec)
}

/// [`destination_rule`] for `host` with `spec`, then `---`, then
/// [`virtual_service`] for `host` with `routes`: one YAML text.
pub fn rule_and_routes(host: &str, spec: &str, routes: &str) -> String {
    let rule = destination_rule(host, spec);
    format!("{rule}---\n{}", virtual_service(host, routes))
}

/// A `security.istio.io/v1` AuthorizationPolicy named `name` (namespace
/// `default`) with action DENY for workloads labelled `app: <app>`, one
/// rule whose one `to.operation` is `operation` (YAML such as
/// `paths: ["/admin/*"]`). Returns the document with a trailing newline.
pub fn deny_policy(name: &str, app: &str, operation: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  action: DENY
  rules:
  - to:
    - operation:
        {operation}
"
    )
}
