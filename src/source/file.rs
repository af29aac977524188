//! The file source: Kubernetes YAML manifests on disk.
//!
//! Reads what `kubectl get svc,endpointslices,pods,namespaces -A -o yaml` writes, or hand-written
//! manifests: multi-document YAML (or JSON), `kind: List`, a single file or a directory of
//! `*.yaml`/`*.yml`/`*.json` files (not recursive, hidden files skipped, as `kubectl apply -f DIR`).
//! Namespace, Service, EndpointSlice (`discovery.k8s.io/v1`) and Pod are read (and ServiceImports,
//! by `cluster::mcs`, which also takes the EndpointSlices labelled for a cluster set); other kinds are
//! ignored, and so are Pods unless `--pods verified` needs them (as the Kubernetes source watches
//! them only then: a `kubectl get pods -A` dump of a large cluster would otherwise be held for
//! nothing).
//!
//! Changes are found by polling file metadata (size, mtime, inode), which also sees
//! rename-into-place and ConfigMap symlink swaps that inotify-based watchers miss. A changed file
//! is read only once it has settled: its metadata unchanged for the settle time, because tools
//! rewrite files in place (truncate, then write in pieces) and a half-written YAML file can parse.
//! A file that fails to parse is reported with its path and document number and its last good
//! objects keep serving. A successful re-read sends the file's objects again (the model ignores
//! those that did not change) and deletes what the file no longer defines.
//!
//! The source keeps no objects, only which objects each file defined: the objects live in the
//! model, and at 100,000 endpoints a second copy here cost 15 MiB.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, SeqAccess};
use tokio_util::sync::CancellationToken;

use super::{Event, Scope, Sender, send};
use crate::cluster::api::{self, Field, Shape, Wrong, drain_seq};
use crate::cluster::object::{self, Kind, Object, ObjectRef};

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("{path}: document {document}: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 1-based document number within the file.
        document: usize,
        /// The parser's error, with line and column.
        #[source]
        source: serde_yaml::Error,
    },
    /// A directory holds no manifest files.
    #[error("{0}: no *.yaml, *.yml or *.json files")]
    Empty(PathBuf),
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the file source watches.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// How often file metadata is checked.
    pub poll_interval: Duration,
    /// How long a changed file must stay unchanged before it is read.
    pub settle: Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions { poll_interval: Duration::from_millis(250), settle: Duration::from_millis(300) }
    }
}

/// Identity and version of a file as metadata shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(Fingerprint { len: meta.len(), modified: meta.modified().ok(), inode: meta.ino() })
}

/// The manifest files a path names.
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Read { path: path.into(), source })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| Error::Read { path: path.into(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses every document of a manifest file. A YAML error fails the whole file; an object that
/// cannot be used is skipped with a warning naming it.
pub fn parse_manifests(text: &str, path: &Path) -> Result<Vec<Object>> {
    // ServiceImports and cluster-set EndpointSlices (`--multicluster-zone`) are read by their own.
    let (cluster_set, claimed) = crate::cluster::mcs::read_manifests(text, path);
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        // Every field of a manifest is a `Field`, so only malformed YAML fails here.
        let manifest = Field::<Manifest>::deserialize(doc).map_err(|source| Error::Yaml {
            path: path.into(),
            document,
            source,
        })?;
        if let Field::Present(manifest) = manifest {
            collect(manifest, path, document, &mut objects, &claimed);
        }
    }
    objects.retain(|o| !claimed.contains(&o.object_ref()));
    objects.extend(cluster_set);
    Ok(objects)
}

/// One document of a manifest file, or one item of a `List`: the fields of every kind that is
/// read, decoded in one pass straight from the YAML, since `kind` may come last. A field that
/// only another kind has is never looked at, so its type does not matter.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Manifest {
    api_version: Field<String>,
    kind: Field<String>,
    metadata: api::Meta,
    /// A Service's.
    spec: Field<api::ServiceSpec>,
    /// A Pod's.
    status: Field<api::PodStatus>,
    /// An EndpointSlice's.
    address_type: Field<String>,
    /// An EndpointSlice's.
    endpoints: Field<Vec<api::Endpoint>>,
    /// An EndpointSlice's.
    ports: Field<Vec<api::Port>>,
    /// A `List`'s.
    items: Field<Vec<Manifest>>,
}

