//! Manifest YAML into JSON values: a fast reader for the YAML manifests are written in, with
//! serde-saphyr behind it for everything else.
//!
//! `kubectl get -o yaml`, Helm and hand-written manifests use a small part of YAML: block
//! mappings and sequences, plain and quoted scalars on one line, flow collections on one line,
//! comments. [`for_each_document`] reads that part straight into `serde_json::Value`s, a line at a
//! time. serde-saphyr (pure Rust and maintained) took about 1 µs per line of the load benchmark's
//! manifest, three times serde_yaml's libyaml, and start-up from a file is mostly that.
//!
//! A document that uses anything else (anchors and aliases, tags, block scalars, scalars over
//! several lines, a number in an unusual form, a duplicate key, directives) or that is not valid
//! YAML is read by serde-saphyr instead, with the file source's options
//! ([`crate::cluster::api::yaml_options`]), so the values and the errors (line, column, document
//! number) are serde-saphyr's: where this reader is not sure, it does not guess. The tests read a
//! corpus both ways and compare.

use serde_json::{Map, Value};

use crate::cluster::api::yaml_options;

/// YAML's merge key, which serde-saphyr resolves (`<<: {…}` merges a mapping into its parent):
/// a document with it is left to serde-saphyr (found by fuzzing).
const MERGE_KEY: &str = "<<";

/// The longest key this reader takes, in bytes from its first character to its `:`. YAML 1.2
/// (§7.4.2, §8.2.2) limits an implicit key to 1,024 characters and serde-saphyr enforces it; a
/// key near that length is left to serde-saphyr, which decides (found by fuzzing: a quoted key of
/// 1,047 characters that this reader took and serde-saphyr rejects). Bytes are never fewer than
/// characters, so any key this reader takes is well within the limit.
const MAX_KEY: usize = 1000;

/// A document this reader leaves to serde-saphyr.
struct Unsupported;

type Fast<T> = Result<T, Unsupported>;

/// Calls `each` with every non-empty document of `text` in order, numbered from 1 as
/// serde-saphyr numbers them. Stops at the first document that is not valid YAML and returns
/// its number and serde-saphyr's error (`each` has been called for the documents before it).
pub fn for_each_document(text: &str, mut each: impl FnMut(usize, Value)) -> Result<(), (usize, serde_saphyr::Error)> {
    let Some(chunks) = split_documents(text) else {
        return saphyr_documents(text, &mut each);
    };
    let mut number = 0;
    let mut lines = Vec::new();
    for chunk in chunks {
        lines.clear();
        let fast = document_lines(chunk, &mut lines).and_then(|()| match lines.is_empty() {
            true => Ok(None),
            false => Parser { lines: &mut lines, pos: 0 }.document().map(Some),
        });
        match fast {
            Ok(None) => {}
            Ok(Some(value)) => {
                number += 1;
                each(number, value);
            }
            Err(Unsupported) => {
                let before = number;
                let mut count = |n: usize, value: Value| {
                    number = before + n;
                    each(number, value);
                };
                if let Err((n, error)) = saphyr_documents(chunk, &mut count) {
                    // Report what serde-saphyr says of the whole file: its line numbers count
                    // from the file's start.
                    return match saphyr_documents(text, &mut |_, _| {}) {
                        Err(whole) => Err(whole),
                        Ok(()) => Err((before + n, error)),
                    };
                }
            }
        }
    }
    Ok(())
}

/// serde-saphyr's reading of `text`: what [`for_each_document`] must agree with on every file
/// (the `manifests` fuzz target compares the two).
pub fn saphyr_documents(text: &str, each: &mut impl FnMut(usize, Value)) -> Result<(), (usize, serde_saphyr::Error)> {
    let mut bytes = text.as_bytes();
    for (i, doc) in serde_saphyr::read_with_options::<_, Value>(&mut bytes, yaml_options()).enumerate() {
        let number = i + 1;
        each(number, doc.map_err(|e| (number, e))?);
    }
    Ok(())
}

