//! Table tests: Istio's validation rules with Istio's wording; each error
//! names file, line, resource and field; an invalid resource is rejected
//! alone.
use strait_config::load::load_str;
use strait_config::{compile, validate, Level};

/// Errors of the single resource in `yaml` as `field: message`. As with
/// `kubectl apply`, Istio's CRD schema is checked first (at load); a resource
/// it rejects never reaches the `validation.go` rules.
fn errors(yaml: &str) -> Vec<String> {
    let loaded = load_str(yaml, "t.yaml");
    if loaded.has_errors() {
        return loaded
            .diagnostics
            .into_iter()
            .filter(|d| d.level == Level::Error)
            .map(|d| format!("{}: {}", d.field.unwrap_or_default(), d.message))
            .collect();
    }
    validate::validate(&loaded.resources)
        .into_iter()
        .filter(|d| d.level == Level::Error)
        .map(|d| format!("{}: {}", d.field.unwrap_or_default(), d.message))
        .collect()
}

fn vs(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: ns}}\nspec:\n{spec}")
}

fn dr(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: d, namespace: ns}}\nspec:\n{spec}")
}

#[test]
fn virtual_service_rules() {
    let route = "  http:\n  - route:\n    - destination: {host: reviews}\n";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (vs(&format!("  hosts: [reviews]\n{route}")), vec![]),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1.0}\n"),
            vec!["spec.http[0].route[0].destination.subset: subset name is invalid: v1.0"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: a}\n      weight: -1\n    - destination: {host: reviews, subset: b}\n      weight: 101\n"),
            vec!["spec.http[0].route[0].weight: weight -1 < 0"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: a}\n    - destination: {host: reviews, subset: b}\n"),
            vec!["spec.http[0].route: total destination weight = 0"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - match:\n    - uri: {regex: \"a(b\"}\n    route:\n    - destination: {host: reviews}\n"),
            vec!["spec.http[0].match[0].uri: \"uri\": error parsing regexp: unclosed group: `a(b`; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - timeout: 5\n    route:\n    - destination: {host: reviews}\n"),
            vec!["spec.http[0].timeout: Invalid value: \"integer\": spec.http[0].timeout in body must be of type string: \"integer\""],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - redirect: {uri: /x}\n    route:\n    - destination: {host: reviews}\n"),
            vec!["spec.http[0]: HTTP route cannot contain both route and redirect"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /a}\n"),
            vec!["spec.http[0]: HTTP route, redirect or direct_response is required"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - fault:\n      abort: {httpStatus: 700, percentage: {value: 100}}\n    route:\n    - destination: {host: reviews}\n"),
            vec!["spec.http[0].fault.abort.httpStatus: HTTP status 700 is not in range 200-599"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - redirect: {uri: /x, redirectCode: 200}\n"),
            vec!["spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, port: {number: 70000}}\n"),
            vec!["spec.http[0].route[0].destination.port.number: port number 70000 must be in the range 1..65535"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - match:\n    - headers:\n        \"bad header\": {exact: x}\n    route:\n    - destination: {host: reviews}\n"),
            vec!["spec.http[0].match[0].headers: header name bad header is not a valid header name"],
        ),
        (
            vs("  hosts: [reviews]\n  http:\n  - retries: {attempts: 3, retryOn: \"5xx,bogus\"}\n    route:\n    - destination: {host: reviews}\n"),
            vec!["spec.http[0].retries.retryOn: \"bogus\" is not a valid retryOn policy"],
        ),
        (vs(&format!("  hosts: [\"*\"]\n{route}")), vec!["spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"]),
        (vs("  hosts: [reviews]\n"), vec!["spec: http, tcp or tls must be provided in virtual service"]),
        (
            vs("  hosts: [reviews]\n  tcp:\n  - match:\n    - destinationSubnets: [10.0.0.0/33]\n    route:\n    - destination: {host: reviews}\n"),
            vec!["spec.tcp[0].match[0].destinationSubnets[0]: \"10.0.0.0/33\" is not a valid CIDR block"],
        ),
        (
            vs("  hosts: [reviews]\n  tls:\n  - match:\n    - port: 443\n    route:\n    - destination: {host: reviews}\n"),
            vec!["spec.tls[0].match[0].sniHosts: Required value"],
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(errors(&yaml), want, "\n{yaml}");
    }
}

#[test]
fn destination_rule_rules() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (dr("  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n"), vec![]),
        (
            dr("  host: reviews\n  subsets:\n  - name: v1.0\n    labels: {version: v1}\n"),
            vec!["spec.subsets[0].name: subset name is invalid: v1.0"],
        ),
        (
            dr("  host: reviews\n  subsets:\n  - name: v1\n  - name: v1\n"),
            vec!["spec.subsets[1].name: duplicate subset names: v1"],
        ),
        (
            dr("  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: -1, connectTimeout: 1x}\n"),
            // The CRD schema rejects the duration before validation.go runs.
            vec!["spec.trafficPolicy.connectionPool.tcp.connectTimeout: Invalid value: \"string\": must be a valid duration greater than 1ms"],
        ),
        (
            dr("  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        maglev: {tableSize: 1000}\n"),
            vec!["spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be a prime number for maglev"],
        ),
        (
            dr("  host: reviews\n  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 150}\n"),
            vec!["spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 150 is not in range 0..100"],
        ),
        (
            dr("  host: reviews\n  trafficPolicy: {}\n"),
            vec!["spec.trafficPolicy: traffic policy must have at least one field"],
        ),
        (
            dr("  host: reviews\n  trafficPolicy:\n    tls: {mode: BOGUS}\n"),
            vec!["spec.trafficPolicy.tls.mode: Unsupported value: \"BOGUS\": supported values: \"DISABLE\", \"SIMPLE\", \"MUTUAL\", \"ISTIO_MUTUAL\""],
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(errors(&yaml), want, "\n{yaml}");
    }
}