/// Any document or list item is a manifest: one that is not a map has no kind, and is ignored
/// as kinds that are not read are.
impl Shape for Manifest {
    const EXPECTED: &'static str = "a map";

    fn from_bool(_: bool) -> Option<Self> {
        Some(Manifest::default())
    }

    fn from_int(_: i64) -> Option<Self> {
        Some(Manifest::default())
    }

    fn from_text(_: &str) -> Option<Self> {
        Some(Manifest::default())
    }

    fn from_null() -> Option<Self> {
        Some(Manifest::default())
    }

    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> std::result::Result<std::result::Result<Self, Wrong>, A::Error> {
        drain_seq(seq)?;
        Ok(Ok(Manifest::default()))
    }

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> std::result::Result<std::result::Result<Self, Wrong>, A::Error> {
        Manifest::deserialize(MapAccessDeserializer::new(map)).map(Ok)
    }
}

/// `Kind namespace/name` as the manifest spells it, for warnings.
fn display_name(kind: &str, meta: &api::Meta) -> String {
    let name = meta.object.name.as_deref().unwrap_or("<unnamed>");
    match &meta.object.namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn collect(doc: Manifest, path: &Path, document: usize, out: &mut Vec<Object>, claimed: &[ObjectRef]) {
    let Manifest { api_version, kind, metadata, spec, status, address_type, endpoints, ports, items } = doc;
    let kind = kind.as_str().unwrap_or_default();
    let api_version = api_version.as_str().unwrap_or_default();
    let where_ = || format!("{}: document {document}", path.display());
    if kind == "List" || (kind.ends_with("List") && !items.is_absent()) {
        match items {
            Field::Present(items) => {
                for item in items {
                    collect(item, path, document, out, claimed);
                }
            }
            Field::Wrong(wrong) => tracing::warn!(
                object = %display_name(kind, &metadata), at = %where_(), reason = %wrong.under("items"), "skipping list"
            ),
            Field::Absent => {}
        }
        return;
    }
    let projected = match (api_version, kind) {
        ("v1", "Service") => {
            let svc = api::Service { metadata, spec };
            object::project_service(&svc).map(Object::Service).map_err(|e| (e, svc.metadata))
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let mut slice = api::EndpointSlice { metadata, address_type, endpoints, ports };
            object::project_slice(&mut slice).map(Object::Slice).map_err(|e| (e, slice.metadata))
        }
        ("v1", "Pod") => {
            let pod = api::Pod { metadata, status };
            object::project_pod(&pod).map(Object::Pod).map_err(|e| (e, pod.metadata))
        }
        ("v1", "Namespace") => {
            let ns = api::Namespace { metadata };
            object::project_namespace(&ns).map(Object::Namespace).map_err(|e| (e, ns.metadata))
        }
        (_, "Service" | "EndpointSlice" | "Pod" | "Namespace") => {
            tracing::warn!(object = %display_name(kind, &metadata), %api_version, at = %where_(),
                "skipping object of an unsupported apiVersion");
            return;
        }
        _ => {
            tracing::debug!(object = %display_name(kind, &metadata), at = %where_(), "ignoring kind");
            return;
        }
    };
    match projected {
        Ok(obj) => out.push(obj),
        // A cluster-set EndpointSlice, not the cluster zone's.
        Err((_, metadata)) if kind == "EndpointSlice" && crate::cluster::mcs::claims(claimed, &metadata.object) => {}
        Err((error, metadata)) => {
            tracing::warn!(object = %display_name(kind, &metadata), at = %where_(), reason = %error.reason, "skipping object")
        }
    }
}

/// What was last read from each file.
struct FileState {
    fingerprint: Fingerprint,
    /// The objects of its last good read.
    defines: HashSet<ObjectRef>,
}

impl FileState {
    fn new(fingerprint: Fingerprint, objects: &[Object]) -> FileState {
        FileState { fingerprint, defines: objects.iter().map(Object::object_ref).collect() }
    }
}

/// Reads manifests from a path and keeps them in sync.
pub struct FileSource {
    path: PathBuf,
    opts: FileOptions,
    files: BTreeMap<PathBuf, FileState>,
    /// Whether Pods are read (`--pods verified`).
    pods: bool,
    /// The objects read by [`FileSource::load`], until [`FileSource::run`] sends them.
    initial: Vec<Object>,
}

impl FileSource {
    /// Reads every manifest under `path` (Pods only if `pods`). Fails on any unreadable or
    /// unparsable file: at start there is no last good state to keep serving.
    pub fn load(path: &Path, opts: FileOptions, pods: bool) -> Result<FileSource> {
        let mut source =
            FileSource { path: path.to_path_buf(), opts, files: BTreeMap::new(), pods, initial: Vec::new() };
        let files = manifest_files(path)?;
        if files.is_empty() {
            return Err(Error::Empty(path.into()));
        }
        for file in files {
            let (fingerprint, objects) = read_file(&file, source.pods)?;
            source.files.insert(file, FileState::new(fingerprint, &objects));
            source.initial.extend(objects);
        }
        Ok(source)
    }

    /// How many objects are loaded.
    pub fn object_count(&self) -> usize {
        self.files.values().map(|f| f.defines.len()).sum()
    }

    /// Sends the initial state (as one relist), then re-reads on change until cancelled.
    pub async fn run(mut self, tx: Sender, cancel: CancellationToken) {
        let starts = Kind::ALL.into_iter().map(|k| Event::RelistStart(Scope::all(k)));
        let applies = std::mem::take(&mut self.initial).into_iter().map(Event::Apply);
        let dones = Kind::ALL.into_iter().map(|k| Event::RelistDone(Scope::all(k)));
        for ev in starts.chain(applies).chain(dones).chain(std::iter::once(Event::Synced)) {
            if !send(&tx, ev).await {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.opts.poll_interval) => {}
                _ = cancel.cancelled() => return,
            }
            if !self.changed() {
                continue;
            }
            if !self.settle(&cancel).await {
                return;
            }
            for ev in self.reread() {
                if !send(&tx, ev).await {
                    return;
                }
            }
        }
    }

    /// The current set of files and their fingerprints (files that vanish mid-scan are left out).
    fn scan(&self) -> BTreeMap<PathBuf, Fingerprint> {
        let Ok(files) = manifest_files(&self.path) else {
            return BTreeMap::new();
        };
        files.into_iter().filter_map(|f| Some((f.clone(), fingerprint(&f).ok()?))).collect()
    }

    fn changed(&self) -> bool {
        let now = self.scan();
        now.len() != self.files.len()
            || now.iter().any(|(p, fp)| self.files.get(p).is_none_or(|s| s.fingerprint != *fp))
    }

    /// Waits until the files stop changing for the settle time. Returns false if cancelled.
    async fn settle(&self, cancel: &CancellationToken) -> bool {
        let mut before = self.scan();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.opts.settle) => {}
                _ = cancel.cancelled() => return false,
            }
            let after = self.scan();
            if after == before {
                return true;
            }
            before = after;
        }
    }

    /// Re-reads changed files; returns the events that bring the model up to date.
    fn reread(&mut self) -> Vec<Event> {
        let current = self.scan();
        let mut events = Vec::new();
        if current.is_empty() && !self.path.is_dir() {
            tracing::warn!(path = %self.path.display(), "manifest file is missing; keeping the last good state");
            return events;
        }
        // Objects that a file no longer defines.
        let mut dropped: Vec<ObjectRef> = Vec::new();
        let gone: Vec<PathBuf> = self.files.keys().filter(|p| !current.contains_key(*p)).cloned().collect();
        for path in gone {
            tracing::info!(path = %path.display(), "manifest file removed; its objects are deleted");
            if let Some(state) = self.files.remove(&path) {
                dropped.extend(state.defines);
            }
        }
        for (path, fp) in current {
            if self.files.get(&path).is_some_and(|s| s.fingerprint == fp) {
                continue;
            }
            match read_file(&path, self.pods) {
                Ok((fingerprint, objects)) => {
                    tracing::info!(path = %path.display(), objects = objects.len(), "manifest file re-read");
                    let state = FileState::new(fingerprint, &objects);
                    if let Some(old) = self.files.get(&path) {
                        dropped.extend(old.defines.iter().filter(|r| !state.defines.contains(*r)).cloned());
                    }
                    events.extend(objects.into_iter().map(Event::Apply));
                    self.files.insert(path, state);
                }
                Err(error) => {
                    tracing::error!(%error, "manifest file not applied; its last good state keeps serving");
                    // Remember the fingerprint so the same broken version is reported once.
                    match self.files.get_mut(&path) {
                        Some(state) => state.fingerprint = fp,
                        None => {
                            self.files.insert(path, FileState { fingerprint: fp, defines: HashSet::new() });
                        }
                    }
                }
            }
        }
        // A dropped object is deleted, unless another file defines it too: then that file's
        // version is applied again (read anew, as the source keeps no objects).
        for what in dropped {
            match self.files.iter().find(|(_, s)| s.defines.contains(&what)) {
                None => events.push(Event::Delete(what)),
                Some((path, _)) => {
                    if let Ok((_, objects)) = read_file(path, self.pods) {
                        events.extend(objects.into_iter().filter(|o| o.object_ref() == what).map(Event::Apply));
                    }
                }
            }
        }
        events
    }
}

