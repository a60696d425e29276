//! The schema trees live only as long as a load: a daemon does not keep
//! them between reloads (issue 20: RSS per node). Its own test binary, so
//! no other test's load holds a scope while this one checks the cache.
use std::sync::Arc;

use strait_config::schema::{schema_for, Scope};

const DR: (&str, &str) = ("networking.istio.io/v1", "DestinationRule");

#[test]
fn trees_are_shared_within_a_scope_and_freed_when_the_last_scope_ends() {
    let outer = Scope::enter();
    let dr = schema_for(DR.0, DR.1).unwrap();
    let inner = Scope::enter();
    drop(inner);
    let again = schema_for(DR.0, DR.1).unwrap();
    assert!(Arc::ptr_eq(&dr, &again), "shared while a scope is alive");
    drop(again);
    assert_eq!(Arc::strong_count(&dr), 2, "held by the cache and by us");
    drop(outer);
    assert_eq!(Arc::strong_count(&dr), 1, "the cache let its tree go");

    // Outside a scope every call parses its own tree and keeps none.
    let a = schema_for(DR.0, DR.1).unwrap();
    let b = schema_for(DR.0, DR.1).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!((Arc::strong_count(&a), Arc::strong_count(&b)), (1, 1));
    assert_eq!(a, b);

    // A load opens its own scope: nothing is left cached after it.
    let loaded = strait_config::load::load_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: d}\nspec: {host: r, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n",
        "dr.yaml",
    );
    assert_eq!(loaded.resources.len(), 1, "{:?}", loaded.diagnostics);
    let c = schema_for(DR.0, DR.1).unwrap();
    assert_eq!(Arc::strong_count(&c), 1, "no tree kept after the load");
}
