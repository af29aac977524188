//! `headless-dns from-corefile FILE`: a CoreDNS Corefile → the `--config` file that does the
//! same, or an error naming the first line whose plugin or option headless-dns cannot honour
//! (never a silent drop).
//!
//! ```text
//!  Corefile ─tokens─▶ server blocks { directives { options } } ─convert─▶ `key: value  # line N`
//! ```
//!
//! The main block (zone `.`) gives the options; another block that only forwards becomes a stub
//! domain (`--forward ZONE=ADDR`), and a `hostname.bind`/`version.bind` block with `chaos` is
//! built in. Plugins that need nothing (`errors`, `ready`, `loop`, `reload`) are kept as comments
//! saying why.

use std::fmt::Write as _;
use std::path::Path;

/// Why a Corefile cannot be converted: the line and what is wrong there.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct Error {
    /// The Corefile.
    pub path: String,
    /// The line, from 1 (0: the file as a whole).
    pub line: usize,
    /// What cannot be honoured, or does not parse.
    pub reason: String,
}

/// One directive: a plugin line, or an option line inside a plugin's block.
#[derive(Debug)]
struct Directive {
    line: usize,
    name: String,
    args: Vec<String>,
    block: Vec<Directive>,
}

/// A server block: its keys (`.:53`) and plugins.
#[derive(Debug)]
struct Server {
    line: usize,
    keys: Vec<String>,
    plugins: Vec<Directive>,
}

/// Converts the Corefile at `path`.
pub fn convert_file(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        path: path.display().to_string(),
        line: 0,
        reason: e.to_string(),
    })?;
    convert(&text, &path.display().to_string())
}

/// Converts Corefile `text` (named `path` in errors and in the output's first line).
pub fn convert(text: &str, path: &str) -> Result<String, Error> {
    let fail = |line: usize, reason: String| Error { path: path.to_string(), line, reason };
    let (servers, imports) = parse(text).map_err(|(line, reason)| fail(line, reason))?;
    let mut out = Out::default();
    writeln!(out.text, "# headless-dns serve --config, from the Corefile {path} (headless-dns from-corefile)").ok();
    out.set("source", "kube", 0, "the kubernetes plugin watches the API");
    for (line, pattern) in imports {
        import(&mut out, line, &pattern).map_err(|r| fail(line, r))?;
    }
    let mut port = None;
    let mut main = None;
    for server in &servers {
        for key in &server.keys {
            let (zone, p) = split_key(key).map_err(|r| fail(server.line, r))?;
            if *port.get_or_insert(p) != p {
                return Err(fail(server.line, format!("{key}: every server block must use one port")));
            }
            if zone == "." {
                main = Some(server);
            }
        }
    }
    let Some(main) = main else { return Err(fail(0, "no server block for the root zone (.:53)".into())) };
    out.set("listen", &format!("[\"0.0.0.0:{}\"]", port.unwrap_or(53)), main.line, "the server block's port");
    for server in servers.iter().filter(|s| !std::ptr::eq(*s, main)) {
        side_block(&mut out, server).map_err(|(line, r)| fail(line, r))?;
    }
    let mut k8s = false;
    for plugin in &main.plugins {
        k8s |= plugin.name == "kubernetes";
        main_plugin(&mut out, plugin).map_err(|(line, r)| fail(line, r))?;
    }
    if !k8s {
        return Err(fail(main.line, "no kubernetes plugin: nothing for headless-dns to serve".into()));
    }
    out.finish();
    Ok(out.text)
}

/// The output: `key: value  # from line N: why`, each key once.
#[derive(Default)]
struct Out {
    text: String,
    keys: Vec<String>,
    stubs: Vec<String>,
}

impl Out {
    fn set(&mut self, key: &str, value: &str, line: usize, why: &str) {
        if let Some(at) = self.keys.iter().position(|k| k == key) {
            // A later setting of the same key wins, as a later flag does: drop the earlier line.
            self.keys.remove(at);
            let lines: Vec<&str> = self.text.lines().filter(|l| !l.starts_with(&format!("{key}:"))).collect();
            self.text = lines.join("\n") + "\n";
        }
        self.keys.push(key.to_string());
        let from = if line > 0 { format!("line {line}: ") } else { String::new() };
        writeln!(self.text, "{key}: {value}  # {from}{why}").ok();
    }

