//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager
//! (Kubernetes 1.28), started from the binaries in the directory `$KUBEBUILDER_ASSETS` names
//! (controller-runtime's envtest convention; `.ci/run` unpacks them), all on loopback.
//!
//! ```text
//!   test ── admin kubeconfig ──▶ kube-apiserver ──▶ etcd
//!                                     ▲
//!   kube-controller-manager ──────────┘  (StatefulSet, EndpointSlice, ServiceAccount, … controllers)
//!   the test ── bind + status ──▶ Pods   (stands in for the scheduler and the kubelet)
//! ```
//!
//! Each [`ControlPlane`] has its own temporary directory (certificates, keys, kubeconfigs, etcd
//! data, logs) and its own free loopback ports, so tests run in parallel. Every process runs in
//! its own process group, which `Drop` kills: nothing is left behind. The flags and
//! certificates are those of `shared/envtest/README.md`.
//!
//! Self-contained (it uses no other `support` module), so a bench can include it with
//! `#[path = "../tests/support/envtest.rs"] mod envtest;`.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a component may take to become ready on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the control plane; [`Options::default`] is what [`ControlPlane::start`] uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// kube-apiserver's watch cache (`--watch-cache`), on by default as in real clusters. It
    /// serves watches from memory, which etcd's compaction does not touch: turn it off to make
    /// [`ControlPlane::compact_etcd`] alone send `410 Gone` to a watch from an older
    /// resourceVersion. With it on, an API server restart does that by itself (the cache starts
    /// again at etcd's current revision), compaction or not.
    pub watch_cache: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { watch_cache: true }
    }
}

/// A running etcd + kube-apiserver + kube-controller-manager.
pub struct ControlPlane {
    name: String,
    options: Options,
    assets: PathBuf,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    etcd: Child,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
    etcd_port: u16,
    etcd_peer_port: u16,
    apiserver_port: u16,
    controller_manager_port: u16,
}

// === impl ControlPlane ===

impl ControlPlane {
    /// Starts a control plane, named `name` in logs and directory names. `None` after printing
    /// "SKIPPED: <why>" when `KUBEBUILDER_ASSETS` is unset and `CI` is unset; panics when `CI` is
    /// set and it cannot start.
    pub async fn start(name: &str) -> Option<ControlPlane> {
        Self::start_with(name, Options::default()).await
    }

