//! The Kubernetes source: list/watch through the API server with kube-rs.
//!
//! ```text
//!  Api<Service>        ─watcher─▶ ┐
//!  Api<EndpointSlice>  ─watcher─▶ ├─ project on ingest ─▶ Event ─▶ writer
//!  Api<Namespace>      ─watcher─▶ │  (API objects dropped)
//!  Api<Pod> (verified) ─watcher─▶ ┘
//! ```
//!
//! The watchers decode into the slim [`api`] types, not k8s-openapi's: only the fields the
//! projections read are built, and `managedFields`, other labels and annotations, and the
//! endpoints' topology are read past. An object with a field of the wrong type still decodes,
//! so it is skipped with a warning naming it instead of failing its whole list.
//!
//! One watcher per kind (and per `--namespace`). kube-runtime's watcher lists, then watches from
//! the list's resourceVersion, resumes after a dropped connection, and relists when the version
//! has expired (`410 Gone`). Its list streams page by page as `Init`, `InitApply`…, `InitDone`,
//! which map one to one onto [`Event::RelistStart`], [`Event::Apply`], [`Event::RelistDone`]: a
//! relist is applied as a difference and never holds a second copy of the cluster
//! (kubernetes/kubernetes#139117: CoreDNS OOMs on API-server restarts at 5,000 nodes).
//!
//! Watch errors are retryable ("make sure backoff is applied", kube-runtime's watcher docs): the
//! last known records keep serving while the watcher retries on the schedule of [`reconnect`]
//! (never more than half a second apart, a `410 Gone` relisted at once), and each outage is logged
//! as one warning naming the failing watches, then one "watch recovered" line per watch.
//!
//! [`reconnect`]: super::reconnect

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::reconnect::{Answered, Outage, Retry};
use super::{Event, Scope, Sender, send};
use crate::cluster::api::{self, Decoded};
use crate::cluster::mcs;
use crate::cluster::object::{self, Kind, ObjKey, Object, ObjectRef, ProjectError};
use crate::metrics::{KindLabel, Metrics};

/// Why the Kubernetes client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--kubeconfig` could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster environment was found.
    #[error("no Kubernetes configuration: {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    /// `--kubeconfig`: a kubeconfig file; otherwise `KUBECONFIG`, `~/.kube/config`, then the
    /// in-cluster service account (kube-rs's `Config::infer`).
    pub kubeconfig: Option<PathBuf>,
    /// `--namespace`: only these namespaces (all when empty), as CoreDNS's `namespaces`.
    pub namespaces: Vec<String>,
    /// `--label-selector`: only Services and EndpointSlices matching it, as CoreDNS's `labels`.
    pub label_selector: Option<String>,
    /// Whether Pods are watched (`--pods verified`).
    pub pods: bool,
    /// `--namespace-labels`: only Namespaces matching it (the API server filters the watch).
    pub namespace_labels: Option<String>,
    /// Whether ServiceImports and cluster-set EndpointSlices are watched (`--multicluster-zone`).
    pub clusterset: bool,
    /// `--no-endpoints`: the cluster's own EndpointSlices are not listed or watched at all (as
    /// CoreDNS's `noendpoints`), since no record is built from them.
    pub no_endpoints: bool,
}

/// Where the API server is and how to authenticate: each watcher builds its own client from it,
/// so that a successful answer to one watcher's request tells that watcher it got through
/// ([`Answered`]).
#[derive(Clone)]
pub struct Connection {
    config: Box<kube::Config>,
}

impl Connection {
    /// A client of its own, and the count of its successful answers.
    fn client(&self) -> Result<(Client, watch::Receiver<u64>), Error> {
        let (answered, count) = Answered::new();
        let builder =
            kube::client::ClientBuilder::try_from(kube::Config::clone(&self.config)).map_err(Error::Client)?;
        Ok((builder.with_layer(&answered).build(), count))
    }
}

/// Reads the configuration the options name and checks that a client can be built from it.
pub async fn connect(opts: &KubeOptions) -> Result<Connection, Error> {
    let mut config = match &opts.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|source| Error::Kubeconfig { path: path.clone(), source })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig { path: path.clone(), source })?
        }
        None => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    // The watchers retry on their own schedule (super::reconnect). kube's request-level retry of
    // 429/503/504 would hide an outage inside one request for minutes (15 attempts, doubling from
    // 5 ms), past that schedule.
    config.default_retry = false;
    tracing::info!(server = %config.cluster_url, "Kubernetes API");
    kube::client::ClientBuilder::try_from(config.clone()).map_err(Error::Client)?;
    Ok(Connection { config: Box::new(config) })
}