/// The text of each document: `text` split at its `---` lines. `None` if the file has what
/// splitting cannot be sure of (content on a `---` line, `...`, directives, a byte order mark anywhere,
/// CR line ends, characters YAML does not allow): serde-saphyr reads the whole file then.
fn split_documents(text: &str) -> Option<Vec<&str>> {
    // A file of printable ASCII (as manifests nearly always are) has neither: one fast pass.
    if !ascii_printable(text) && (text.contains(['\u{feff}', '\r']) || !printable(text)) {
        return None;
    }
    let (mut chunks, mut start, mut at) = (Vec::new(), 0, 0);
    while at < text.len() {
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let line = &text[at..end];
        if let Some(rest) = line.strip_prefix("---") {
            if rest.is_empty() || rest.starts_with([' ', '\t']) {
                let rest = rest.trim_start_matches([' ', '\t']);
                if !rest.is_empty() && !rest.starts_with('#') {
                    return None;
                }
                chunks.push(&text[start..at]);
                start = (end + 1).min(text.len());
            }
        } else if line.starts_with("...") || line.starts_with('%') {
            return None;
        }
        at = end + 1;
    }
    chunks.push(&text[start..]);
    Some(chunks)
}

/// Whether `text` holds only characters YAML allows in a stream (YAML 1.2 §5.1, `c-printable`),
/// comments included: serde-saphyr rejects a file with any other, so this reader must not accept
/// it (the `manifests` fuzz target found a U+FFFF in a comment that this reader skipped).
fn printable(text: &str) -> bool {
    ascii_printable(text)
        || text.chars().all(|c| {
            matches!(c, '\t' | '\n' | '\u{20}'..='\u{7E}' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
                || c >= '\u{10000}'
        })
}

/// Whether `text` is only tabs, line feeds and printable ASCII. Checked 64 bytes at a time with no
/// early exit inside a block, which the compiler turns into vector instructions; a byte-at-a-time
/// `all` is not, and took 2 % of the large shape's start-up.
fn ascii_printable(text: &str) -> bool {
    let ok = |b: u8| b == b'\t' || b == b'\n' || (0x20..=0x7E).contains(&b);
    let mut blocks = text.as_bytes().chunks_exact(64);
    blocks.by_ref().all(|block| block.iter().fold(true, |all, &b| all & ok(b)))
        && blocks.remainder().iter().all(|&b| ok(b))
}

/// One line of a document with content: its indentation and its text, with trailing blanks cut.
#[derive(Clone, Copy, Debug)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// The lines of `chunk` with content (blank and comment lines dropped).
fn document_lines<'a>(chunk: &'a str, out: &mut Vec<Line<'a>>) -> Fast<()> {
    for line in chunk.split('\n') {
        let text = line.trim_start_matches(' ');
        let indent = line.len() - text.len();
        let text = text.trim_end_matches([' ', '\t']);
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with('\t') {
            return Err(Unsupported);
        }
        out.push(Line { indent, text });
    }
    Ok(())
}

// === impl Parser ===

/// Block structure over a document's lines. A compact mapping in a sequence entry (`- a: 1`)
/// is read by rewriting its line as the mapping's first line, at the column of its key.
struct Parser<'l, 'a> {
    lines: &'l mut Vec<Line<'a>>,
    pos: usize,
}

