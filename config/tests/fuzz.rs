//! Arbitrary input never panics the loader, validator, analyzer or compiler.
use proptest::prelude::*;
use strait_config::{analyze::analyze, compile, load::load_str};

/// Fragments that make the generator hit real code paths: known kinds,
/// nested specs, bad values.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("apiVersion: networking.istio.io/v1\n".to_string()),
        Just("apiVersion: v1\n".to_string()),
        Just("apiVersion: discovery.k8s.io/v1\n".to_string()),
        Just("kind: VirtualService\n".to_string()),
        Just("kind: DestinationRule\n".to_string()),
        Just("kind: Service\n".to_string()),
        Just("kind: EndpointSlice\n".to_string()),
        Just("kind: Gateway\n".to_string()),
        Just("kind: AuthorizationPolicy\n".to_string()),
        Just("metadata: {name: a, namespace: b}\n".to_string()),
        Just("spec:\n  hosts: [\"*\", a]\n  http:\n  - route:\n    - destination: {host: a, subset: v1}\n      weight: -3\n".to_string()),
        Just("spec:\n  host: a\n  subsets: [{name: v1, labels: {v: \"1\"}}]\n  trafficPolicy: {portLevelSettings: [{port: {number: 0}}]}\n".to_string()),
        Just("spec:\n  clusterIP: 10.0.0.1\n  ports: [{port: 70000, name: http}]\n".to_string()),
        Just("endpoints: [{addresses: [\"1.2.3.4\", \"::1\", bad]}]\nports: [{port: 80}]\n".to_string()),
        Just("  - match: [{uri: {regex: \"(\"}}]\n".to_string()),
        Just("---\n".to_string()),
        Just("[1, 2\n".to_string()),
        "[ -~\n]{0,40}".prop_map(|s| s),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn structured_garbage_never_panics(parts in proptest::collection::vec(fragment(), 0..12)) {
        let text: String = parts.concat();
        let loaded = load_str(&text, "fuzz.yaml");
        let _ = compile(&loaded.resources);
        let _ = analyze(&loaded.resources);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let loaded = load_str(&text, "fuzz.yaml");
        let _ = compile(&loaded.resources);
    }
}
