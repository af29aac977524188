//! `--namespace-labels SELECTOR` (CoreDNS `namespace_labels`): serve only the Services of
//! Namespaces whose labels match.
//!
//! ```text
//!  kube:  Namespace watch with the selector ─▶ the API server reports a Namespace whose labels
//!         stop matching as deleted, one that starts matching as added
//!  file:  Namespace documents whose labels do not match are dropped when the file is read
//!                                      │
//!                                      ▼
//!  Model: a Namespace present ⇔ selected; with the option, a Service is served only while its
//!         Namespace is present, and a Namespace coming or going recomputes its Services
//! ```
//!
//! The selector is the Kubernetes label-selector syntax (`team=a`, `env in (prod,stage)`,
//! `!legacy`), parsed here at start so that a bad one is an error naming the flag rather than a
//! watch the API server keeps refusing. A manifest's Namespace labels are read here from its
//! documents as JSON values (with the file source's YAML reader): the object model keeps no
//! labels.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::object::Object;
use kube::core::{Expression, Selector, SelectorExt};

/// A parsed label selector, with its text (which the API server is given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceLabels {
    /// The selector as given.
    pub text: String,
    selector: Selector,
}

impl NamespaceLabels {
    /// Parses the label-selector syntax: requirements separated by commas, each `key=value`,
    /// `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key` or `!key`.
    pub fn parse(text: &str) -> Result<NamespaceLabels, String> {
        let mut selector = Selector::default();
        for requirement in split_requirements(text)? {
            selector.extend([requirement_of(requirement.trim())?]);
        }
        if selector.selects_all() {
            return Err("an empty selector selects every namespace".into());
        }
        Ok(NamespaceLabels { text: text.to_string(), selector })
    }

    /// Whether a Namespace with these labels is served.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }

    /// Drops the Namespaces of `objects` whose labels in the manifest `text` do not match (the
    /// file source's projections keep no labels, so their documents are read again here, with
    /// the file source's YAML reader).
    pub fn retain_selected(&self, objects: &mut Vec<Object>, text: &str) {
        let mut unselected = HashSet::new();
        // The documents up to the first that is not YAML (the file was read without error, so
        // that is all of them).
        let _ = crate::source::yaml::for_each_document(text, |_, doc| self.collect_unselected(&doc, &mut unselected));
        if !unselected.is_empty() {
            objects.retain(|o| !matches!(o, Object::Namespace(ns) if unselected.contains(&*ns.name)));
        }
    }

    /// Walks a document (and a list's items) as a JSON value: an item of any shape is ignored
    /// rather than hiding its list's Namespaces.
    fn collect_unselected(&self, doc: &serde_json::Value, out: &mut HashSet<String>) {
        if let Some(serde_json::Value::Array(items)) = doc.get("items") {
            for item in items {
                self.collect_unselected(item, out);
            }
        }
        if doc.get("kind").and_then(serde_json::Value::as_str) != Some("Namespace") {
            return;
        }
        let Some(meta) = doc.get("metadata") else { return };
        let Some(name) = meta.get("name").and_then(serde_json::Value::as_str) else { return };
        let labels: BTreeMap<String, String> = meta
            .get("labels")
            .and_then(serde_json::Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        if !self.matches(&labels) {
            tracing::debug!(namespace = %name, selector = %self.text, "namespace not selected");
            out.insert(name.to_string());
        }
    }
}

/// Splits at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn requirement_of(text: &str) -> Result<Expression, String> {
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    let key = |s: &str| {
        let s = s.trim();
        if valid(s) { Ok(s.to_string()) } else { Err(format!("{s:?} is not a label key")) }
    };
    let value = |s: &str| {
        let s = s.trim();
        if s.is_empty() || valid(s) { Ok(s.to_string()) } else { Err(format!("{s:?} is not a label value")) }
    };
    let set = |s: &str| -> Result<BTreeSet<String>, String> {
        let inner = s.trim().strip_prefix('(').and_then(|s| s.strip_suffix(')'));
        inner.ok_or_else(|| format!("{s:?}: expected (value,…)"))?.split(',').map(value).collect()
    };
    if let Some((k, v)) = text.split_once("!=") {
        return Ok(Expression::NotEqual(key(k)?, value(v)?));
    }
    if let Some((k, v)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Expression::Equal(key(k)?, value(v)?));
    }
    if let Some((k, v)) = text.split_once(" notin ") {
        return Ok(Expression::NotIn(key(k)?, set(v)?));
    }
    if let Some((k, v)) = text.split_once(" in ") {
        return Ok(Expression::In(key(k)?, set(v)?));
    }
    match text.strip_prefix('!') {
        Some(k) => Ok(Expression::DoesNotExist(key(k)?)),
        None => Ok(Expression::Exists(key(text)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match_as_kubernetes_reads_them() {
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let team_a = labels(&[("team", "a"), ("env", "prod")]);
        let team_b = labels(&[("team", "b"), ("legacy", "")]);
        for (text, a, b) in [
            ("team=a", true, false),
            ("team==b", false, true),
            ("team!=a", false, true),
            ("env in (prod, stage),team", true, false),
            ("team notin (a)", false, true),
            ("legacy", false, true),
            ("!legacy,team", true, false),
        ] {
            let sel = NamespaceLabels::parse(text).unwrap();
            assert_eq!((sel.matches(&team_a), sel.matches(&team_b)), (a, b), "{text}");
        }
        for bad in ["", "team in (a", "te am=a", "env in prod"] {
            assert!(NamespaceLabels::parse(bad).is_err(), "{bad}");
        }
    }

    /// Labels are read as the file source reads the rest (YAML 1.2: `on` is a string), and a
    /// list item of another shape does not hide its list's Namespaces.
    #[test]
    fn manifest_namespaces_are_dropped_by_their_labels() {
        let text = "kind: List\nitems:\n- 5\n- {apiVersion: v1, kind: Namespace, metadata: {name: a, labels: {team: on}}}\n\
                    - {apiVersion: v1, kind: Namespace, metadata: {name: b, labels: {team: off}}}\n---\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n";
        let path = std::path::Path::new("x.yaml");
        let mut objects = crate::source::file::parse_manifests(text, path).unwrap();
        NamespaceLabels::parse("team=on").unwrap().retain_selected(&mut objects, text);
        let names: Vec<String> = objects.iter().map(|o| o.object_ref().to_string()).collect();
        assert_eq!(names, ["Namespace a"]);
    }
}