fn read_file(path: &Path, pods: bool) -> Result<(Fingerprint, Vec<Object>)> {
    let read_err = |source| Error::Read { path: path.into(), source };
    let fingerprint = fingerprint(path).map_err(read_err)?;
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let mut objects = parse_manifests(&text, path)?;
    if !pods {
        objects.retain(|o| !matches!(o, Object::Pod(_)));
    }
    Ok((fingerprint, objects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_documents() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a, namespace: ns-0}
  spec: {clusterIP: 10.0.0.1}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: ignored}
---
---
apiVersion: v1
kind: Namespace
metadata: {name: ns-0}
---
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: ns-0}
spec: {clusterIP: 300.1.1.1}
"#;
        let objects = parse_manifests(text, Path::new("x.yaml")).unwrap();
        assert_eq!(objects.len(), 2, "{objects:?}");
    }

    #[test]
    fn malformed_objects_are_skipped_and_the_rest_kept() {
        let text = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bad-addresses, namespace: ns-0, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
endpoints: [{addresses: 10.0.0.1}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: no-type, namespace: ns-0, labels: {kubernetes.io/service-name: a}}
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: bad-port, namespace: ns-0}
spec: {clusterIP: 10.0.0.2, ports: [{port: "80"}]}
---
kind: Service
spec: {clusterIP: 10.0.0.1}
metadata: {name: a, namespace: ns-0}
apiVersion: v1
"#;
        let objects = parse_manifests(text, Path::new("x.yaml")).unwrap();
        let names: Vec<String> = objects.iter().map(|o| o.object_ref().to_string()).collect();
        assert_eq!(names, ["Service ns-0/a"], "fields in any order; the malformed objects skipped");
    }

    /// Documents and list items that are not objects, and fields of kinds that are not read, are
    /// ignored whatever their shape.
    #[test]
    fn what_is_not_read_is_ignored_whatever_its_shape() {
        let text = r#"
just a string
---
[1, 2]
---
apiVersion: v1
kind: List
items: {not: a list}
---
apiVersion: v1
kind: ServiceList
items:
- 5
- null
- {apiVersion: v1, kind: Service, metadata: {name: b, namespace: ns-1}, spec: {clusterIP: 10.0.0.2}}
- kind: Deployment
  apiVersion: apps/v1
  metadata: {name: d, namespace: ns-1}
  spec: {type: [not, a, string], ports: 7}
  status: {phase: {}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns-0}
spec: {finalizers: [kubernetes], ports: 80}
status: {phase: Active}
"#;
        let objects = parse_manifests(text, Path::new("x.yaml")).unwrap();
        let names: Vec<String> = objects.iter().map(|o| o.object_ref().to_string()).collect();
        assert_eq!(names, ["Service ns-1/b", "Namespace ns-0"]);
    }

    #[test]
    fn yaml_errors_name_the_document() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n";
        let err = parse_manifests(text, Path::new("dir/x.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("dir/x.yaml: document 2:"), "{msg}");
    }
}
