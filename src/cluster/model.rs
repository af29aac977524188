//! The [`Model`]: the current projection of every object the source reported, and which record
//! owners each change touches.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use super::mcs::{ClusterSetSlice, ServiceImport};
use super::object::{Kind, Namespace, ObjKey, Object, ObjectRef, Pod, Service, Slice};
use crate::dns::name::Name;

/// A unit of record ownership: the index recomputes an owner's records as a whole.
///
/// A Service owns every name derived from it and its EndpointSlices; a Pod owns its
/// `--pods verified` name; a Namespace owns `<ns>.svc.<zone>`; the apex owns the zone's NS,
/// `dns-version` and the fixed empty non-terminals. On a secondary, each transferred RRset is
/// an owner of its own ([`Owner::Copied`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The zone apexes and fixed names.
    Apex,
    /// A Namespace's `<ns>.svc.<zone>`.
    Namespace(Arc<str>),
    /// A Service and its EndpointSlices.
    Service(ObjKey),
    /// A Pod (only with `--pods verified`).
    Pod(ObjKey),
    /// A secondary's RRset of this name and type, as its primary transferred it.
    Copied(Name, u16),
    /// A ServiceImport and its cluster-set EndpointSlices (`--multicluster-zone`).
    Import(ObjKey),
}

/// Which objects a relist covers: one kind, in one namespace or cluster-wide.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The kind being listed.
    pub kind: Kind,
    /// `None` for a cluster-wide list.
    pub namespace: Option<Arc<str>>,
}

impl Scope {
    /// A cluster-wide scope for `kind`.
    pub fn all(kind: Kind) -> Scope {
        Scope { kind, namespace: None }
    }
}

/// Owners touched by one change; almost always one.
pub type Touched = SmallVec<[Owner; 2]>;

struct Stored<T> {
    obj: T,
    /// The model generation in which the object was last applied (see [`Model::relist_done`]).
    seen: u64,
}

/// The projected objects, keyed for the lookups record building needs.
#[derive(Default)]
pub struct Model {
    services: HashMap<ObjKey, Stored<Service>>,
    /// EndpointSlices, by the Service they are labelled with.
    slices: Slices<Slice>,
    pods: HashMap<ObjKey, Stored<Pod>>,
    namespaces: HashMap<Arc<str>, Stored<Namespace>>,
    imports: HashMap<ObjKey, Stored<ServiceImport>>,
    /// Cluster-set EndpointSlices, by the ServiceImport they are labelled with.
    cluster_slices: Slices<ClusterSetSlice>,
    generation: u64,
    /// Open relists: scope → generation at which it started.
    relists: HashMap<Scope, u64>,
    /// `--namespace-labels`: a Service is served only while its Namespace is, so a Namespace
    /// that comes or goes touches its Services.
    namespaces_gate_services: bool,
}

// === impl Model ===

impl Model {
    /// Creates an empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a Namespace that comes or goes touch its Services (`--namespace-labels`, where a
    /// Service is served only while its Namespace is selected).
    pub fn with_namespaces_gating_services(mut self, on: bool) -> Self {
        self.namespaces_gate_services = on;
        self
    }

    /// With gating, the Services of namespace `ns` (a scan: Namespaces come and go rarely).
    fn gated_services(&self, ns: &str, touched: &mut Touched) {
        if self.namespaces_gate_services {
            touched.extend(self.services.keys().filter(|k| &*k.ns == ns).cloned().map(Owner::Service));
        }
    }

    /// Inserts or replaces an object. Returns the owners whose records may have changed; empty
    /// when the object is identical to the stored one (a relist re-applies everything, and only
    /// real changes may cost work).
    pub fn apply(&mut self, obj: Object) -> Touched {
        let seen = self.generation;
        let mut touched = Touched::new();
        match obj {
            Object::Service(svc) => {
                let owner = Owner::Service(svc.key.clone());
                if upsert(&mut self.services, svc.key.clone(), svc, seen) {
                    touched.push(owner);
                }
            }
            Object::Slice(slice) => touched.extend(self.slices.apply(slice, seen).map(Owner::Service)),
            Object::ClusterSetSlice(slice) => touched.extend(self.cluster_slices.apply(slice, seen).map(Owner::Import)),
            Object::Import(import) => {
                let owner = Owner::Import(import.key.clone());
                if upsert(&mut self.imports, import.key.clone(), import, seen) {
                    touched.push(owner);
                }
            }
            Object::Pod(pod) => {
                let owner = Owner::Pod(pod.key.clone());
                if upsert(&mut self.pods, pod.key.clone(), pod, seen) {
                    touched.push(owner);
                }
            }
            Object::Namespace(ns) => {
                let (owner, name) = (Owner::Namespace(ns.name.clone()), ns.name.clone());
                let new = !self.namespaces.contains_key(&name);
                if upsert(&mut self.namespaces, name.clone(), ns, seen) {
                    touched.push(owner);
                    if new {
                        self.gated_services(&name, &mut touched);
                    }
                }
            }
        }
        touched
    }