    fn note(&mut self, line: usize, what: &str) {
        writeln!(self.text, "# line {line}: {what}").ok();
    }

    fn finish(&mut self) {
        if !self.stubs.is_empty() {
            let list = self.stubs.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
            self.set("forward", &format!("[{list}]"), 0, "server blocks that forward a zone");
        }
    }
}

type Fail = (usize, String);

fn refuse(d: &Directive, why: &str) -> Fail {
    let mut text = d.name.clone();
    for arg in &d.args {
        text.push(' ');
        text.push_str(arg);
    }
    (d.line, format!("`{text}`: {why}"))
}

/// `zone[:port]`, without a `dns://` scheme.
fn split_key(key: &str) -> Result<(String, u16), String> {
    let key = key.strip_prefix("dns://").unwrap_or(key);
    if key.contains("://") {
        return Err(format!("{key}: only plain DNS (dns://) server blocks are supported"));
    }
    let (zone, port) = match key.rsplit_once(':') {
        Some((zone, port)) => (zone, port.parse().map_err(|_| format!("{key}: bad port"))?),
        None => (key, 53),
    };
    if zone.contains('/') {
        return Err(format!("{key}: a CIDR server block is not supported (reverse zones are served)"));
    }
    let zone = if zone == "." { ".".to_string() } else { zone.trim_end_matches('.').to_ascii_lowercase() };
    Ok((zone, port))
}

/// A server block other than the root's: a zone forwarded elsewhere (a stub domain), or CHAOS.
fn side_block(out: &mut Out, server: &Server) -> Result<(), Fail> {
    let zones: Vec<String> = server.keys.iter().filter_map(|k| split_key(k).ok()).map(|(z, _)| z).collect();
    if zones.iter().all(|z| z == "hostname.bind" || z == "version.bind") {
        for plugin in &server.plugins {
            if plugin.name != "chaos" || !plugin.args.is_empty() || !plugin.block.is_empty() {
                return Err(refuse(plugin, "only a bare `chaos` is supported in a CHAOS block"));
            }
        }
        out.note(server.line, "CHAOS version.bind/hostname.bind: built in (--nsid)");
        return Ok(());
    }
    let mut upstreams = None;
    for plugin in &server.plugins {
        match plugin.name.as_str() {
            "errors" | "loop" | "reload" | "cache" if plugin.block.is_empty() => {}
            "forward" if plugin.args.first().is_some_and(|a| a == ".") && plugin.block.is_empty() => {
                upstreams = Some(addresses(plugin, &plugin.args[1..])?.join(","));
            }
            _ => {
                return Err(refuse(
                    plugin,
                    "a server block other than `.` may only forward its zone (`forward . ADDR…`)",
                ));
            }
        }
    }
    let upstreams = upstreams.ok_or((server.line, "a server block other than `.` without `forward .`".to_string()))?;
    for zone in zones {
        out.stubs.push(format!("{zone}={upstreams}"));
    }
    Ok(())
}

/// Upstream addresses of `forward`: `IP`, `IP:PORT`, `dns://IP[:PORT]`.
fn addresses(d: &Directive, args: &[String]) -> Result<Vec<String>, Fail> {
    if args.is_empty() {
        return Err(refuse(d, "no upstream"));
    }
    args.iter()
        .map(|a| {
            let a = a.strip_prefix("dns://").unwrap_or(a);
            let ok = a.parse::<std::net::IpAddr>().is_ok() || a.parse::<std::net::SocketAddr>().is_ok();
            if ok {
                Ok(a.to_string())
            } else {
                Err(refuse(d, &format!("{a}: only IP or IP:PORT upstreams (plain DNS)")))
            }
        })
        .collect()
}

fn seconds(d: &Directive, text: &str) -> Result<u64, Fail> {
    text.parse().map_err(|_| refuse(d, &format!("{text}: expected seconds")))
}