impl<'a> Parser<'_, 'a> {
    fn document(&mut self) -> Fast<Value> {
        let first = self.lines[0].text;
        if !(is_entry(first) || first.starts_with(['[', '{']) || split_key(first)?.is_some()) {
            return Err(Unsupported);
        }
        let value = self.node()?;
        match self.pos == self.lines.len() {
            true => Ok(value),
            false => Err(Unsupported),
        }
    }

    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.pos).copied()
    }

    /// The node that starts at the current line.
    fn node(&mut self) -> Fast<Value> {
        let line = self.lines[self.pos];
        if is_entry(line.text) {
            return self.sequence(line.indent);
        }
        if split_key(line.text)?.is_some() {
            return self.mapping(line.indent);
        }
        self.pos += 1;
        let value = inline(line.text)?;
        self.end_of_node(line.indent)?;
        Ok(value)
    }

    /// After a node on one line: a line indented deeper would continue it (or be an error).
    fn end_of_node(&self, indent: usize) -> Fast<()> {
        match self.peek() {
            Some(next) if next.indent > indent => Err(Unsupported),
            _ => Ok(()),
        }
    }

    /// The value of `key:` (or `-`) with nothing after it on its line, at `indent`.
    fn value_below(&mut self, indent: usize, in_mapping: bool) -> Fast<Value> {
        match self.peek() {
            Some(next) if next.indent > indent => self.node(),
            // `ports:` and its `- …` entries at the key's own indentation, as kubectl writes them.
            Some(next) if in_mapping && next.indent == indent && is_entry(next.text) => self.sequence(indent),
            _ => Ok(Value::Null),
        }
    }

    fn mapping(&mut self, indent: usize) -> Fast<Value> {
        let mut map = Map::new();
        while let Some(line) = self.peek() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent || is_entry(line.text) {
                return Err(Unsupported);
            }
            let (key, rest) = split_key(line.text)?.ok_or(Unsupported)?;
            self.pos += 1;
            let value = if rest.is_empty() {
                self.value_below(indent, true)?
            } else {
                let value = inline(rest)?;
                self.end_of_node(indent)?;
                value
            };
            if key == MERGE_KEY || map.insert(key, value).is_some() {
                return Err(Unsupported);
            }
        }
        Ok(Value::Object(map))
    }

    fn sequence(&mut self, indent: usize) -> Fast<Value> {
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent < indent || (line.indent == indent && !is_entry(line.text)) {
                break;
            }
            if line.indent > indent {
                return Err(Unsupported);
            }
            let after = &line.text[1..];
            let rest = after.trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.pos += 1;
                items.push(self.value_below(indent, false)?);
            } else if is_entry(rest) || rest.starts_with('\t') {
                return Err(Unsupported);
            } else if split_key(rest)?.is_some() {
                let column = indent + 1 + (after.len() - rest.len());
                self.lines[self.pos] = Line { indent: column, text: rest };
                items.push(self.mapping(column)?);
            } else {
                self.pos += 1;
                items.push(inline(rest)?);
                self.end_of_node(indent)?;
            }
        }
        Ok(Value::Array(items))
    }
}

/// Whether a line starts a block sequence entry.
fn is_entry(text: &str) -> bool {
    text == "-" || text.starts_with("- ") || text.starts_with("-\t")
}

/// `key: rest` (rest without its comment, maybe empty), or `None` if the line is not a mapping
/// entry. A key must be a string.
fn split_key(text: &str) -> Fast<Option<(String, &str)>> {
    let bytes = text.as_bytes();
    let (key, after) = match bytes[0] {
        b'"' | b'\'' => {
            let (key, after) = quoted(text)?;
            let after = after.trim_start_matches(' ');
            if text.len() - after.len() > MAX_KEY {
                return Err(Unsupported);
            }
            match after.strip_prefix(':') {
                Some(rest) if rest.is_empty() || rest.starts_with([' ', '\t']) => (key, rest),
                _ => return Ok(None),
            }
        }
        b'[' | b'{' => return Ok(None),
        _ => {
            let mut found = None;
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    b':' if bytes.get(i + 1).is_none_or(|&n| n == b' ' || n == b'\t') => {
                        found = Some(i);
                        break;
                    }
                    b'#' if i > 0 && matches!(bytes[i - 1], b' ' | b'\t') => return Ok(None),
                    _ => {}
                }
            }
            let Some(i) = found else { return Ok(None) };
            if i > MAX_KEY {
                return Err(Unsupported);
            }
            match scalar(text[..i].trim_end_matches([' ', '\t']))? {
                Value::String(key) => (key, &text[i + 1..]),
                _ => return Err(Unsupported),
            }
        }
    };
    let rest = after.trim_start_matches([' ', '\t']);
    Ok(Some((key, if rest.starts_with('#') { "" } else { rest })))
}