    /// Removes an object. Deleting one that is not there is not an error (a watch may report a
    /// deletion of an object filtered out earlier).
    pub fn delete(&mut self, what: &ObjectRef) -> Touched {
        let mut touched = Touched::new();
        match what.kind {
            Kind::Service => {
                if self.services.remove(&what.key).is_some() {
                    touched.push(Owner::Service(what.key.clone()));
                }
            }
            Kind::EndpointSlice => touched.extend(self.slices.remove(&what.key).map(Owner::Service)),
            Kind::ClusterSetSlice => touched.extend(self.cluster_slices.remove(&what.key).map(Owner::Import)),
            Kind::ServiceImport => {
                if self.imports.remove(&what.key).is_some() {
                    touched.push(Owner::Import(what.key.clone()));
                }
            }
            Kind::Pod => {
                if self.pods.remove(&what.key).is_some() {
                    touched.push(Owner::Pod(what.key.clone()));
                }
            }
            Kind::Namespace => {
                if self.namespaces.remove(&what.key.name).is_some() {
                    touched.push(Owner::Namespace(what.key.name.clone()));
                    self.gated_services(&what.key.name, &mut touched);
                }
            }
        }
        touched
    }

    /// A full list of `scope` begins: every object in it that is not applied again before
    /// [`Model::relist_done`] is deleted then. Objects are replaced one by one as the list
    /// streams in, so the model never holds two copies of the cluster, and names whose objects
    /// did not change never disappear.
    pub fn relist_start(&mut self, scope: Scope) {
        self.generation += 1;
        self.relists.insert(scope, self.generation);
    }

    /// The list of `scope` is complete: deletes what it did not contain.
    pub fn relist_done(&mut self, scope: &Scope) -> Vec<Owner> {
        let Some(started) = self.relists.remove(scope) else {
            return Vec::new();
        };
        let in_scope = |key: &ObjKey| scope.namespace.as_ref().is_none_or(|ns| *ns == key.ns);
        let stale: Vec<ObjectRef> = match scope.kind {
            Kind::Service => stale_keys(&self.services, started, in_scope, Kind::Service),
            Kind::EndpointSlice => stale_keys(&self.slices.by_key, started, in_scope, Kind::EndpointSlice),
            Kind::ClusterSetSlice => stale_keys(&self.cluster_slices.by_key, started, in_scope, Kind::ClusterSetSlice),
            Kind::ServiceImport => stale_keys(&self.imports, started, in_scope, Kind::ServiceImport),
            Kind::Pod => stale_keys(&self.pods, started, in_scope, Kind::Pod),
            Kind::Namespace => self
                .namespaces
                .iter()
                .filter(|(name, s)| s.seen < started && scope.namespace.as_ref().is_none_or(|ns| ns == *name))
                .map(|(name, _)| ObjectRef { kind: Kind::Namespace, key: ObjKey::new("", name.clone()) })
                .collect(),
        };
        let mut touched = Vec::new();
        for what in stale {
            tracing::debug!(object = %what, "deleted: absent from the relist");
            touched.extend(self.delete(&what));
        }
        touched
    }

    /// A Service.
    pub fn service(&self, key: &ObjKey) -> Option<&Service> {
        self.services.get(key).map(|s| &s.obj)
    }

    /// The EndpointSlices labelled with a Service's name, in a stable order.
    pub fn slices_of(&self, service: &ObjKey) -> impl Iterator<Item = &Slice> {
        self.slices.of(service)
    }

    /// A ServiceImport.
    pub fn import(&self, key: &ObjKey) -> Option<&ServiceImport> {
        self.imports.get(key).map(|s| &s.obj)
    }

    /// The cluster-set EndpointSlices labelled with a ServiceImport's name, in a stable order.
    pub fn cluster_slices_of(&self, import: &ObjKey) -> impl Iterator<Item = &ClusterSetSlice> {
        self.cluster_slices.of(import)
    }

    /// A Pod.
    pub fn pod(&self, key: &ObjKey) -> Option<&Pod> {
        self.pods.get(key).map(|s| &s.obj)
    }