    /// [`ControlPlane::start`] with other [`Options`].
    pub async fn start_with(name: &str, options: Options) -> Option<ControlPlane> {
        let ci = std::env::var_os("CI").is_some();
        let assets = match std::env::var_os("KUBEBUILDER_ASSETS") {
            Some(dir) => PathBuf::from(dir),
            None if ci => panic!("KUBEBUILDER_ASSETS is required in CI (.ci/run sets it)"),
            None => {
                eprintln!(
                    "SKIPPED: KUBEBUILDER_ASSETS is unset (a directory with etcd, kube-apiserver and \
                     kube-controller-manager; see .ci/run)"
                );
                return None;
            }
        };
        for bin in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            let path = assets.join(bin);
            assert!(path.is_file(), "{} is missing (KUBEBUILDER_ASSETS={})", path.display(), assets.display());
        }
        if !tool_exists("openssl") {
            assert!(!ci, "openssl is required in CI (install it: see .ci/run)");
            eprintln!("SKIPPED: openssl is not installed (it makes the control plane's certificates)");
            return None;
        }
        let started = Instant::now();
        let dir =
            tempfile::Builder::new().prefix(&format!("envtest-{name}-")).tempdir().expect("a temporary directory");
        write_pki(dir.path());
        let [etcd_port, etcd_peer_port, apiserver_port, controller_manager_port] = free_ports();
        let kubeconfig = dir.path().join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, apiserver_port, dir.path(), "admin");
        write_kubeconfig(&dir.path().join("kcm.kubeconfig"), apiserver_port, dir.path(), "controller-manager");

        let etcd = spawn(
            &assets.join("etcd"),
            &etcd_args(dir.path(), etcd_port, etcd_peer_port),
            &dir.path().join("etcd.log"),
        );
        let mut plane = ControlPlane {
            name: name.to_string(),
            options,
            assets,
            kubeconfig,
            etcd,
            apiserver: None,
            controller_manager: None,
            etcd_port,
            etcd_peer_port,
            apiserver_port,
            controller_manager_port,
            dir,
        };
        plane.wait_etcd().await;
        plane.start_apiserver().await;
        let kcm_args = controller_manager_args(plane.dir.path(), controller_manager_port);
        plane.controller_manager = Some(spawn(
            &plane.assets.join("kube-controller-manager"),
            &kcm_args,
            &plane.dir.path().join("kube-controller-manager.log"),
        ));
        plane.wait_controller_manager().await;
        eprintln!(
            "[envtest {name}] control plane ready in {:?} (API server 127.0.0.1:{apiserver_port})",
            started.elapsed()
        );
        Some(plane)
    }

    /// The admin kubeconfig (user `kubernetes-admin` in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The temporary directory holding the certificates, kubeconfigs, etcd data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The API server's address, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    pub fn apiserver_port(&self) -> u16 {
        self.apiserver_port
    }

    /// An admin client.
    pub async fn client(&self) -> kube::Client {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Stops kube-apiserver only (SIGTERM, then SIGKILL after 10 s); etcd keeps the data.
    pub async fn stop_apiserver(&mut self) {
        if let Some(child) = self.apiserver.take() {
            stop_process(child).await;
        }
    }

    /// Starts kube-apiserver on the same port with the same flags; returns when `/readyz` is ok.
    pub async fn start_apiserver(&mut self) {
        assert!(self.apiserver.is_none(), "the API server is already running");
        let mut args = apiserver_args(self.dir.path(), self.etcd_port, self.apiserver_port);
        args.push(format!("--watch-cache={}", self.options.watch_cache));
        let log = self.dir.path().join("kube-apiserver.log");
        self.apiserver = Some(spawn(&self.assets.join("kube-apiserver"), &args, &log));
        let client = self.client().await;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let req = axum::http::Request::get("/readyz").body(Vec::new()).unwrap();
            if matches!(client.request_text(req).await.as_deref(), Ok("ok")) {
                return;
            }
            self.check_running();
            assert!(Instant::now() < deadline, "kube-apiserver not ready in {START_TIMEOUT:?}: {}", log_tail(&log));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Compacts etcd at its current revision R, so a watch from an older resourceVersion v that
    /// reaches etcd gets `410 Gone`. A watch from v starts at v + 1, so v must be R - 2 or older:
    /// at least two writes after it. Watches reach etcd when the watch cache is off
    /// ([`Options::watch_cache`]); with it on (the default), only after an API server restart,
    /// which alone already answers 410 to versions older than its start. Through etcd's v3
    /// HTTP/JSON gateway: the revision from the header of a `POST /v3/kv/range`, then
    /// `POST /v3/kv/compaction`.
    pub async fn compact_etcd(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.etcd_port));
        // Any key: only the response header (the store's current revision) is read. "AA==" is "\0".
        let (status, body) = http_request(addr, "POST", "/v3/kv/range", r#"{"key":"AA==","limit":1}"#).await;
        assert_eq!(status, 200, "etcd range: {body}");
        let range: serde_json::Value = serde_json::from_str(&body).expect("etcd range JSON");
        // int64 fields are strings in the gateway's JSON.
        let revision = range["header"]["revision"].as_str().expect("a revision in the header");
        let compaction = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let (status, body) = http_request(addr, "POST", "/v3/kv/compaction", &compaction).await;
        assert_eq!(status, 200, "etcd compaction at {revision}: {body}");
    }

    /// Creates a Node with only a name: enough for the EndpointSlice controller to list the
    /// Pods bound to it (no kubelet heartbeats; the node-lifecycle controller is off).
    pub async fn create_node(&self, name: &str) {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": { "name": name },
        }))
        .unwrap();
        Api::<Node>::all(self.client().await).create(&PostParams::default(), &node).await.expect("create node");
    }

    /// Stands in for the scheduler and the kubelet: waits for the Pod to exist, binds it to
    /// `node` (unless it is bound), then sets it Running and Ready with `ip` (status subresource).
    pub async fn run_pod(&self, namespace: &str, pod: &str, node: &str, ip: IpAddr) {
        self.bind_pod(namespace, pod, node).await;
        self.set_pod_status(namespace, pod, ip, true).await;
    }

    /// Waits (up to 30 s) for the Pod to exist, and binds it to `node` unless it is bound.
    pub async fn bind_pod(&self, namespace: &str, pod: &str, node: &str) {
        let pods = Api::<Pod>::namespaced(self.client().await, namespace);
        let current = wait_for(&format!("Pod {namespace}/{pod} to exist"), Duration::from_secs(30), || async {
            pods.get_opt(pod).await.ok().flatten().filter(|p| p.metadata.deletion_timestamp.is_none())
        })
        .await;
        if current.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            return;
        }
        let binding = serde_json::json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": { "name": pod, "namespace": namespace },
            "target": { "apiVersion": "v1", "kind": "Node", "name": node },
        });
        let _: serde_json::Value =
            pods.create_subresource("binding", pod, &PostParams::default(), &binding).await.expect("bind pod");
    }

    /// Sets the Pod Running with `ip`, its Ready condition True or False (as the kubelet does,
    /// with the transition time now). The EndpointSlice controller reads only the condition.
    pub async fn set_pod_status(&self, namespace: &str, pod: &str, ip: IpAddr, ready: bool) {
        let pods = Api::<Pod>::namespaced(self.client().await, namespace);
        let now = k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap();
        // A merge patch replaces lists whole, so podIPs and the conditions are exactly these.
        let status = serde_json::json!({ "status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{ "ip": ip.to_string() }],
            "conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": now.to_string(),
            }],
        }});
        pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&status)).await.expect("patch pod status");
    }

    /// Deletes a Pod at once (`--grace-period=0 --force`), as a kubelet finishes a termination.
    pub async fn force_delete_pod(&self, namespace: &str, pod: &str) {
        let pods = Api::<Pod>::namespaced(self.client().await, namespace);
        let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        match pods.delete(pod, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => panic!("delete pod {namespace}/{pod}: {e}"),
        }
    }

    /// Applies every document of a multi-document YAML (server-side apply, field manager
    /// `envtest`, strict field validation); with `dry_run`, nothing is stored (`?dryRun=All`).
    /// Returns the applied objects as the API server returned them.
    pub async fn apply_yaml(&self, yaml: &str, dry_run: bool) -> Result<Vec<DynamicObject>, kube::Error> {
        let client = self.client().await;
        let mut applied = Vec::new();
        for doc in serde_saphyr::read::<_, serde_json::Value>(&mut yaml.as_bytes()) {
            let value = doc.expect("a YAML document");
            applied.push(apply_value(&client, value, dry_run).await?);
        }
        Ok(applied)
    }

    /// Mints a token for the ServiceAccount `namespace/name` (TokenRequest, valid for an hour),
    /// as the kubelet does for a Pod that runs as it.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let request = TokenRequest {
            spec: TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() },
            ..TokenRequest::default()
        };
        let minted = Api::<ServiceAccount>::namespaced(self.client().await, namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("token request for {namespace}/{name}: {e}"));
        minted.status.expect("a token in the status").token
    }

    /// A kubeconfig (in [`ControlPlane::dir`]) that authenticates as the ServiceAccount
    /// `namespace/name` with a token minted for it: exactly what that account's RBAC allows.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.service_account_token(namespace, name).await;
        let path = self.dir.path().join(format!("sa-{namespace}-{name}.kubeconfig"));
        write_token_kubeconfig(&path, &self.server_url(), &self.ca_file(), &token);
        path
    }

    /// The last lines of a component's log (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_tail(&self, component: &str) -> String {
        log_tail(&self.dir.path().join(format!("{component}.log")))
    }

    async fn wait_etcd(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.etcd_port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, body)) =
                tokio::time::timeout(Duration::from_secs(2), try_http_request(addr, "GET", "/health", ""))
                    .await
                    .unwrap_or(Err(()))
                && body.contains(r#""health":"true""#)
            {
                return;
            }
            self.check_running();
            assert!(Instant::now() < deadline, "etcd not ready in {START_TIMEOUT:?}: {}", self.log_tail("etcd"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ready once its ServiceAccount controller has created `default/default`: the controllers
    /// are running, not only its health endpoint.
    async fn wait_controller_manager(&mut self) {
        let accounts = Api::<ServiceAccount>::namespaced(self.client().await, "default");
        let deadline = Instant::now() + START_TIMEOUT;
        while !matches!(accounts.get_opt("default").await, Ok(Some(_))) {
            self.check_running();
            assert!(
                Instant::now() < deadline,
                "kube-controller-manager not ready in {START_TIMEOUT:?}: {}",
                self.log_tail("kube-controller-manager")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Panics with the component's log when a process has exited.
    fn check_running(&mut self) {
        let name = self.name.clone();
        let mut procs: Vec<(&str, &mut Child)> = vec![("etcd", &mut self.etcd)];
        if let Some(api) = self.apiserver.as_mut() {
            procs.push(("kube-apiserver", api));
        }
        if let Some(kcm) = self.controller_manager.as_mut() {
            procs.push(("kube-controller-manager", kcm));
        }
        for (component, child) in procs {
            if let Ok(Some(status)) = child.try_wait() {
                let log = log_tail(&self.dir.path().join(format!("{component}.log")));
                panic!("[envtest {name}] {component} exited ({status}): {log}");
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Controllers first, then the API server, then its store; each whole process group.
        for child in [self.controller_manager.as_mut(), self.apiserver.as_mut()].into_iter().flatten() {
            kill_group(child);
        }
        kill_group(&mut self.etcd);
        if std::thread::panicking() {
            for component in ["etcd", "kube-apiserver", "kube-controller-manager"] {
                eprintln!("[envtest {}] {component} log:\n{}", self.name, self.log_tail(component));
            }
        }
    }
}

/// An admin-style client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(config).expect("client builds")
}

/// Writes a kubeconfig for `server_url` that authenticates with a bearer `token` (a
/// ServiceAccount's, from a TokenRequest).
pub fn write_token_kubeconfig(path: &Path, server_url: &str, ca_file: &Path, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: envtest\n  cluster:\n    server: {server_url}\n    certificate-authority: {ca}\n\
         users:\n- name: token\n  user:\n    token: {token}\n\
         contexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: token\n\
         current-context: envtest\n",
        ca = ca_file.display(),
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

/// Polls `check` every 50 ms until it yields a value; panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === applying YAML ===

/// Server-side applies one object, finding its resource (and scope) by discovery.
pub async fn apply_value(
    client: &kube::Client,
    value: serde_json::Value,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(value).expect("a Kubernetes object");
    let types = obj.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("a valid apiVersion");
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let name = obj.metadata.name.clone().expect("a name");
    let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
        (Scope::Namespaced, ns) => Api::namespaced_with(client.clone(), ns.unwrap_or("default"), &resource),
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply("envtest").force().validation_strict();
    params.dry_run = dry_run;
    api.patch(&name, &params, &Patch::Apply(&obj)).await
}

// === processes ===

fn etcd_args(dir: &Path, port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    vec![
        "--name=local".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=local={peer}"),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(dir: &Path, etcd_port: u16, port: u16) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", file("apiserver.crt")),
        format!("--tls-private-key-file={}", file("apiserver.key")),
        format!("--client-ca-file={}", file("ca.crt")),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", file("sa.pub")),
        format!("--service-account-signing-key-file={}", file("sa.key")),
        "--service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/112".into(),
        // As envtest: otherwise Pods are rejected until a "default" ServiceAccount exists.
        "--disable-admission-plugins=ServiceAccount".into(),
        // Otherwise it publishes 127.0.0.1 for Service `kubernetes`, which validation rejects.
        "--endpoint-reconciler-type=none".into(),
    ]
}

fn controller_manager_args(dir: &Path, port: u16) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        format!("--kubeconfig={}", file("kcm.kubeconfig")),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=false".into(),
        format!("--root-ca-file={}", file("ca.crt")),
        // No kubelet heartbeats: node-lifecycle would taint every Node unreachable after 60 s.
        "--controllers=*,-node-lifecycle-controller,-service-ca-certificate-publisher-controller".into(),
        format!("--service-account-private-key-file={}", file("sa.key")),
    ]
}

/// Starts `bin` in a process group of its own, output to `log`, without `ETCD_*` variables
/// (etcd reads them as flags). The process gets SIGKILL when the test process dies, even killed
/// or with a `ControlPlane` that is never dropped (one kept in a `static` for a whole test file).
fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).expect("create log file");
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).process_group(0);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(key);
        }
    }
    // SAFETY: the closure runs in the child between fork and exec; it only calls prctl(2), which
    // is async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply, child) = mpsc::channel();
    spawner().send((cmd, reply)).expect("the spawner thread runs");
    child.recv().expect("the spawner replies").unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()))
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The thread that forks every control-plane process. PR_SET_PDEATHSIG fires when the *thread*
/// that forked the child exits, not the process: forked from a test's runtime thread, etcd
/// would die when that runtime ends. This thread waits on a channel whose sender lives in a
/// static, so it ends only with the process.
fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("envtest-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in queue {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the spawner thread");
        jobs
    })
}

