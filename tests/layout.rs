//! The source layout the architecture promises (../shared/DESIGN.md, README "Architecture"): no
//! two modules import each other, directly or in a loop, and the index needs nothing of the DNS
//! side but its vocabulary (`dns::name`, `dns::proto`, which import nothing of ours), so that
//! `dns/` depends on `index/` and never the reverse. Read from the `use` paths of `src/`, unit
//! test modules left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src/` (`dns::answer`, `index`, …; the crate root is `crate`) and its text
/// without its unit tests.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).unwrap();
                let mut name = rel.with_extension("").display().to_string().replace('/', "::");
                if let Some(parent) = name.strip_suffix("::mod") {
                    name = parent.to_string();
                }
                if name == "lib" || name == "main" {
                    name = "crate".into();
                }
                if name == "tests" || name.ends_with("::tests") {
                    continue; // unit tests (in files of their own)
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
                // Code only: a doc comment may name any module.
                let text: String =
                    text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
                out.insert(name, text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// The modules each module refers to by a `crate::`, `super::` or `self::` path.
fn dependencies(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut deps = BTreeMap::new();
    for (module, text) in modules {
        let mut found = BTreeSet::new();
        let words: Vec<&str> = text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).collect();
        for word in words {
            let mut parts: Vec<&str> = word.split("::").filter(|p| !p.is_empty()).collect();
            let mut base: Vec<&str> = if module == "crate" { Vec::new() } else { module.split("::").collect() };
            match parts.first() {
                Some(&"crate") => base.clear(),
                Some(&"super") => {
                    // The parent, for a file module and a directory's `mod.rs` alike.
                    base.pop();
                    while parts.get(1) == Some(&"super") {
                        base.pop();
                        parts.remove(0);
                    }
                }
                Some(&"self") => {}
                _ => continue,
            }
            parts.remove(0);
            for take in (1..=parts.len()).rev() {
                let candidate: Vec<&str> = base.iter().chain(&parts[..take]).copied().collect();
                let candidate = candidate.join("::");
                if modules.contains_key(&candidate) {
                    let related = candidate == *module
                        || module.starts_with(&format!("{candidate}::"))
                        || candidate.starts_with(&format!("{module}::"));
                    if !related && candidate != "crate" {
                        found.insert(candidate);
                    }
                    break;
                }
            }
        }
        deps.insert(module.clone(), found);
    }
    deps
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let deps = dependencies(&modules());
    // Depth-first search for a path back to the start, from every module.
    for start in deps.keys() {
        let mut stack: Vec<Vec<&String>> = vec![vec![start]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().unwrap();
            for next in &deps[last] {
                if next == start {
                    let cycle: Vec<&str> = path.iter().map(|s| s.as_str()).chain([start.as_str()]).collect();
                    panic!("an import cycle: {}", cycle.join(" → "));
                }
                if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
}

#[test]
fn the_index_needs_only_the_dns_vocabulary() {
    let modules = modules();
    let deps = dependencies(&modules);
    assert!(deps.contains_key("dns::answer") && deps.contains_key("index::writer"), "{:?}", deps.keys());
    let vocabulary = ["dns::name", "dns::proto"];
    for (module, uses) in &deps {
        if module == "index" || module.starts_with("index::") {
            for used in uses.iter().filter(|u| u.starts_with("dns")) {
                assert!(vocabulary.contains(&used.as_str()), "{module} uses {used}");
            }
        }
    }
    for leaf in vocabulary {
        assert!(deps[leaf].is_empty(), "{leaf} imports {:?}", deps[leaf]);
    }
}