/// Runs every watcher until cancelled. Sends [`Event::Synced`] once each has listed once.
pub async fn run(conn: Connection, opts: KubeOptions, tx: Sender, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let namespaces: Vec<Option<&str>> = if opts.namespaces.is_empty() {
        vec![None]
    } else {
        opts.namespaces.iter().map(|ns| Some(ns.as_str())).collect()
    };
    let labels = watcher::Config::default();
    let labels = match &opts.label_selector {
        Some(sel) => labels.labels(sel),
        None => labels,
    };
    let watches = namespaces.len()
        * (2 + usize::from(!opts.no_endpoints) + usize::from(opts.pods) + 2 * usize::from(opts.clusterset));
    // The last watcher to finish its first list sends Synced.
    let pending = Arc::new(AtomicUsize::new(watches));
    let outage = Outage::new();
    let watch = |kind: Kind, namespace: Option<&str>| -> Result<(Watch, Client), Error> {
        let (client, answered) = conn.client()?;
        let name = match namespace {
            Some(ns) if kind != Kind::Namespace => format!("{kind} in {ns}"),
            Some(ns) => format!("{kind} {ns}"),
            None => kind.to_string(),
        };
        let watch = Watch {
            kind,
            name,
            scope: Scope { kind, namespace: namespace.map(Arc::from) },
            tx: tx.clone(),
            pending: pending.clone(),
            metrics: metrics.clone(),
            answered,
            outage: outage.clone(),
            cancel: cancel.clone(),
        };
        Ok((watch, client))
    };
    let mut tasks: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
    let built = namespaces.iter().try_for_each(|&ns| -> Result<(), Error> {
        let (w, client) = watch(Kind::Service, ns)?;
        tasks.push(Box::pin(
            w.run(scoped(client, ns), labels.clone(), |s| object::project_service(s).map(Object::Service)),
        ));
        if !opts.no_endpoints {
            // The cluster-set EndpointSlices are the cluster-set zone's (their own watch below).
            let slice_labels = match &opts.label_selector {
                Some(sel) => format!("!{},{sel}", mcs::IMPORT_NAME_LABEL),
                None => format!("!{}", mcs::IMPORT_NAME_LABEL),
            };
            let (w, client) = watch(Kind::EndpointSlice, ns)?;
            let cfg = watcher::Config::default().labels(&slice_labels);
            tasks.push(Box::pin(w.run(scoped(client, ns), cfg, |s| object::project_slice(s).map(Object::Slice))));
        }
        if opts.clusterset {
            let slices = ApiResource::erase::<discovery::EndpointSlice>(&());
            let cfg = watcher::Config::default().labels(mcs::IMPORT_NAME_LABEL);
            let (w, client) = watch(Kind::ClusterSetSlice, ns)?;
            tasks.push(Box::pin(w.run(dynamic(client, ns, &slices), cfg, |o: &mut DynamicObject| {
                mcs::project_cluster_slice(&o.metadata, &o.data).map(Object::ClusterSetSlice)
            })));
            let (w, client) = watch(Kind::ServiceImport, ns)?;
            tasks.push(Box::pin(w.run_imports(client, ns.map(String::from))));
        }
        if opts.pods {
            // Finished Pods no longer own their IPs; the API server filters them out for us
            // (an object leaving the selector is reported deleted).
            let cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
            let (w, client) = watch(Kind::Pod, ns)?;
            tasks.push(Box::pin(w.run(scoped(client, ns), cfg, |p| object::project_pod(p).map(Object::Pod))));
        }
        let cfg = match ns {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        let cfg = match &opts.namespace_labels {
            Some(selector) => cfg.labels(selector),
            None => cfg,
        };
        let (w, client) = watch(Kind::Namespace, ns)?;
        tasks.push(Box::pin(w.run(Api::all(client), cfg, |n| object::project_namespace(n).map(Object::Namespace))));
        Ok(())
    });
    if let Err(error) = built {
        tracing::error!(%error, "cannot start the Kubernetes watchers");
        return;
    }
    let reporter = tokio::spawn(outage.report(cancel.clone()));
    let tasks: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    for task in tasks {
        let _ = task.await;
    }
    reporter.abort();
}

/// A namespaced kind's objects in one namespace, or in all.
fn scoped<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// A custom resource's (or any kind's, as JSON) objects in one namespace, or in all; each object
/// decoded on its own, as the other kinds' are.
fn dynamic(client: Client, namespace: Option<&str>, resource: &ApiResource) -> Api<Decoded<DynamicObject>> {
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, resource),
        None => Api::all_with(client, resource),
    }
}