#[test]
fn other_kinds() {
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: j, namespace: ns}\nspec:\n  jwtRules:\n  - jwksUri: https://example.com/jwks\n",
            vec!["spec.jwtRules[0].issuer: issuer must be set"],
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: ns}\nspec:\n  portLevelMtls:\n    8080: {mode: STRICT}\n",
            vec!["spec: Invalid value: \"object\": portLevelMtls requires selector"],
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: ns}\nspec:\n  action: DENY\n",
            vec!["spec.rules: invalid policy a.ns: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request"],
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: ns}\nspec:\n  rules:\n  - from:\n    - source: {principals: [\"\"], notNamespaces: [x, \"\"]}\n    to:\n    - operation: {methods: [GET, \"\"], notHosts: [\"\"]}\n",
            vec![
                "spec.rules[0].from[0].source: invalid policy a.ns: empty value not allowed, found in Principals",
                "spec.rules[0].from[0].source: invalid policy a.ns: empty value not allowed, found in NotNamespaces",
                "spec.rules[0].to[0].operation: invalid policy a.ns: empty value not allowed, found in Methods",
                "spec.rules[0].to[0].operation: invalid policy a.ns: empty value not allowed, found in NotHosts",
            ],
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: ns}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n",
            vec!["spec.servers[0].tls: server must have TLS settings for HTTPS/TLS protocols"],
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s, namespace: ns}\nspec:\n  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
            vec!["spec.endpoints: endpoints must be provided for resolution type STATIC"],
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(errors(yaml), want, "\n{yaml}");
    }
}

#[test]
fn errors_name_file_line_resource_and_field() {
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns}}\n---\n{}",
        vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1.0}\n")
    );
    let loaded = load_str(&yaml, "bookinfo.yaml");
    let d = &validate::validate(&loaded.resources)[0];
    assert_eq!(
        d.to_string(),
        "Error bookinfo.yaml:5 VirtualService/ns/r spec.http[0].route[0].destination.subset: subset name is invalid: v1.0"
    );
}

#[test]
fn an_invalid_resource_is_rejected_alone() {
    let yaml = format!(
        "{}---\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: ns}}\nspec:\n  clusterIP: 10.0.0.1\n  ports: [{{name: http, port: 9080}}]\n",
        vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1.0}\n"),
        dr("  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n")
    );
    let loaded = load_str(&yaml, "t.yaml");
    let (snap, diags) = compile(&loaded.resources);
    assert_eq!(diags.iter().filter(|d| d.is_error()).count(), 1);
    assert_eq!(diags[0].resource.as_deref(), Some("VirtualService/ns/r"));
    // The DestinationRule and Service still compile; the bad VirtualService
    // does not route, so the default route is used.
    assert!(snap
        .clusters
        .contains_key("outbound|9080|v1|reviews.ns.svc.cluster.local"));
    let r = snap
        .routes_for("reviews.ns.svc.cluster.local", 9080)
        .unwrap();
    assert_eq!(r.http[0].name, "default");
}