/// A value that is all of the rest of its line (but a comment).
fn inline(text: &str) -> Fast<Value> {
    match text.as_bytes()[0] {
        b'"' | b'\'' => {
            let (value, after) = quoted(text)?;
            line_end(after)?;
            Ok(Value::String(value))
        }
        b'[' | b'{' => {
            let mut flow = Flow { text, pos: 0 };
            let value = flow.value()?;
            line_end(&text[flow.pos..])?;
            Ok(value)
        }
        _ => {
            let plain = match text.find(" #").into_iter().chain(text.find("\t#")).min() {
                Some(i) => text[..i].trim_end_matches([' ', '\t']),
                None => text,
            };
            // `a: b: c` is not YAML; a plain scalar never holds `: `.
            if plain.contains(": ") || plain.contains(":\t") || plain.ends_with(':') {
                return Err(Unsupported);
            }
            scalar(plain)
        }
    }
}

/// What may follow a node on its line: blanks, then a comment.
fn line_end(after: &str) -> Fast<()> {
    let rest = after.trim_start_matches([' ', '\t']);
    match rest.is_empty() || (rest.starts_with('#') && rest.len() < after.len()) {
        true => Ok(()),
        false => Err(Unsupported),
    }
}

/// A quoted scalar that ends on its line, and the text after it.
fn quoted(text: &str) -> Fast<(String, &str)> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut from = 1;
    if bytes[0] == b'\'' {
        while let Some(i) = text[from..].find('\'').map(|i| from + i) {
            out.push_str(&text[from..i]);
            if bytes.get(i + 1) == Some(&b'\'') {
                out.push('\'');
                from = i + 2;
            } else {
                return Ok((out, &text[i + 1..]));
            }
        }
        return Err(Unsupported);
    }
    while let Some(i) = text[from..].find(['"', '\\']).map(|i| from + i) {
        out.push_str(&text[from..i]);
        if bytes[i] == b'"' {
            return Ok((out, &text[i + 1..]));
        }
        let (c, len) = match bytes.get(i + 1) {
            Some(b'"') => ('"', 1),
            Some(b'\\') => ('\\', 1),
            Some(b'/') => ('/', 1),
            Some(b'n') => ('\n', 1),
            Some(b't') => ('\t', 1),
            Some(b'r') => ('\r', 1),
            Some(b'0') => ('\0', 1),
            Some(b'u') => {
                let hex = text.get(i + 2..i + 6).ok_or(Unsupported)?;
                let code = u32::from_str_radix(hex, 16).map_err(|_| Unsupported)?;
                (char::from_u32(code).ok_or(Unsupported)?, 5)
            }
            _ => return Err(Unsupported),
        };
        out.push(c);
        from = i + 1 + len;
    }
    Err(Unsupported)
}

/// Words YAML 1.1 or 1.2 readers may take for something other than a string, in any case.
const RESERVED: [&str; 12] = ["null", "true", "false", "nan", "inf", "infinity", "yes", "no", "y", "n", "on", "off"];

/// A plain scalar as YAML 1.2 resolves it: `true`, `false`, `null`, a decimal integer, or a
/// string. Anything that could be read otherwise (floats, octal, `~`, `True`, …) is left to
/// serde-saphyr.
fn scalar(text: &str) -> Fast<Value> {
    match text {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "null" => return Ok(Value::Null),
        "" => return Err(Unsupported),
        _ => {}
    }
    let bytes = text.as_bytes();
    match bytes[0] {
        b'a'..=b'z' | b'A'..=b'Z' if text.len() <= 8 && RESERVED.iter().any(|w| text.eq_ignore_ascii_case(w)) => {
            return Err(Unsupported);
        }
        b'0'..=b'9' | b'-' => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let integer = !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit());
            if integer && (digits == "0" || !digits.starts_with('0')) && text != "-0" {
                return text.parse::<i64>().map(Value::from).map_err(|_| Unsupported);
            }
            // IPs, dates, quantities (`100Mi`) are strings; what a reader might take for a
            // number is not decided here.
            if !digits.starts_with(|c: char| c.is_ascii_digit())
                || text.parse::<f64>().is_ok()
                || text.contains([':', '_'])
                || (digits.starts_with('0') && digits.as_bytes().get(1).is_some_and(u8::is_ascii_alphabetic))
            {
                return Err(Unsupported);
            }
        }
        b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\'' | b'"'
        | b'%' | b'@' | b'`' | b'~' | b'.' | b'+' => return Err(Unsupported),
        _ => {}
    }
    Ok(Value::String(text.to_owned()))
}