    /// Every endpoint with address `ip`: (Service or ServiceImport key, the cluster of a
    /// cluster-set slice, slice, endpoint). A scan, for `explain`.
    pub fn endpoints_with(
        &self,
        ip: std::net::IpAddr,
    ) -> impl Iterator<Item = (ObjKey, Option<&str>, &Slice, &super::object::Endpoint)> {
        let local = self.slices.by_key.values().map(|s| (&s.obj, None));
        let cluster_set = self.cluster_slices.by_key.values().map(|s| (&s.obj.slice, Some(&*s.obj.cluster)));
        local.chain(cluster_set).flat_map(move |(slice, cluster)| {
            slice
                .endpoints
                .iter()
                .filter(move |e| e.addresses.contains(&ip))
                .map(move |e| (ObjKey::new(slice.key.ns.clone(), slice.service.clone()), cluster, slice, e))
        })
    }

    /// Services with cluster IP `ip`, and ServiceImports with clusterset IP `ip` (`true`). A scan,
    /// for `explain`.
    pub fn services_with_cluster_ip(&self, ip: std::net::IpAddr) -> impl Iterator<Item = (&ObjKey, bool)> {
        let services = self.services.iter().filter_map(move |(k, s)| match &s.obj.kind {
            super::object::ServiceKind::ClusterIp(ips) if ips.contains(&ip) => Some((k, false)),
            _ => None,
        });
        let imports = self.imports.iter().filter_map(move |(k, s)| match &s.obj.kind {
            super::mcs::ImportKind::ClusterSetIp(ips) if ips.contains(&ip) => Some((k, true)),
            _ => None,
        });
        services.chain(imports)
    }

    /// Whether a Namespace object exists.
    pub fn has_namespace(&self, name: &str) -> bool {
        self.namespaces.contains_key(name)
    }

    /// Every owner the model currently implies (for a full rebuild).
    pub fn owners(&self) -> impl Iterator<Item = Owner> + '_ {
        let services = self.services.keys().cloned().map(Owner::Service);
        let pods = self.pods.keys().cloned().map(Owner::Pod);
        let namespaces = self.namespaces.keys().cloned().map(Owner::Namespace);
        let imports = self.imports.keys().cloned().map(Owner::Import);
        std::iter::once(Owner::Apex).chain(namespaces).chain(services).chain(pods).chain(imports)
    }

    /// Object counts: (Services, EndpointSlices, Pods, Namespaces).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (self.services.len(), self.slices.by_key.len(), self.pods.len(), self.namespaces.len())
    }

    /// Multi-cluster object counts: (ServiceImports, cluster-set EndpointSlices).
    pub fn cluster_set_counts(&self) -> (usize, usize) {
        (self.imports.len(), self.cluster_slices.by_key.len())
    }
}

/// A slice that belongs to a named owner in its namespace (an EndpointSlice to its Service, a
/// cluster-set EndpointSlice to its ServiceImport).
trait Owned: PartialEq {
    fn key(&self) -> &ObjKey;
    /// The owner's name (the slice's label).
    fn owner(&self) -> &Arc<str>;
}

impl Owned for Slice {
    fn key(&self) -> &ObjKey {
        &self.key
    }

    fn owner(&self) -> &Arc<str> {
        &self.service
    }
}

impl Owned for ClusterSetSlice {
    fn key(&self) -> &ObjKey {
        &self.slice.key
    }

    fn owner(&self) -> &Arc<str> {
        &self.slice.service
    }
}

/// Slices by key, and the keys of each owner's slices.
struct Slices<T> {
    by_key: HashMap<ObjKey, Stored<T>>,
    by_owner: HashMap<ObjKey, SmallVec<[ObjKey; 1]>>,
}

impl<T> Default for Slices<T> {
    fn default() -> Self {
        Slices { by_key: HashMap::new(), by_owner: HashMap::new() }
    }
}

impl<T: Owned> Slices<T> {
    /// Stores `slice`; returns the owners it touched: none if it did not change, its previous
    /// owner too if it moved.
    fn apply(&mut self, slice: T, seen: u64) -> impl Iterator<Item = ObjKey> + use<T> {
        let key = slice.key().clone();
        let owner = ObjKey::new(key.ns.clone(), slice.owner().clone());
        let old = self.by_key.get(&key).map(|s| ObjKey::new(key.ns.clone(), s.obj.owner().clone()));
        let mut touched: SmallVec<[ObjKey; 2]> = SmallVec::new();
        if !upsert(&mut self.by_key, key.clone(), slice, seen) {
            return touched.into_iter();
        }
        if let Some(old) = old.filter(|old| *old != owner) {
            self.unlink(&old, &key);
            touched.push(old);
        }
        let list = self.by_owner.entry(owner.clone()).or_default();
        if !list.contains(&key) {
            list.push(key);
        }
        touched.push(owner);
        touched.into_iter()
    }