/// How often a cluster without the ServiceImport CRD (or without the right to read it) is asked
/// again, so that installing it later needs no restart.
const CRD_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Which ServiceImport version the API server serves: the first of [`mcs::VERSIONS`] whose list
/// answers. `Ok(Err(why))`: none is installed (404), or listing them is forbidden (403).
async fn import_resource(client: &Client, namespace: Option<&str>) -> Result<Result<ApiResource, String>, kube::Error> {
    for version in mcs::VERSIONS {
        let gvk = kube::api::GroupVersionKind::gvk(mcs::GROUP, version, "ServiceImport");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "serviceimports");
        match dynamic(client.clone(), namespace, &resource).list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Ok(resource)),
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Ok(Err(format!(
                    "not allowed to list them ({}): grant get, list and watch on serviceimports.{}",
                    status.message,
                    mcs::GROUP
                )));
            }
            Err(error) => return Err(error),
        }
    }
    let versions = mcs::VERSIONS.map(|v| format!("{}/{v}", mcs::GROUP)).join(", ");
    Ok(Err(format!("the ServiceImport CRD is not installed (neither {versions} is served)")))
}

/// Lets kube's watcher list and watch the slim [`api`] types: the same resource as the
/// k8s-openapi type (its names are taken from there, so they cannot drift), decoded into fewer
/// fields. The watcher reads `meta()` for the resourceVersion it resumes from.
macro_rules! resource {
    ($slim:ty, $full:ty) => {
        impl Resource for $slim {
            type DynamicType = ();
            type Scope = <$full as k8s_openapi::Resource>::Scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full as k8s_openapi::Resource>::KIND)
            }

            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full as k8s_openapi::Resource>::GROUP)
            }

            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full as k8s_openapi::Resource>::VERSION)
            }

            fn api_version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full as k8s_openapi::Resource>::API_VERSION)
            }

            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full as k8s_openapi::Resource>::URL_PATH_SEGMENT)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata.object
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata.object
            }
        }
    };
}

resource!(api::Service, core::Service);
resource!(api::EndpointSlice, discovery::EndpointSlice);
resource!(api::Pod, core::Pod);
resource!(api::Namespace, core::Namespace);

/// What kube's watcher lists and watches: each object decoded on its own (see
/// [`api::Decoded`]), so one that does not decode fails only itself, not its list or watch. Of a
/// slim type, or of a `DynamicObject` (ServiceImports and cluster-set EndpointSlices, whose
/// resource is known at run time).
impl<K: Resource> Resource for Decoded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &K::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &K::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &K::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &K::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &K::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Decoded::Ok(object) => object.meta(),
            Decoded::Invalid(invalid) => &invalid.meta,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Decoded::Ok(object) => object.meta_mut(),
            Decoded::Invalid(invalid) => &mut invalid.meta,
        }
    }
}

/// One watcher's context.
struct Watch {
    kind: Kind,
    /// For the log: the kind, and the namespace when one is watched alone.
    name: String,
    scope: Scope,
    tx: Sender,
    /// Watchers that have not completed their first list yet.
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    /// Counts the API server's successful answers to this watcher's client.
    answered: watch::Receiver<u64>,
    outage: Arc<Outage>,
    cancel: CancellationToken,
}

