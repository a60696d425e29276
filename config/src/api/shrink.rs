//! Drops the growth slack of the vectors serde built while loading.
//!
//! serde_yaml gives no length hint for sequences, so a `Vec` grows by
//! doubling from 4: 10 EndpointSlice endpoints of ~350 bytes take room for
//! 16, a single `match` room for 4. Resources live as long as the config
//! does (10^5 endpoints in a large mesh), so the loader trims the lists
//! that repeat per resource.
use super::Object;

/// Shrinks a vector and each of its elements.
fn trim<T>(v: &mut Vec<T>, each: impl FnMut(&mut T)) {
    v.iter_mut().for_each(each);
    v.shrink_to_fit();
}

impl Object {
    /// Gives back the spare capacity of the lists that repeat per resource
    /// (endpoints, addresses, ports, rules, matches, destinations, subsets).
    pub(crate) fn shrink_to_fit(&mut self) {
        match self {
            Object::EndpointSlice(s) => {
                trim(&mut s.endpoints, |e| e.addresses.shrink_to_fit());
                if let Some(p) = &mut s.ports {
                    p.shrink_to_fit();
                }
            }
            Object::Endpoints(e) => {
                for sub in e.subsets.iter_mut().flatten() {
                    for list in [&mut sub.addresses, &mut sub.not_ready_addresses]
                        .into_iter()
                        .flatten()
                    {
                        list.shrink_to_fit();
                    }
                }
            }
            Object::Service(s) => {
                if let Some(p) = s.spec.as_mut().and_then(|s| s.ports.as_mut()) {
                    p.shrink_to_fit();
                }
            }
            Object::VirtualService(o) => {
                let v = &mut o.spec;
                v.hosts.shrink_to_fit();
                v.gateways.shrink_to_fit();
                v.export_to.shrink_to_fit();
                trim(&mut v.http, |h| {
                    h.matches.shrink_to_fit();
                    h.route.shrink_to_fit();
                });
                trim(&mut v.tcp, |t| {
                    t.matches.shrink_to_fit();
                    t.route.shrink_to_fit();
                });
                trim(&mut v.tls, |t| {
                    t.matches.shrink_to_fit();
                    t.route.shrink_to_fit();
                });
            }
            Object::DestinationRule(o) => {
                o.spec.subsets.shrink_to_fit();
                o.spec.export_to.shrink_to_fit();
            }
            _ => {}
        }
    }
}