fn main_plugin(out: &mut Out, p: &Directive) -> Result<(), Fail> {
    let args = &p.args;
    let no_block = |why: &str| if p.block.is_empty() { Ok(()) } else { Err(refuse(p, why)) };
    match p.name.as_str() {
        "errors" => out.note(p.line, "errors: logged on stderr"),
        "ready" => out.note(p.line, "ready: /readyz on --http"),
        "loop" => out.note(p.line, "loop: built in (a probe at start)"),
        "reload" => out.note(p.line, "reload: restart (roll the Deployment) to apply a changed configuration"),
        "log" => {
            let errors_only = args.iter().all(|a| a == ".")
                && !p.block.is_empty()
                && p.block.iter().all(|o| o.name == "class" && o.args == ["error"]);
            if !errors_only {
                return Err(refuse(p, "queries are not logged one by one (only errors, as `log { class error }`)"));
            }
            out.note(p.line, "log { class error }: errors are logged on stderr");
        }
        "health" => {
            let addr = args.first().map(|a| listen_addr(a)).unwrap_or_else(|| "0.0.0.0:8080".into());
            out.set("http", &format!("{addr:?}"), p.line, "/healthz, /readyz, /metrics all on this address");
            for o in &p.block {
                match (o.name.as_str(), &o.args[..]) {
                    ("lameduck", [d]) => out.set("lameduck", d, o.line, "health { lameduck }"),
                    _ => return Err(refuse(o, "not a health option headless-dns has")),
                }
            }
        }
        "prometheus" => {
            no_block("no prometheus options")?;
            out.set("coredns-metrics", "true", p.line, "the coredns_* names, on /metrics of --http");
        }
        "bufsize" => match &args[..] {
            [n] => out.set("max-udp-size", n, p.line, "bufsize"),
            _ => return Err(refuse(p, "expected one size")),
        },
        "loadbalance" => {
            if !(args.is_empty() || args[..] == ["round_robin"]) {
                return Err(refuse(p, "only round_robin"));
            }
            out.set("loadbalance", "round-robin", p.line, "loadbalance");
        }
        "nsid" => out.set("nsid", &format!("{:?}", args.join(" ")), p.line, "nsid"),
        "autopath" => {
            if args[..] != ["@kubernetes"] {
                return Err(refuse(p, "only `autopath @kubernetes`"));
            }
            out.set("autopath", "true", p.line, "autopath @kubernetes");
        }
        "kubernetes" => kubernetes(out, p)?,
        "forward" => forward(out, p)?,
        "cache" => cache(out, p)?,
        "hosts" => hosts(out, p)?,
        "transfer" => {
            let to: Vec<String> = p.block.iter().filter(|o| o.name == "to").flat_map(|o| o.args.clone()).collect();
            if to.is_empty() || p.block.iter().any(|o| o.name != "to") || to.iter().any(|t| t == "*") {
                return Err(refuse(p, "only `transfer { to ADDR… }` with addresses"));
            }
            let list = to.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", ");
            out.set("transfer-to", &format!("[{list}]"), p.line, "transfer { to }");
        }
        "chaos" if args.is_empty() => out.note(p.line, "chaos: built in"),
        "import" => {
            let pattern = args.first().ok_or_else(|| refuse(p, "no file"))?;
            import(out, p.line, pattern).map_err(|r| (p.line, r))?;
        }
        _ => return Err(refuse(p, "headless-dns has no equivalent")),
    }
    Ok(())
}

/// `:9153` → `0.0.0.0:9153`.
fn listen_addr(a: &str) -> String {
    if a.starts_with(':') { format!("0.0.0.0{a}") } else { a.to_string() }
}

