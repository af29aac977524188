//! The Kubernetes API side of the load benchmark's churn run (`benches/load/run.py --churn`).
//!
//! It serves a cluster read from Kubernetes YAML through the test suite's fake API server
//! (`tests/support/fake_api/`: real list/watch over HTTP, resourceVersions, bookmarks), so that
//! headless-dns runs its production path — `--source kube`, the kube-rs watchers, the writer —
//! while the load script changes endpoints at a fixed rate. Churning the file source instead
//! re-reads and re-parses the whole YAML on every change, which measures the file source, not
//! the update path.
//!
//! ```text
//! cargo bench --bench api_feed -- --yaml cluster.yaml --kubeconfig kubeconfig.yaml
//! ```
//!
//! Protocol on stdin/stdout (one line each way):
//! - it prints `READY <url>` once the cluster is served and the kubeconfig written;
//! - each line read is a batch of endpoint changes, `<ns>/<slice>/<endpoint index>/<address>`
//!   separated by spaces; every changed EndpointSlice is written once (one watch event each),
//!   then it prints `OK <slices written>`.
//!
//! It ends at end of input.

#[path = "../tests/support/fake_api/mod.rs"]
#[allow(dead_code)]
mod fake_api;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

/// jemalloc, as the server uses: with glibc's malloc a fifth of this process's CPU went to page
/// faults, as each watch event's JSON values were freed back to the system and faulted in again.
/// This runs on the load generator's CPU, so what it spends is taken from dnsperf.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api_feed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| PathBuf::from(&w[1]));
    let (Some(yaml), Some(kubeconfig)) = (flag("--yaml"), flag("--kubeconfig")) else {
        return Err("usage: api_feed --yaml CLUSTER.yaml --kubeconfig OUT.yaml".into());
    };
    let text = std::fs::read_to_string(&yaml).map_err(|e| format!("{}: {e}", yaml.display()))?;
    let mut objects = Vec::new();
    let mut slices: HashMap<(String, String), Value> = HashMap::new();
    for (i, doc) in serde_saphyr::read::<_, Value>(&mut text.as_bytes()).enumerate() {
        let value = doc.map_err(|e| format!("{}: document {}: {e}", yaml.display(), i + 1))?;
        if value["kind"] == "EndpointSlice" {
            let key = (str_at(&value, "namespace"), str_at(&value, "name"));
            slices.insert(key, value.clone());
        }
        objects.push(value);
    }

    let api = fake_api::FakeApiServer::start();
    // A watch that drops is resumed from the history; the churn run writes 1,000 events a
    // second, so the default 10,000 kept 10 s of full objects, which the allocator kept
    // faulting in and giving back on the load generator's CPU. Two seconds' worth is enough.
    api.set_history_limit(2_000);
    let count = objects.len();
    api.apply_many(objects);
    api.write_kubeconfig(&kubeconfig).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, line: String| -> Result<(), String> {
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
    };
    say(&mut out, format!("READY {} ({count} objects)", api.url()))?;

    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        let mut changed: Vec<(String, String)> = Vec::new();
        for item in line.split_whitespace() {
            let parts: Vec<&str> = item.splitn(4, '/').collect();
            let [ns, slice, index, address] = parts[..] else {
                return Err(format!("bad change {item:?}: want <ns>/<slice>/<index>/<address>"));
            };
            let key = (ns.to_string(), slice.to_string());
            let index: usize = index.parse().map_err(|_| format!("bad endpoint index in {item:?}"))?;
            let endpoint = slices
                .get_mut(&key)
                .and_then(|s| s["endpoints"].get_mut(index))
                .ok_or_else(|| format!("no endpoint {index} in EndpointSlice {ns}/{slice}"))?;
            endpoint["addresses"] = Value::from(vec![address]);
            if !changed.contains(&key) {
                changed.push(key);
            }
        }
        for key in &changed {
            api.apply(slices[key].clone());
        }
        say(&mut out, format!("OK {}", changed.len()))?;
    }
    Ok(())
}

fn str_at(obj: &Value, field: &str) -> String {
    obj["metadata"][field].as_str().unwrap_or_default().to_string()
}