impl Watch {
    /// Watches ServiceImports in the version the API server serves (v1beta1, else v1alpha1). A
    /// cluster without the CRD gets one warning, and this watch counts as listed (empty), so the
    /// cluster zones are served; the API server is asked again every [`CRD_RECHECK`].
    async fn run_imports(mut self, client: Client, namespace: Option<String>) {
        let mut retry = Retry::default();
        let mut missing = false;
        loop {
            let wait = match import_resource(&client, namespace.as_deref()).await {
                Ok(Ok(resource)) => {
                    tracing::info!(version = %resource.version, watch = %self.name, "watching ServiceImports");
                    let api = dynamic(client, namespace.as_deref(), &resource);
                    let project = |o: &mut DynamicObject| mcs::project_import(&o.metadata, &o.data).map(Object::Import);
                    return self.run(api, watcher::Config::default(), project).await;
                }
                Ok(Err(reason)) => {
                    if !missing {
                        missing = true;
                        tracing::warn!(%reason, recheck = ?CRD_RECHECK,
                            "cannot watch ServiceImports: the cluster-set zone serves none; the cluster zones are not affected");
                        // Counted once: a list after the CRD appears must not count again.
                        let last = self.pending.fetch_sub(1, Ordering::SeqCst) == 1;
                        self.pending = Arc::new(AtomicUsize::new(0));
                        if last && !send(&self.tx, Event::Synced).await {
                            return;
                        }
                    }
                    CRD_RECHECK
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot tell whether the ServiceImport CRD is installed; retrying");
                    retry.next_delay()
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => return,
            }
        }
    }

    async fn run<K, P>(mut self, api: Api<Decoded<K>>, cfg: watcher::Config, project: P)
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        P: Fn(&mut K) -> Result<Object, ProjectError>,
    {
        let label = KindLabel { kind: self.kind.as_str() };
        let mut stream = watcher(api.clone(), cfg.clone()).boxed();
        let mut retry = Retry::default();
        let mut listed = false;
        let mut failing = false;
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                // A quiet kind may have no event to deliver once its watch is back: the answer
                // to the watch request itself says so.
                Ok(()) = self.answered.changed(), if failing => {
                    failing = false;
                    retry.reset();
                    self.outage.recovered(&self.name);
                    continue;
                }
                _ = self.cancel.cancelled() => return,
            };
            let event = match next {
                None => return,
                Some(Err(error)) => {
                    self.metrics.watch_errors.get_or_create(&label).inc();
                    match gone(&error) {
                        // The version is gone, not the server: relist now.
                        Some(reset_by_watcher) => {
                            tracing::debug!(watch = %self.name, %error, "resource version expired; relisting");
                            if !reset_by_watcher {
                                stream = watcher(api.clone(), cfg.clone()).boxed();
                            }
                        }
                        None => {
                            if !failing {
                                failing = true;
                                self.answered.borrow_and_update();
                                self.outage.failed(&self.name, &error);
                            } else {
                                tracing::debug!(watch = %self.name, %error, "watch retry failed");
                            }
                            let wait = retry.next_delay();
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = self.cancel.cancelled() => return,
                            }
                        }
                    }
                    continue;
                }
                Some(Ok(event)) => event,
            };
            retry.reset();
            if failing {
                failing = false;
                self.outage.recovered(&self.name);
            }
            let (out, done) = match event {
                watcher::Event::Init => {
                    self.metrics.relists.get_or_create(&label).inc();
                    (Some(Event::RelistStart(self.scope.clone())), false)
                }
                watcher::Event::InitApply(mut obj) => (self.project(&mut obj, &project, false), false),
                watcher::Event::Apply(mut obj) => (self.project(&mut obj, &project, true), false),
                watcher::Event::Delete(obj) => (Some(Event::Delete(self.object_ref(&obj))), false),
                watcher::Event::InitDone => (Some(Event::RelistDone(self.scope.clone())), true),
            };
            if let Some(out) = out
                && !send(&self.tx, out).await
            {
                return;
            }
            if done && !listed {
                listed = true;
                if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 && !send(&self.tx, Event::Synced).await {
                    return;
                }
            }
        }
    }

    fn object_ref<K: Resource>(&self, obj: &K) -> ObjectRef {
        let ns = if self.kind == Kind::Namespace { String::new() } else { obj.namespace().unwrap_or_default() };
        let key = match self.kind {
            Kind::Namespace => ObjKey::new("", obj.name_any()),
            _ => ObjKey::new(ns, obj.name_any()),
        };
        ObjectRef { kind: self.kind, key }
    }

    /// Projects an object (which may move fields out of it, but leaves its metadata). One that
    /// cannot be used is skipped with a warning naming it; if it replaced a usable version, that
    /// version is deleted (as a relist would drop it).
    fn project<K: Resource>(
        &self,
        obj: &mut Decoded<K>,
        project: &impl Fn(&mut K) -> Result<Object, ProjectError>,
        update: bool,
    ) -> Option<Event> {
        match object::project(self.kind, obj, project) {
            Ok(o) => Some(Event::Apply(o)),
            Err(error) => {
                tracing::warn!(object = %self.object_ref(obj), %error, "skipping object");
                update.then(|| Event::Delete(self.object_ref(obj)))
            }
        }
    }
}

/// Whether a watch error is `410 Gone` (the resource version was compacted away, as after an API
/// server restart), and if so whether the watcher already went back to a fresh list by itself
/// (it does for a 410 inside the watch stream, not for one answering the request that starts it).
fn gone(error: &watcher::Error) -> Option<bool> {
    let is_gone = |e: &kube::Error| matches!(e, kube::Error::Api(status) if status.code == 410);
    match error {
        watcher::Error::WatchError(status) => (status.code == 410).then_some(true),
        watcher::Error::InitialListFailed(e) => is_gone(e).then_some(true),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => is_gone(e).then_some(false),
        watcher::Error::NoResourceVersion => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slim types list and watch the same API resources as k8s-openapi's.
    #[test]
    fn slim_types_name_the_same_resources() {
        fn same<S: Resource<DynamicType = ()>, F: Resource<DynamicType = ()>>() {
            for ns in [None, Some("ns-0")] {
                assert_eq!(S::url_path(&(), ns), F::url_path(&(), ns));
            }
            assert_eq!(S::kind(&()), F::kind(&()));
            assert_eq!(S::api_version(&()), F::api_version(&()));
        }
        same::<api::Service, core::Service>();
        same::<api::EndpointSlice, discovery::EndpointSlice>();
        same::<api::Pod, core::Pod>();
        same::<api::Namespace, core::Namespace>();
        assert_eq!(
            api::EndpointSlice::url_path(&(), Some("ns-0")),
            "/apis/discovery.k8s.io/v1/namespaces/ns-0/endpointslices"
        );
    }
}