fn kubernetes(out: &mut Out, p: &Directive) -> Result<(), Fail> {
    let (mut zones, mut ttl, mut fallthrough) = (Vec::new(), 5u64, false);
    // `multicluster ZONE`: CoreDNS lists the zone among the plugin's zones too; here it is
    // `--multicluster-zone` alone.
    let multicluster = p.block.iter().find(|o| o.name == "multicluster");
    let clusterset = match multicluster.map(|o| &o.args[..]) {
        None => None,
        Some([zone]) => Some(zone.trim_end_matches('.').to_ascii_lowercase()),
        Some(_) => return Err(refuse(multicluster.expect("matched"), "expected one zone")),
    };
    for zone in &p.args {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        match zone.as_str() {
            "in-addr.arpa" | "ip6.arpa" => {}
            z if clusterset.as_deref() == Some(z) => {}
            z if z.ends_with(".arpa") || z.contains('/') => {
                return Err(refuse(p, &format!("{zone}: only the whole in-addr.arpa and ip6.arpa are served")));
            }
            _ => zones.push(format!("{zone:?}")),
        }
    }
    if zones.is_empty() {
        zones.push("\"cluster.local\"".into());
    }
    out.set("zone", &format!("[{}]", zones.join(", ")), p.line, "kubernetes ZONES");
    for o in &p.block {
        let one = || match &o.args[..] {
            [v] => Ok(v.clone()),
            _ => Err(refuse(o, "expected one value")),
        };
        match o.name.as_str() {
            "pods" => out.set("pods", &one()?, o.line, "pods"),
            "ttl" => ttl = seconds(o, &one()?)?,
            "fallthrough" => {
                let reverse = |z: &String| matches!(z.trim_end_matches('.'), "in-addr.arpa" | "ip6.arpa");
                if o.args.is_empty() || !o.args.iter().all(reverse) {
                    return Err(refuse(o, "only reverse names fall through (unknown cluster names are NXDOMAIN)"));
                }
                fallthrough = true;
            }
            "endpoint_pod_names" => out.set("endpoint-pod-names", "true", o.line, "endpoint_pod_names"),
            "noendpoints" => out.set("no-endpoints", "true", o.line, "noendpoints"),
            "ignore" if o.args[..] == ["empty_service"] => {
                out.set("ignore-empty-service", "true", o.line, "ignore empty_service")
            }
            "namespaces" => {
                let list = o.args.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
                out.set("namespace", &format!("[{list}]"), o.line, "namespaces");
            }
            "labels" => out.set("label-selector", &format!("{:?}", o.args.join(" ")), o.line, "labels"),
            "namespace_labels" => {
                out.set("namespace-labels", &format!("{:?}", o.args.join(" ")), o.line, "namespace_labels")
            }
            "kubeconfig" if o.args.len() == 1 => {
                out.set("kubeconfig", &format!("{:?}", o.args[0]), o.line, "kubeconfig")
            }
            "multicluster" => out.set("multicluster-zone", &format!("{:?}", o.args[0]), o.line, "multicluster"),
            "startup_timeout" => out.note(o.line, "startup_timeout: none needed (SERVFAIL and not ready until synced)"),
            _ => return Err(refuse(o, "not a kubernetes option headless-dns has")),
        }
    }
    // CoreDNS answers negative answers with the same TTL (the SOA minimum is `ttl`).
    out.set("ttl", &ttl.to_string(), p.line, "kubernetes ttl (CoreDNS's default is 5)");
    out.set("negative-ttl", &ttl.to_string(), p.line, "CoreDNS's NXDOMAIN/NODATA TTL is its ttl too");
    if !fallthrough {
        out.set("no-reverse-fallthrough", "true", p.line, "no `fallthrough in-addr.arpa ip6.arpa`");
    }
    Ok(())
}

fn forward(out: &mut Out, p: &Directive) -> Result<(), Fail> {
    let Some((from, to)) = p.args.split_first() else { return Err(refuse(p, "no zone")) };
    let system = to.len() == 1 && to[0] == "/etc/resolv.conf";
    let upstreams = if system { Vec::new() } else { addresses(p, to)? };
    for o in &p.block {
        match (o.name.as_str(), &o.args[..]) {
            ("max_concurrent", [n]) if n == "1000" => {}
            ("policy", [policy]) if policy == "sequential" || policy == "round_robin" => {
                out.set("forward-policy", &policy.replace('_', "-"), o.line, "forward { policy }")
            }
            _ => return Err(refuse(o, "not a forward option headless-dns has (max_concurrent is 1000)")),
        }
    }
    if from != "." {
        let zone = split_key(from).map_err(|r| (p.line, r))?.0;
        out.stubs.push(format!("{zone}={}", upstreams.join(",")));
        return Ok(());
    }
    if system {
        out.note(p.line, "forward . /etc/resolv.conf: the default --upstream");
    } else {
        let list = upstreams.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
        out.set("upstream", &format!("[{list}]"), p.line, "forward .");
    }
    Ok(())
}

