//! Dual-stack Services (`spec.clusterIPs`, `ipFamilies`,
//! `ipFamilyPolicy`) and IPv6 EndpointSlices: both VIPs reach the
//! snapshot's services and kernel table, with the endpoints of both
//! slices; malformed lists are rejected naming the resource and field.
use std::net::{IpAddr, SocketAddr};

use strait_config::load::load_str;
use strait_config::snapshot::{L4Mode, L4Protocol};
use strait_config::{compile, Diagnostic, MeshSnapshot};

fn compiled(yaml: &str) -> (MeshSnapshot, Vec<Diagnostic>) {
    let loaded = load_str(yaml, "dual.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    compile(&loaded.resources)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const HOST: &str = "web.default.svc.cluster.local";

fn service(spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n{spec}  selector: {{app: web}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n  - {{name: dns, port: 53, protocol: UDP}}\n---\n"
    )
}

fn slice(name: &str, family: &str, addrs: &[&str]) -> String {
    let eps: String = addrs
        .iter()
        .map(|a| format!("- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: {family}\nports:\n- {{name: http, port: 8080}}\n- {{name: dns, port: 53}}\nendpoints:\n{eps}---\n"
    )
}

const DUAL: &str = "  clusterIP: 10.96.0.80\n  clusterIPs: [10.96.0.80, \"fd00:96::80\"]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: PreferDualStack\n";

#[test]
fn a_dual_stack_service_has_both_vips_with_the_endpoints_of_both_slices() {
    let yaml = service(DUAL)
        + &slice("web-v4", "IPv4", &["10.244.0.5", "10.244.0.6"])
        + &slice("web-v6", "IPv6", &["fd00:244::5", "fd00:244::6"]);
    let (snap, diags) = compiled(&yaml);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let svc = &snap.services[HOST];
    assert_eq!(svc.vip, Some(ip("10.96.0.80")));
    assert_eq!(svc.extra_vips, vec![ip("fd00:96::80")]);
    assert_eq!(snap.vips[&ip("fd00:96::80")], vec![HOST.to_string()]);

    // One kernel entry per VIP and port, each with every endpoint (the
    // data path keeps each VIP's own family).
    for vip in ["10.96.0.80", "fd00:96::80"] {
        for (port, proto, target) in [(80, L4Protocol::Tcp, 8080), (53, L4Protocol::Udp, 53)] {
            let e = snap
                .l4
                .iter()
                .find(|e| e.vip == ip(vip) && e.port == port && e.protocol == proto)
                .unwrap_or_else(|| panic!("no kernel entry for {vip}:{port}: {:?}", snap.l4));
            assert_eq!(e.mode, L4Mode::L4);
            let addrs: Vec<SocketAddr> = e.backends.iter().map(|b| b.addr).collect();
            let want: Vec<SocketAddr> = ["10.244.0.5", "10.244.0.6", "fd00:244::5", "fd00:244::6"]
                .iter()
                .map(|a| SocketAddr::new(ip(a), target))
                .collect();
            assert_eq!(addrs, want, "{vip}:{port}");
        }
    }
    // The proxy's cluster for the port holds both families too.
    let c = &snap.clusters["outbound|80||web.default.svc.cluster.local"];
    assert_eq!(c.endpoints.len(), 4);
}

#[test]
fn an_ipv6_single_stack_service_gets_an_ipv6_vip() {
    let yaml = service("  clusterIP: \"fd00:96::81\"\n  clusterIPs: [\"fd00:96::81\"]\n  ipFamilies: [IPv6]\n  ipFamilyPolicy: SingleStack\n")
        + &slice("web-v6", "IPv6", &["fd00:244::7"]);
    let (snap, diags) = compiled(&yaml);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let svc = &snap.services[HOST];
    assert_eq!(svc.vip, Some(ip("fd00:96::81")));
    assert!(svc.extra_vips.is_empty());
    let e = snap.l4.iter().find(|e| e.port == 80).unwrap();
    assert_eq!(e.vip, ip("fd00:96::81"));
    assert_eq!(e.backends[0].addr, "[fd00:244::7]:8080".parse().unwrap());
}

#[test]
fn clusterips_alone_give_both_vips() {
    // `clusterIP` left out: the first of `clusterIPs` is the primary.
    let yaml = service("  clusterIPs: [\"fd00:96::82\", 10.96.0.82]\n  ipFamilies: [IPv6, IPv4]\n  ipFamilyPolicy: RequireDualStack\n");
    let (snap, diags) = compiled(&yaml);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let svc = &snap.services[HOST];
    assert_eq!(svc.vip, Some(ip("fd00:96::82")));
    assert_eq!(svc.extra_vips, vec![ip("10.96.0.82")]);
}

fn errors(yaml: &str) -> Vec<String> {
    let (snap, diags) = compiled(yaml);
    let errs: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    if !errs.is_empty() {
        // The resource alone is rejected.
        assert!(!snap.services.contains_key(HOST), "{errs:?}");
    }
    errs
}

#[test]
fn malformed_dual_stack_fields_are_rejected_naming_the_field() {
    let cases = [
        (
            "  clusterIP: 10.96.0.80\n  clusterIPs: [10.96.0.80, 10.96.0.81]\n",
            "spec.clusterIPs[1]",
            "same family",
        ),
        (
            "  clusterIP: 10.96.0.80\n  clusterIPs: [10.96.0.80, \"fd00::zz\"]\n",
            "spec.clusterIPs[1]",
            "valid IP address",
        ),
        (
            "  clusterIP: 10.96.0.80\n  clusterIPs: [10.96.0.99]\n",
            "spec.clusterIPs[0]",
            "same value as 'spec.clusterIP'",
        ),
        (
            "  clusterIP: 10.96.0.80\n  clusterIPs: [10.96.0.80, \"fd00::80\"]\n  ipFamilies: [IPv6, IPv4]\n",
            "spec.clusterIPs[0]",
            "expected an IPv6 value",
        ),
        (
            "  clusterIP: 10.96.0.80\n  clusterIPs: [10.96.0.80, \"fd00::80\"]\n  ipFamilyPolicy: SingleStack\n",
            "spec.clusterIPs",
            "SingleStack",
        ),
        (
            "  clusterIP: 10.96.0.80\n  ipFamilyPolicy: DualStackPlease\n",
            "spec.ipFamilyPolicy",
            "Unsupported value",
        ),
        (
            "  clusterIP: 10.96.0.80\n  ipFamilies: [IPv5]\n",
            "spec.ipFamilies[0]",
            "Unsupported value",
        ),
    ];
    for (spec, field, why) in cases {
        let errs = errors(&service(spec));
        assert!(
            errs.iter()
                .any(|e| e.contains("Service/default/web") && e.contains(field) && e.contains(why)),
            "{spec}: {errs:?}"
        );
    }
}

#[test]
fn an_endpoint_slice_address_of_the_wrong_family_is_rejected() {
    let yaml = service(DUAL)
        + &slice("web-v6", "IPv6", &["fd00:244::5", "10.244.0.9"])
        + &slice("web-v4", "IPv4", &["10.244.0.5"]);
    let (snap, diags) = compiled(&yaml);
    let errs: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(
        errs.iter()
            .any(|e| e.contains("EndpointSlice/default/web-v6")
                && e.contains("endpoints[1].addresses[0]")
                && e.contains("valid IPv6 address")),
        "{errs:?}"
    );
    // The bad slice alone is left out; the IPv4 one still serves.
    let c = &snap.clusters["outbound|80||web.default.svc.cluster.local"];
    let addrs: Vec<String> = c.endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, ["10.244.0.5:8080"]);
}

#[test]
fn an_endpoint_change_updates_both_vips_incrementally() {
    use strait_config::compile::{Applied, Incremental};
    let yaml = |v6: &str| {
        service(DUAL) + &slice("web-v4", "IPv4", &["10.244.0.5"]) + &slice("web-v6", "IPv6", &[v6])
    };
    let before = load_str(&yaml("fd00:244::5"), "dual.yaml").resources;
    let after = load_str(&yaml("fd00:244::9"), "dual.yaml").resources;
    let (mut inc, mut snap, _) = Incremental::compile(&before);
    let (diff, how) = inc.apply(&mut snap, &after, Some((&before[2..], &after[2..])));
    assert!(matches!(how, Applied::Incremental), "{how:?}");
    // Every kernel entry of both VIPs carries the new IPv6 endpoint.
    assert_eq!(diff.l4.changed.len(), 4, "{:?}", diff.l4);
    assert_eq!(snap, compile(&after).0);
    let e = snap
        .l4
        .iter()
        .find(|e| e.vip == ip("fd00:96::80") && e.port == 80)
        .unwrap();
    assert!(e
        .backends
        .iter()
        .any(|b| b.addr == "[fd00:244::9]:8080".parse().unwrap()));
}