// === impl Flow ===

/// A flow collection on one line: `[a, b]`, `{ready: true, serving: true}`.
struct Flow<'a> {
    text: &'a str,
    pos: usize,
}

impl Flow<'_> {
    fn skip_blanks(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t']).len();
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn value(&mut self) -> Fast<Value> {
        self.skip_blanks();
        match self.peek().ok_or(Unsupported)? {
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.items(b']', |flow| {
                    items.push(flow.value()?);
                    Ok(())
                })?;
                Ok(Value::Array(items))
            }
            b'{' => {
                self.pos += 1;
                let mut map = Map::new();
                self.items(b'}', |flow| {
                    flow.skip_blanks();
                    let start = flow.pos;
                    let Value::String(key) = flow.value()? else { return Err(Unsupported) };
                    flow.skip_blanks();
                    let after = &flow.text.as_bytes()[flow.pos..];
                    if !(after.starts_with(b": ") || after.starts_with(b":\t")) || flow.pos - start > MAX_KEY {
                        return Err(Unsupported);
                    }
                    flow.pos += 1;
                    let value = flow.value()?;
                    if key == MERGE_KEY {
                        return Err(Unsupported);
                    }
                    match map.insert(key, value) {
                        None => Ok(()),
                        Some(_) => Err(Unsupported),
                    }
                })?;
                Ok(Value::Object(map))
            }
            b'"' | b'\'' => {
                let rest = &self.text[self.pos..];
                let (value, after) = quoted(rest)?;
                self.pos += rest.len() - after.len();
                Ok(Value::String(value))
            }
            _ => {
                let rest = &self.text[self.pos..];
                let bytes = rest.as_bytes();
                let mut end = rest.len();
                for (i, &b) in bytes.iter().enumerate() {
                    let stop = match b {
                        b',' | b'[' | b']' | b'{' | b'}' => true,
                        b':' => bytes.get(i + 1).is_none_or(|&n| matches!(n, b' ' | b'\t' | b',' | b']' | b'}')),
                        b'#' => i > 0 && matches!(bytes[i - 1], b' ' | b'\t'),
                        _ => false,
                    };
                    if stop {
                        end = i;
                        break;
                    }
                }
                let plain = rest[..end].trim_end_matches([' ', '\t']);
                self.pos += end;
                scalar(plain)
            }
        }
    }

    /// The items of a collection up to `close`, separated by commas (none trailing).
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Fast<()>) -> Fast<()> {
        self.skip_blanks();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            self.skip_blanks();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_blanks();
                    if self.peek() == Some(close) {
                        return Err(Unsupported);
                    }
                }
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Unsupported),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every document, read by this reader where it can, as serde-saphyr alone reads them.
    fn both(text: &str) -> (Result<Vec<Value>, String>, Result<Vec<Value>, String>) {
        let mut fast = Vec::new();
        let fast = for_each_document(text, |n, v| {
            assert_eq!(n, fast.len() + 1, "numbering");
            fast.push(v)
        })
        .map(|()| fast)
        .map_err(|(n, e)| format!("document {n}: {e}"));
        let mut slow = Vec::new();
        let slow = saphyr_documents(text, &mut |_, v| slow.push(v))
            .map(|()| slow)
            .map_err(|(n, e)| format!("document {n}: {e}"));
        (fast, slow)
    }

    /// Whether the fast reader took the document (rather than leaving it to serde-saphyr).
    fn fast(doc: &str) -> bool {
        let mut lines = Vec::new();
        document_lines(doc, &mut lines).is_ok() && Parser { lines: &mut lines, pos: 0 }.document().is_ok()
    }

    const CORPUS: &[&str] = &[
        // The load benchmark's shape.
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-0\n  namespace: ns-0\nspec:\n  clusterIP: None\n  \
         clusterIPs: [None]\n  selector: {app: svc-0}\n  ports:\n  - name: web\n    port: 80\n    protocol: TCP\n",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-0-00000\n  namespace: ns-0\n  \
         labels:\n    kubernetes.io/service-name: svc-0\naddressType: IPv4\nports:\n- name: web\n  port: 80\n  \
         protocol: TCP\nendpoints:\n- addresses: [10.0.0.0]\n  hostname: web-0\n  conditions: {ready: true, \
         serving: true, terminating: false}\n  targetRef: {kind: Pod, name: web-0, namespace: ns-0}\n",
        // kubectl's style: quoted strings, nested sequences, empty collections, comments.
        "# a comment\napiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1 # trailing\n    kind: Namespace\n    \
         metadata:\n      name: \"ns-1\"\n      labels: {}\n      annotations:\n        a: 'it''s'\n        \
         b: \"tab\\tquote\\\" \\u00e9\"\n    spec:\n      finalizers: []\n      x: null\n      w:\n",
        "a:\n  - - nested\n  -\n    b: 1\n  - c\n",
        "a: 1\nb: -2\nc: 0\nd: 007\ne: 1.5\nf: 1e3\ng: 0x1f\nh: 0o17\ni: .inf\nj: -.inf\nk: .nan\nl: 1_000\n\
         m: 99999999999999999999\nn: -0\no: +1\n",
        "a: y\nb: n\nc: yes\nd: no\ne: on\nf: off\ng: True\nh: FALSE\ni: Null\nj: NULL\nk: ~\nl: nan\nm: inf\n",
        "a: 10.0.0.1\nb: 2024-01-01\nc: 2001-12-14t21:59:43.10-05:00\nd: 100Mi\ne: 1:30\nf: fe80::1\ng: 1.2.3\n",
        "a: http://x/y#z\nb: a#b\nc: x # comment\nd: [a, 'b', \"c\", [d], {e: f}]\ne: {a: [1, 2], b: {c: d}}\n",
        "a: |\n  line\n  two\nb: >-\n  folded\n",
        "a: &x 1\nb: *x\nc: !!str 5\n",
        "a: b: c\n",
        "a: 1\na: 2\n",
        "a: multi\n  line\nb: \"quoted\n  over lines\"\n",
        "  indented: 1\n  root: 2\n",
        "- a\n- b: 1\n  c: 2\n- [x]\n",
        "just a scalar\n",
        "? complex\n: key\n",
        "{a: 1, b: [2, 3]}\n",
        "a: [1, 2,]\nb: {x}\n",
        "a: 'unterminated\n",
        "a: [1, 2\nb: 3\n",
        "\"quoted key\": 1\n'single': 2\n\"a\": {\"b\": \"c\"}\n",
        "a:\n- 1\n- 2\nb:\n  - 3\n",
        "a:\n  b:\n  c: 1\n",
        "a: \"x\" trailing\n",
        "key with spaces: v\n-dash: 1\n/slash: 2\n_u: 3\n",
        "a: -\nb: - x\n",
        "a:\tb\n",
        "a: \"\\x41\"\n",
        "é: ü\nb: 日本\n",
        // Characters YAML does not allow anywhere, a comment included (found by fuzzing).
        "#r\u{ffff}aas \na: 1\n",
        "a: 1 # \u{1}\n",
        "<<: # merge key\nb: 1\n",
        "base: \u{feff}# a byte order mark inside a line\n",
        "a: {<<: {b: 1}, c: 2}\n",
    ];

    #[test]
    fn reads_as_serde_saphyr_does() {
        for doc in CORPUS {
            let (fast, slow) = both(doc);
            assert_eq!(fast, slow, "{doc}");
        }
    }

    /// The block-wise check finds a byte YAML does not allow wherever it is: in the first or last
    /// byte of a 64-byte block, or in the short tail after the last block.
    #[test]
    fn finds_a_bad_byte_anywhere_in_the_text() {
        let naive = |t: &str| t.bytes().all(|b| matches!(b, b'\t' | b'\n' | 0x20..=0x7E));
        for len in [0, 1, 63, 64, 65, 127, 128, 200] {
            let clean = "a: b\n".repeat(41)[..len].to_string();
            assert!(ascii_printable(&clean) && printable(&clean), "{len}");
            for at in [0, 1, 62, 63, 64, 65, 127, 128, 199].into_iter().filter(|&at| at < len) {
                for bad in [0x00u8, 0x0D, 0x1F, 0x7F] {
                    let mut text = clean.clone().into_bytes();
                    text[at] = bad;
                    let text = String::from_utf8(text).unwrap();
                    assert!(!ascii_printable(&text), "byte {bad:#x} at {at} of {len}");
                    assert_eq!(printable(&text), naive(&text));
                }
            }
        }
        assert!(!ascii_printable("é") && printable("é"), "non-ASCII goes to the full check");
    }

    #[test]
    fn takes_what_manifests_are_written_in() {
        for i in [0, 1, 2, 13, 14, 17, 21, 22, 23, 29] {
            assert!(fast(CORPUS[i]), "{}", CORPUS[i]);
        }
        // Numbers in other forms, YAML 1.1 words, block scalars, anchors and tags, scalars over
        // lines, duplicate keys and errors go to serde-saphyr.
        for i in [4, 5, 8, 9, 10, 11, 12, 15, 16, 18, 19, 20] {
            assert!(!fast(CORPUS[i]), "{}", CORPUS[i]);
        }
    }

    #[test]
    fn leaves_keys_near_yamls_limit_to_serde_saphyr() {
        for n in [10, 990, 999, 1000, 1020, 1023, 1024, 1030, 1045, 1100] {
            let key = "k".repeat(n);
            let docs = [
                format!("{key}: 1\n"),
                format!("\"{key}\": 1\n"),
                format!("a: {{\"{key}\": 1}}\n"),
                format!("a: {{{key}: 1}}\n"),
                format!("a: {{b: 2,  {key} : 1}}\n"),
            ];
            for doc in docs {
                let (fast, slow) = both(&doc);
                assert_eq!(fast, slow, "a key of {n} characters: {doc}");
            }
        }
        // What the fuzzer found: a quoted key of 1,047 characters in a flow mapping.
        let (fast, slow) = both(&format!("a: {{\"{}\": 1}}\n", "k".repeat(1045)));
        assert!(slow.is_err());
        assert_eq!(fast, slow);
    }

    #[test]
    fn documents_are_numbered_and_split_as_serde_saphyr_does() {
        let docs = [
            "a: 1\n---\nb: 2\n",
            "---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n---\n",
            "a: 1\n--- # comment\nb: |\n  x\n---\nc: 3\n",
            "a: 1\n--- {b: 2}\n",
            "a: 1\n...\n---\nb: 2\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: 1\r\n---\r\nb: 2\r\n",
            "a: 1\n---\nb: [\n---\nc: 3\n",
            "a: 1\n---\nb: 2\n  c: 3\n---\nd: 4\n",
            "---a: 1\n---\nb: 2\n",
            "",
            "---\n",
        ];
        for text in docs {
            let (fast, slow) = both(text);
            assert_eq!(fast, slow, "{text}");
        }
    }

    #[test]
    fn errors_are_serde_saphyrs_for_the_whole_file() {
        let text = "a: 1\n---\nb: 2\n---\nc: [\n";
        let (fast, slow) = both(text);
        assert!(fast.is_err());
        assert_eq!(fast, slow);
    }
}
