//! The `headless-dns` binary: parse flags, set up logging, run.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use headless_dns::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc. The index is some 600,000 small allocations at 100,000
/// endpoints (names, packed answers, endpoint strings); glibc adds an 8-byte header to each and
/// rounds to 16 bytes, jemalloc packs them in size classes without headers. Measured on the
/// large shape (benches/load, 10,000 Services × 10): RSS 114 → 104 MB, and 3-5 % less CPU per
/// watch event. mimalloc was tried too and held more (124-134 MB). The query path allocates
/// nothing, so the allocator does not touch it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the environment overrides
/// them). Freed pages go back to the kernel after a second rather than ten, by a background
/// thread rather than on the next allocation: a server that goes quiet after its initial list
/// would otherwise keep the pages the list's decoding used. After the initial load they go back
/// at once ([`steady_memory`]).
// SAFETY: jemalloc declares this symbol `extern const char *malloc_conf` (tikv-jemalloc-sys
// prefixes it `_rjem_`) and reads it once at start; `MallocConf` is a `const char *` to a
// NUL-terminated string that lives as long as the program, and nothing else defines the symbol.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C `const char *` (what jemalloc reads), which a `static` may hold.
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to an immutable `'static` string; sharing it across threads is sharing
// a `&'static CStr`.
unsafe impl Sync for MallocConf {}

/// jemalloc's part of [`headless_dns::memory::release`]: the calling thread's cache of freed
/// blocks goes back to the arena, and the arenas' unused pages to the kernel now rather than
/// after the decay time.
fn release_memory() {
    // 4096 is MALLCTL_ARENAS_ALL.
    for name in [c"thread.tcache.flush", c"arena.4096.purge"] {
        // SAFETY: both are void mallctls: no old value is read and no new value written, so the
        // null pointers and zero length are what jemalloc expects; the names are NUL-terminated.
        // An error (a build without tcache) leaves the memory where it is, which is harmless.
        unsafe {
            jemalloc_mallctl(name.as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), 0);
        }
    }
}

/// jemalloc's part of [`headless_dns::memory::steady`]: freed pages go back to the kernel at once
/// (`dirty_decay_ms` 0 in every arena, and in arenas made later), unless `_RJEM_MALLOC_CONF`
/// says otherwise. Under the soak's churn (1,000 endpoint changes a second, `benches/load/soak.py`)
/// the second's worth of freed pages that a decay of 1,000 ms holds made the resident size swing
/// by 6.3 % between samples; switched to at once after the load it swung 3.1 %, with the server's
/// CPU 33 against 34 % of a core (12-minute runs one after the other, shared 2-core EPYC). During the initial load purging at
/// once cost a fifth more CPU (the parse frees most of what it allocates), so it waits until then.
fn steady_memory() {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
        return;
    }
    let mut arenas: std::ffi::c_uint = 0;
    let mut len = size_of::<std::ffi::c_uint>();
    // SAFETY: `arenas.narenas` is an `unsigned`, read into `arenas` whose size `len` gives; the
    // name is NUL-terminated. On an error `arenas` stays 0 and only the default is set.
    unsafe {
        jemalloc_mallctl(c"arenas.narenas".as_ptr(), (&raw mut arenas).cast(), &mut len, std::ptr::null_mut(), 0);
    }
    let names = (0..arenas).map(|i| format!("arena.{i}.dirty_decay_ms\0")).chain(["arenas.dirty_decay_ms\0".into()]);
    // Arenas not yet made refuse (they take the default when made).
    let mut set = 0;
    for name in names {
        let mut decay: isize = 0;
        // SAFETY: each `dirty_decay_ms` is an `ssize_t`, written from `decay` with its size; no
        // old value is read; the name is NUL-terminated. An error leaves the decay as it was.
        let error = unsafe {
            jemalloc_mallctl(
                name.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                (&raw mut decay).cast(),
                size_of::<isize>(),
            )
        };
        set += usize::from(error == 0);
    }
    tracing::debug!(arenas, set, "allocator: freed pages now go back to the kernel at once");
}

// jemalloc's `mallctl`, as tikv-jemalloc-sys (linked through tikv-jemallocator) prefixes it;
// declared here rather than by depending on that crate directly, which rebuilt jemalloc.
unsafe extern "C" {
    #[link_name = "_rjem_mallctl"]
    fn jemalloc_mallctl(
        name: *const std::ffi::c_char,
        oldp: *mut std::ffi::c_void,
        oldlenp: *mut usize,
        newp: *mut std::ffi::c_void,
        newlen: usize,
    ) -> std::ffi::c_int;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    headless_dns::memory::set_hooks(headless_dns::memory::Hooks { release: release_memory, steady: steady_memory });
    let cli = Cli::parse_from(headless_dns::config::expand_config_file(std::env::args_os().collect())?);
    match cli.command {
        Command::Explain(args) => {
            let text = explain(&args.server, &args.name, &args.rtype)?;
            print!("{text}");
        }
        Command::FromCorefile(args) => print!("{}", headless_dns::corefile::convert_file(&args.file)?),
        Command::Serve(args) => {
            init_logging(args.log_format, &args.log_level)?;
            let config = args.to_config()?;
            headless_dns::run(config, shutdown_signal()).await.context("headless-dns serve")?;
        }
    }
    Ok(())
}

/// GETs `/explain` from a running server (plain HTTP/1.0; the server is ours).
fn explain(server: &str, name: &str, rtype: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let authority = server.strip_prefix("http://").unwrap_or(server).trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(authority).with_context(|| format!("connecting to {server}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let safe = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    anyhow::ensure!(safe(name) && safe(rtype), "names and types are letters, digits, '-', '_' and '.'");
    write!(stream, "GET /explain?name={name}&type={rtype} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200"),
        "{server}: {}{body}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => log_filter(&env).context("RUST_LOG")?,
        _ => log_filter(level).context("--log-level")?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// kube's client logs each failed request itself, at ERROR ("failed with error …") or WARN
/// ("eof in poll", a whole response body that did not decode): 16 lines for one 5-s API outage,
/// which the watchers already report as one warning per outage and a line per recovered watch.
/// They show when the filter's default level is debug or trace, or when it names `kube_client`; TLS warnings
/// (a CA bundle that failed to reload) stay.
const QUIET_KUBE_CLIENT: [&str; 3] =
    ["kube_client::client=error", "kube_client::client::builder=off", "kube_client::client::tls=warn"];

fn log_filter(spec: &str) -> anyhow::Result<EnvFilter> {
    let mut filter = EnvFilter::try_new(spec)?;
    let everything_at = |level: &str| spec.split(',').any(|d| d.trim().eq_ignore_ascii_case(level));
    if !everything_at("debug") && !everything_at("trace") && !spec.contains("kube_client") {
        for directive in QUIET_KUBE_CLIENT {
            filter = filter.add_directive(directive.parse()?);
        }
    }
    Ok(filter)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