    /// Removes a slice; returns its owner.
    fn remove(&mut self, key: &ObjKey) -> Option<ObjKey> {
        let old = self.by_key.remove(key)?;
        let owner = ObjKey::new(key.ns.clone(), old.obj.owner().clone());
        self.unlink(&owner, key);
        Some(owner)
    }

    fn of(&self, owner: &ObjKey) -> impl Iterator<Item = &T> {
        self.by_owner.get(owner).into_iter().flatten().filter_map(|k| self.by_key.get(k).map(|s| &s.obj))
    }

    fn unlink(&mut self, owner: &ObjKey, slice: &ObjKey) {
        if let Some(list) = self.by_owner.get_mut(owner) {
            list.retain(|k| k != slice);
            if list.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }
}

/// Stores `obj` under `key`; returns whether anything changed. The generation is refreshed
/// either way, so a relist sees the object.
fn upsert<K: std::hash::Hash + Eq, T: PartialEq>(map: &mut HashMap<K, Stored<T>>, key: K, obj: T, seen: u64) -> bool {
    match map.get_mut(&key) {
        Some(stored) => {
            stored.seen = seen;
            if stored.obj == obj {
                return false;
            }
            stored.obj = obj;
            true
        }
        None => {
            map.insert(key, Stored { obj, seen });
            true
        }
    }
}

fn stale_keys<T>(
    map: &HashMap<ObjKey, Stored<T>>,
    started: u64,
    in_scope: impl Fn(&ObjKey) -> bool,
    kind: Kind,
) -> Vec<ObjectRef> {
    map.iter()
        .filter(|(k, s)| s.seen < started && in_scope(k))
        .map(|(k, _)| ObjectRef { kind, key: k.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::object::{Conditions, Endpoint, ServiceKind};

    fn svc(ns: &str, name: &str) -> Object {
        Object::Service(Service { key: ObjKey::new(ns, name), kind: ServiceKind::Headless, ports: vec![] })
    }

    fn slice(ns: &str, name: &str, service: &str, ip: &str) -> Object {
        Object::Slice(Slice {
            key: ObjKey::new(ns, name),
            service: service.into(),
            ports: vec![],
            endpoints: vec![Endpoint::new(
                ip.parse::<std::net::IpAddr>().unwrap().into(),
                None,
                None,
                Conditions { ready: true, serving: true, terminating: false },
            )],
            trigger_time_ms: None,
        })
    }

    #[test]
    fn identical_apply_touches_nothing() {
        let mut m = Model::new();
        assert_eq!(m.apply(svc("ns-0", "svc-0")).len(), 1);
        assert!(m.apply(svc("ns-0", "svc-0")).is_empty());
    }

    #[test]
    fn slice_moving_between_services_touches_both() {
        let mut m = Model::new();
        m.apply(slice("ns-0", "slice-0", "svc-0", "10.0.0.1"));
        let touched = m.apply(slice("ns-0", "slice-0", "svc-1", "10.0.0.1"));
        assert_eq!(
            touched.as_slice(),
            &[Owner::Service(ObjKey::new("ns-0", "svc-0")), Owner::Service(ObjKey::new("ns-0", "svc-1"))]
        );
        assert_eq!(m.slices_of(&ObjKey::new("ns-0", "svc-0")).count(), 0);
        assert_eq!(m.slices_of(&ObjKey::new("ns-0", "svc-1")).count(), 1);
    }

    #[test]
    fn relist_deletes_only_what_it_did_not_see_in_its_scope() {
        let mut m = Model::new();
        m.apply(svc("ns-0", "keep"));
        m.apply(svc("ns-0", "gone"));
        m.apply(svc("ns-1", "other"));
        let scope = Scope { kind: Kind::Service, namespace: Some("ns-0".into()) };
        m.relist_start(scope.clone());
        assert!(m.apply(svc("ns-0", "keep")).is_empty(), "unchanged object is a no-op");
        let touched = m.relist_done(&scope);
        assert_eq!(touched, vec![Owner::Service(ObjKey::new("ns-0", "gone"))]);
        assert!(m.service(&ObjKey::new("ns-0", "keep")).is_some());
        assert!(m.service(&ObjKey::new("ns-1", "other")).is_some(), "outside the scope");
    }
}
