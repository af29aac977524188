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
//! stream backs off and retries, the last known records keep serving, and the outage is logged
//! once at warning level (each retry at debug).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::{Event, Scope, Sender, send};
use crate::cluster::api;
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
}

/// Builds a client from the options.
pub async fn client(opts: &KubeOptions) -> Result<Client, Error> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|source| Error::Kubeconfig { path: path.clone(), source })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig { path: path.clone(), source })?
        }
        None => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    tracing::info!(server = %config.cluster_url, "Kubernetes API");
    Client::try_from(config).map_err(Error::Client)
}

/// Runs every watcher until cancelled. Sends [`Event::Synced`] once each has listed once.
pub async fn run(client: Client, opts: KubeOptions, tx: Sender, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let namespaces: Vec<Option<String>> =
        if opts.namespaces.is_empty() { vec![None] } else { opts.namespaces.iter().cloned().map(Some).collect() };
    let labels = watcher::Config::default();
    let labels = match &opts.label_selector {
        Some(sel) => labels.labels(sel),
        None => labels,
    };
    let mut tasks: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
    let pending = Arc::new(AtomicUsize::new(0));
    let ctx = |kind: Kind, namespace: &Option<String>| Watch {
        kind,
        scope: Scope { kind, namespace: namespace.as_deref().map(Arc::from) },
        tx: tx.clone(),
        pending: pending.clone(),
        metrics: metrics.clone(),
        cancel: cancel.clone(),
    };
    for ns in &namespaces {
        let apis = |c: &Client| -> (Api<api::Service>, Api<api::EndpointSlice>, Api<api::Pod>) {
            match ns {
                Some(ns) => {
                    (Api::namespaced(c.clone(), ns), Api::namespaced(c.clone(), ns), Api::namespaced(c.clone(), ns))
                }
                None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone())),
            }
        };
        let (services, slices, pods) = apis(&client);
        tasks.push(Box::pin(
            ctx(Kind::Service, ns).run(services, labels.clone(), |s| object::project_service(s).map(Object::Service)),
        ));
        tasks.push(Box::pin(
            ctx(Kind::EndpointSlice, ns).run(slices, labels.clone(), |s| object::project_slice(s).map(Object::Slice)),
        ));
        if opts.pods {
            // Finished Pods no longer own their IPs; the API server filters them out for us
            // (an object leaving the selector is reported deleted).
            let cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
            tasks.push(Box::pin(ctx(Kind::Pod, ns).run(pods, cfg, |p| object::project_pod(p).map(Object::Pod))));
        }
        let namespaces: Api<api::Namespace> = Api::all(client.clone());
        let cfg = match ns {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        tasks.push(Box::pin(
            ctx(Kind::Namespace, ns).run(namespaces, cfg, |n| object::project_namespace(n).map(Object::Namespace)),
        ));
    }
    // Count the watchers before any runs, so the last to finish its first list sends Synced.
    pending.store(tasks.len(), Ordering::SeqCst);
    let tasks: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    for task in tasks {
        let _ = task.await;
    }
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

/// One watcher's context.
struct Watch {
    kind: Kind,
    scope: Scope,
    tx: Sender,
    /// Watchers that have not completed their first list yet.
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl Watch {
    async fn run<K, P>(self, api: Api<K>, cfg: watcher::Config, project: P)
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        P: Fn(&mut K) -> Result<Object, ProjectError>,
    {
        let label = KindLabel { kind: self.kind.as_str() };
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        let mut listed = false;
        let mut failing = false;
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = self.cancel.cancelled() => return,
            };
            let event = match next {
                None => return,
                Some(Err(error)) => {
                    self.metrics.watch_errors.get_or_create(&label).inc();
                    if !failing {
                        tracing::warn!(kind = %self.kind, %error, "watch failed; the last known records keep serving; retrying with backoff");
                        failing = true;
                    } else {
                        tracing::debug!(kind = %self.kind, %error, "watch retry failed");
                    }
                    continue;
                }
                Some(Ok(event)) => event,
            };
            if failing {
                tracing::info!(kind = %self.kind, "watch recovered");
                failing = false;
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
        obj: &mut K,
        project: &impl Fn(&mut K) -> Result<Object, ProjectError>,
        update: bool,
    ) -> Option<Event> {
        match project(obj) {
            Ok(o) => Some(Event::Apply(o)),
            Err(error) => {
                tracing::warn!(object = %self.object_ref(obj), %error, "skipping object");
                update.then(|| Event::Delete(self.object_ref(obj)))
            }
        }
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