/// SIGTERM to the process group, SIGKILL after 10 s; waits for the process.
async fn stop_process(mut child: Child) {
    signal_group(&child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            signal_group(&child, libc::SIGKILL);
            let _ = child.wait();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILL to the whole process group, then reaps the leader.
fn kill_group(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        signal_group(child, libc::SIGKILL);
        let _ = child.wait();
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals the process group whose leader we spawned with
    // `process_group(0)` and have not reaped yet, so the id cannot name another group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn tool_exists(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Four distinct free loopback ports (bound and released: a small race with other processes,
/// acceptable for tests).
fn free_ports() -> [u16; 4] {
    let listeners: Vec<TcpListener> = (0..4).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    [ports[0], ports[1], ports[2], ports[3]]
}

// === certificates ===

/// The CA, the API server's serving certificate, the admin and controller-manager client
/// certificates and the ServiceAccount key pair, with the openssl CLI.
fn write_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=test-ca",
    ]);
    let leaf = |name: &str, subject: &str, eku: &str, sans: Option<&str>| {
        let mut ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={eku}\n"
        );
        if let Some(sans) = sans {
            ext.push_str(&format!("subjectAltName={sans}\n"));
        }
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, crt, extfile) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        openssl(&["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "3650",
            "-extfile",
            &extfile,
        ]);
    };
    leaf(
        "apiserver",
        "/CN=kube-apiserver",
        "serverAuth",
        Some(
            "IP:127.0.0.1,IP:::1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
             DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
        ),
    );
    leaf("admin", "/O=system:masters/CN=kubernetes-admin", "clientAuth", None);
    leaf("controller-manager", "/O=system:masters/CN=system:kube-controller-manager", "clientAuth", None);
    openssl(&["genrsa", "-out", "sa.key", "2048"]);
    openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

/// A kubeconfig for the API server with the client certificate `<user>.crt`/`.key` of `dir`.
fn write_kubeconfig(path: &Path, apiserver_port: u16, dir: &Path, user: &str) {
    let file = |name: &str| dir.join(name).display().to_string();
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{apiserver_port}\n    certificate-authority: {ca}\n\
         users:\n- name: {user}\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
         contexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: {user}\n\
         current-context: envtest\n",
        ca = file("ca.crt"),
        crt = file(&format!("{user}.crt")),
        key = file(&format!("{user}.key")),
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

// === plain HTTP (etcd) ===

/// One HTTP/1.0 request on loopback: (status, body). Panics on a connection error.
async fn http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    try_http_request(addr, method, path, body).await.unwrap_or_else(|()| panic!("{method} http://{addr}{path} failed"))
}

async fn try_http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String), ()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(drop)?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(drop)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.map_err(drop)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or(())?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