fn cache(out: &mut Out, p: &Directive) -> Result<(), Fail> {
    match &p.args[..] {
        [] => {}
        [ttl] => {
            let ttl = seconds(p, ttl)?.to_string();
            out.set("cache-max-ttl", &ttl, p.line, "cache TTL");
            out.set("cache-max-negative-ttl", &ttl, p.line, "cache TTL (denial too)");
        }
        _ => return Err(refuse(p, "cache takes a TTL, not zones (the cluster's names are never cached)")),
    }
    for o in &p.block {
        match (o.name.as_str(), &o.args[..]) {
            ("success", [_capacity, ttl]) => out.set("cache-max-ttl", &seconds(o, ttl)?.to_string(), o.line, "success"),
            ("denial", [_capacity, ttl]) => {
                out.set("cache-max-negative-ttl", &seconds(o, ttl)?.to_string(), o.line, "denial")
            }
            ("success" | "denial", [_capacity]) => {}
            ("disable", [_, ..]) => out.note(o.line, "disable: the cluster's names are never cached"),
            ("prefetch", [n, rest @ ..]) if rest.len() <= 2 => {
                out.set("prefetch", n, o.line, "prefetch");
                for arg in rest {
                    match arg.strip_suffix('%') {
                        Some(percent) => out.set("prefetch-percentage", percent, o.line, "prefetch PERCENTAGE%"),
                        None => out.set("prefetch-duration", arg, o.line, "prefetch DURATION"),
                    }
                }
            }
            ("serve_stale", []) => out.set("serve-stale", "1h", o.line, "serve_stale (CoreDNS's default 1h)"),
            ("serve_stale", [d]) | ("serve_stale", [d, _]) if o.args.get(1).is_none_or(|m| m == "immediate") => {
                out.set("serve-stale", d, o.line, "serve_stale")
            }
            _ => return Err(refuse(o, "not a cache option headless-dns has")),
        }
    }
    Ok(())
}

fn hosts(out: &mut Out, p: &Directive) -> Result<(), Fail> {
    match &p.args[..] {
        [file] => out.set("hosts", &format!("{file:?}"), p.line, "hosts FILE"),
        [file, zone] if zone == "." => out.set("hosts", &format!("{file:?}"), p.line, "hosts FILE"),
        _ => return Err(refuse(p, "expected `hosts FILE` (names in every zone)")),
    }
    for o in &p.block {
        match (o.name.as_str(), &o.args[..]) {
            ("ttl", [n]) => out.set("hosts-ttl", &seconds(o, n)?.to_string(), o.line, "hosts { ttl }"),
            ("reload", [d]) => out.set("hosts-reload", d, o.line, "hosts { reload }"),
            ("fallthrough", []) => out.note(o.line, "hosts { fallthrough }: names not in the file go on"),
            _ => return Err(refuse(o, "not a hosts option headless-dns has (entries belong in the file)")),
        }
    }
    Ok(())
}

/// `import PATTERN`: nothing to do while no file matches (k3s's optional customisations).
fn import(out: &mut Out, line: usize, pattern: &str) -> Result<(), String> {
    let path = Path::new(pattern);
    let (dir, name) = (path.parent().unwrap_or(Path::new(".")), path.file_name().and_then(|n| n.to_str()));
    let name = name.ok_or_else(|| format!("import {pattern}: not a file pattern"))?;
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    let matches = std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if name.contains('*') { n.starts_with(prefix) && n.ends_with(suffix) } else { n == name }
    });
    if matches {
        return Err(format!("import {pattern}: files match; convert what they add too"));
    }
    out.note(line, &format!("import {pattern}: no file matches here"));
    Ok(())
}

/// Tokens with their line numbers; `{`, `}` and line ends are tokens of their own.
fn tokens(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for word in line.split_whitespace() {
            let mut rest = word;
            while !rest.is_empty() {
                let cut = rest.find(['{', '}']).unwrap_or(rest.len());
                if cut > 0 {
                    out.push((i + 1, rest[..cut].to_string()));
                }
                if cut < rest.len() {
                    out.push((i + 1, rest[cut..cut + 1].to_string()));
                }
                rest = &rest[(cut + 1).min(rest.len())..];
            }
        }
        out.push((i + 1, "\n".to_string()));
    }
    out
}

