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

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::{Event, Scope, Sender, send};
use crate::cluster::api::Decoded;
use crate::cluster::mcs;
use crate::cluster::namespace::NamespaceLabels;
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
        /// 1-based number of the (non-empty) document within the file.
        document: usize,
        /// The parser's error, with line and column.
        #[source]
        source: Box<serde_saphyr::Error>,
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
    /// `--namespace-labels`: Namespaces whose labels do not match are left out.
    pub namespace_labels: Option<NamespaceLabels>,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            poll_interval: Duration::from_millis(250),
            settle: Duration::from_millis(300),
            namespace_labels: None,
        }
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
///
/// Each document is read as a JSON value first, since `kind` may come last: the kind picks the
/// type the value is decoded into, and a `List`'s items are decoded one by one, so one bad item
/// costs only itself. Files are read at start and when they change, never per query.
pub fn parse_manifests(text: &str, path: &Path) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    // Empty documents (a trailing `---`) are skipped, as kubectl skips them.
    super::yaml::for_each_document(text, |document, doc| collect(&doc, path, document, &mut objects))
        .map_err(|(document, source)| Error::Yaml { path: path.into(), document, source: Box::new(source) })?;
    Ok(objects)
}

/// `Kind namespace/name` as the manifest spells it, for warnings.
fn display_name(kind: &str, doc: &serde_json::Value) -> String {
    let meta = |field: &str| doc.get("metadata")?.get(field)?.as_str();
    let name = meta("name").unwrap_or("<unnamed>");
    match meta("namespace") {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Decodes one document (or `List` item) by its kind and projects it. A document that is not
/// a map has no kind, and is ignored as kinds that are not read are.
fn collect(doc: &serde_json::Value, path: &Path, document: usize, out: &mut Vec<Object>) {
    let text = |field: &str| doc.get(field).and_then(serde_json::Value::as_str).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let where_ = || format!("{}: document {document}", path.display());
    if kind == "List" || (kind.ends_with("List") && doc.get("items").is_some_and(|i| !i.is_null())) {
        match doc.get("items") {
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    collect(item, path, document, out);
                }
            }
            None | Some(serde_json::Value::Null) => {}
            Some(_) => tracing::warn!(
                object = %display_name(kind, doc), at = %where_(), reason = "items: not a sequence", "skipping list"
            ),
        }
        return;
    }
    // One line a kind: the type it decodes into and its projection.
    let projected = match (api_version, kind, mcs::manifest_kind(api_version, kind, doc)) {
        // ServiceImports and cluster-set EndpointSlices (`--multicluster-zone`), as the Kubernetes
        // source reads them: the cluster zone never sees a cluster-set EndpointSlice.
        (.., Some(kind)) => decode(kind, doc, |o| mcs::project(kind, o)),
        ("v1", "Service", _) => decode(Kind::Service, doc, |s| object::project_service(s).map(Object::Service)),
        ("discovery.k8s.io/v1", "EndpointSlice", _) => {
            decode(Kind::EndpointSlice, doc, |s| object::project_slice(s).map(Object::Slice))
        }
        ("v1", "Pod", _) => decode(Kind::Pod, doc, |p| object::project_pod(p).map(Object::Pod)),
        ("v1", "Namespace", _) => decode(Kind::Namespace, doc, |n| object::project_namespace(n).map(Object::Namespace)),
        (_, "Service" | "EndpointSlice" | "Pod" | "Namespace" | "ServiceImport", _) => {
            tracing::warn!(object = %display_name(kind, doc), %api_version, at = %where_(),
                "skipping object of an unsupported apiVersion");
            return;
        }
        _ => {
            tracing::debug!(object = %display_name(kind, doc), at = %where_(), "ignoring kind");
            return;
        }
    };
    match projected {
        Ok(obj) => out.push(obj),
        Err(error) => tracing::warn!(object = %error.what, at = %where_(), reason = %error.reason, "skipping object"),
    }
}

/// Decodes a document as `T` and projects it.
fn decode<T: DeserializeOwned>(
    kind: Kind,
    doc: &serde_json::Value,
    project: impl FnOnce(&mut T) -> std::result::Result<Object, object::ProjectError>,
) -> std::result::Result<Object, object::ProjectError> {
    object::project(kind, &mut Decoded::from_value(doc), project)
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
            let (fingerprint, objects) = read_file(&file, source.pods, &source.opts)?;
            source.files.insert(file, FileState::new(fingerprint, &objects));
            source.initial.extend(objects);
        }
        Ok(source)
    }

    /// The objects loaded and not yet sent.
    pub fn initial(&self) -> &[Object] {
        &self.initial
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
            match read_file(&path, self.pods, &self.opts) {
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
                    if let Ok((_, objects)) = read_file(path, self.pods, &self.opts) {
                        events.extend(objects.into_iter().filter(|o| o.object_ref() == what).map(Event::Apply));
                    }
                }
            }
        }
        events
    }
}

fn read_file(path: &Path, pods: bool, opts: &FileOptions) -> Result<(Fingerprint, Vec<Object>)> {
    let read_err = |source| Error::Read { path: path.into(), source };
    let fingerprint = fingerprint(path).map_err(read_err)?;
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let mut objects = parse_manifests(&text, path)?;
    if let Some(selector) = &opts.namespace_labels {
        selector.retain_selected(&mut objects, &text);
    }
    if !pods {
        objects.retain(|o| !matches!(o, Object::Pod(_)));
    }
    Ok((fingerprint, objects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::api::yaml_options;

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

    /// Plain scalars are read as YAML 1.2 (and serde_yaml, and Kubernetes' own JSON) read them:
    /// the YAML 1.1 booleans are names, not `false`, and a number where a string belongs is a
    /// wrong type, named by its path.
    #[test]
    fn yaml_1_1_booleans_are_strings_and_numbers_are_not() {
        let text = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: n}}
- {apiVersion: v1, kind: Service, metadata: {name: no, namespace: y}, spec: {clusterIP: None, ports: [{name: on, port: 80}]}}
- {apiVersion: v1, kind: Service, metadata: {name: off, namespace: y}, spec: {clusterIP: None, ports: [{name: 80, port: 80}]}}
"#;
        let objects = parse_manifests(text, Path::new("x.yaml")).unwrap();
        let names: Vec<String> = objects.iter().map(|o| o.object_ref().to_string()).collect();
        assert_eq!(names, ["Namespace n", "Service y/no"]);
        let Object::Service(svc) = &objects[1] else { panic!("{objects:?}") };
        assert_eq!(svc.ports[0].name.as_deref(), Some("on"));
        let mut bad = Decoded::<crate::cluster::api::Service>::from_value(
            &serde_saphyr::from_str_with_options("metadata: {name: off}\nspec: {ports: [{name: 80}]}", yaml_options())
                .unwrap(),
        );
        let err = object::project(Kind::Service, &mut bad, |s| object::project_service(s)).unwrap_err();
        assert_eq!(err.reason, "spec.ports[0].name: invalid type: integer `80`, expected a string");
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