/// Top-level `import` lines: (line, pattern).
type Imports = Vec<(usize, String)>;

/// Server blocks, and top-level `import` lines.
fn parse(text: &str) -> Result<(Vec<Server>, Imports), Fail> {
    let toks = tokens(text);
    let mut at = 0;
    let (mut servers, mut imports) = (Vec::new(), Vec::new());
    while at < toks.len() {
        let (line, tok) = &toks[at];
        if tok == "\n" {
            at += 1;
            continue;
        }
        if tok == "import" {
            let pattern = toks.get(at + 1).filter(|(_, t)| t != "\n").map(|(_, t)| t.clone());
            imports.push((*line, pattern.ok_or((*line, "import without a file".to_string()))?));
            at += 2;
            continue;
        }
        let mut keys = Vec::new();
        while at < toks.len() && toks[at].1 != "{" {
            if toks[at].1 == "}" {
                return Err((toks[at].0, "unexpected }".into()));
            }
            if toks[at].1 != "\n" {
                keys.push(toks[at].1.trim_end_matches(',').to_string());
            }
            at += 1;
        }
        if at == toks.len() {
            return Err((*line, "a server block without {".into()));
        }
        at += 1;
        let plugins = directives(&toks, &mut at)?;
        servers.push(Server { line: *line, keys, plugins });
    }
    Ok((servers, imports))
}

/// Directives up to the `}` that closes the block being read (consumed).
fn directives(toks: &[(usize, String)], at: &mut usize) -> Result<Vec<Directive>, Fail> {
    let mut out = Vec::new();
    loop {
        let Some((line, tok)) = toks.get(*at) else { return Err((toks.last().map_or(0, |t| t.0), "missing }".into())) };
        *at += 1;
        match tok.as_str() {
            "\n" => continue,
            "}" => return Ok(out),
            "{" => return Err((*line, "unexpected {".into())),
            _ => {}
        }
        let mut d = Directive { line: *line, name: tok.clone(), args: Vec::new(), block: Vec::new() };
        while let Some((_, t)) = toks.get(*at) {
            match t.as_str() {
                "\n" => {
                    *at += 1;
                    break;
                }
                "}" => break,
                "{" => {
                    *at += 1;
                    d.block = directives(toks, at)?;
                    break;
                }
                _ => {
                    d.args.push(t.clone());
                    *at += 1;
                }
            }
        }
        out.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_takes_its_duration_and_percentage() {
        let text = ".:53 {\n    kubernetes cluster.local\n    cache 30 {\n        prefetch 5 10m 25%\n    }\n}\n";
        let out = convert(text, "Corefile").unwrap();
        for line in ["prefetch: 5  # line 4", "prefetch-duration: 10m  # line 4", "prefetch-percentage: 25  # line 4"] {
            assert!(out.contains(line), "{out}");
        }
    }

    #[test]
    fn inline_blocks_and_bad_plugins_are_read_with_their_lines() {
        let text = ".:53 {\n    health { lameduck 5s }\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }\n}\n";
        let out = convert(text, "Corefile").unwrap();
        assert!(out.contains("lameduck: 5s  # line 2"), "{out}");
        assert!(out.contains("pods: insecure  # line 4"), "{out}");
        let bad = text.replace("    pods insecure\n", "    pods insecure\n        apiserver_qps 5\n");
        let err = convert(&bad, "Corefile").unwrap_err();
        assert_eq!((err.line, err.reason.contains("apiserver_qps")), (5, true), "{err}");
        let mcs = text
            .replace("cluster.local in-addr", "cluster.local clusterset.local in-addr")
            .replace("    pods insecure\n", "    pods insecure\n        multicluster clusterset.local\n");
        let out = convert(&mcs, "Corefile").unwrap();
        assert!(out.contains("zone: [\"cluster.local\"]"), "{out}");
        assert!(out.contains("multicluster-zone: \"clusterset.local\"  # line 5"), "{out}");
    }
}
