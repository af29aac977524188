//! A checking parser of the OpenMetrics 1.0 text exposition
//! (<https://github.com/prometheus/OpenMetrics/blob/v1.0.0/specification/OpenMetrics.md>), for
//! tests that scrape `/metrics`: it accepts only what a scraper in OpenMetrics mode accepts, so
//! text spliced in by hand, a family declared twice, or anything after `# EOF` fails the test.

use std::collections::{BTreeMap, HashSet};

/// A sample's labels, by name.
pub type Labels = BTreeMap<String, String>;

/// One metric family: its `# TYPE`, `# HELP` and samples.
#[derive(Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    /// `(sample name, labels, value)`, in order.
    pub samples: Vec<(String, Labels, f64)>,
}

/// Parses the exposition, or says which line breaks the format and why.
pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let body = text.strip_suffix("# EOF\n").ok_or("the exposition does not end with `# EOF`")?;
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line == "# EOF" {
            return Err(at("`# EOF` before the end"));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (word, name, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
            if !is_metric_name(name) {
                return Err(at("not a metric name"));
            }
            if current.as_deref() != Some(name) {
                if families.contains_key(name) {
                    return Err(at("a family declared twice, or interleaved with another"));
                }
                families.insert(name.to_string(), Family::default());
                current = Some(name.to_string());
            }
            let family = families.get_mut(name).expect("inserted above");
            match (word, rest) {
                ("TYPE", Some(kind)) if family.kind.is_empty() && FAMILY_TYPES.contains(&kind) => {
                    family.kind = kind.to_string();
                }
                ("HELP", Some(help)) if family.help.is_none() => family.help = Some(help.to_string()),
                ("UNIT", Some(_)) => {}
                _ => return Err(at("not a TYPE, HELP or UNIT line, or one repeated")),
            }
            continue;
        }
        let family_name = current.clone().ok_or_else(|| at("a sample before any `# TYPE`"))?;
        let family = families.get_mut(&family_name).expect("current family exists");
        let (name, labels, value) = sample(line).map_err(|why| at(&why))?;
        let suffix = name.strip_prefix(family_name.as_str()).ok_or_else(|| at("a sample of another family"))?;
        if !SUFFIXES.iter().any(|(kind, allowed)| *kind == family.kind && allowed.contains(&suffix)) {
            return Err(at(&format!("suffix {suffix:?} is not one of a {}", family.kind)));
        }
        family.samples.push((name, labels, value));
    }
    for (name, family) in &families {
        if family.kind.is_empty() {
            return Err(format!("{name}: no `# TYPE`"));
        }
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(families)
}

const FAMILY_TYPES: [&str; 8] =
    ["counter", "gauge", "histogram", "gaugehistogram", "stateset", "info", "summary", "unknown"];

/// The sample names each type allows, as suffixes of the family name.
const SUFFIXES: [(&str, &[&str]); 8] = [
    ("counter", &["_total", "_created"]),
    ("gauge", &[""]),
    ("histogram", &["_bucket", "_count", "_sum", "_created"]),
    ("gaugehistogram", &["_bucket", "_gcount", "_gsum"]),
    ("stateset", &[""]),
    ("info", &["_info"]),
    ("summary", &["", "_count", "_sum", "_created"]),
    ("unknown", &[""]),
];

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{label="value",…} value`: the exposition's sample line (no timestamps or exemplars here).
fn sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("not a metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        while !rest.starts_with('}') {
            let eq = rest.find("=\"").ok_or("a label without `=\"`")?;
            let label = &rest[..eq];
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || label.is_empty() {
                return Err(format!("bad label name {label:?}"));
            }
            let (value, after) = label_value(&rest[eq + 2..])?;
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            rest = after.strip_prefix(',').unwrap_or(after);
            if !after.starts_with(',') && !after.starts_with('}') {
                return Err("labels not separated by `,`".into());
            }
        }
        rest = &rest[1..];
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("value {v:?} is not a number"))?,
    };
    Ok((name.to_string(), labels, value))
}

/// A quoted label value (after its opening quote): the unescaped value and what follows the
/// closing quote.
fn label_value(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                other => return Err(format!("bad escape {other:?}")),
            },
            '\n' => return Err("a newline in a label value".into()),
            c => value.push(c),
        }
    }
    Err("an unterminated label value".into())
}

/// A histogram series: its buckets as (bound, cumulative count), and its `_count`.
type Buckets = (Vec<(f64, f64)>, Option<f64>);

/// Buckets are cumulative and end at `le="+Inf"`, which equals `_count`, per label set.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    // Per label set, without `le`.
    let mut series: BTreeMap<Labels, Buckets> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (sample, labels, value) in &family.samples {
        let mut key = labels.clone();
        if sample.ends_with("_bucket") {
            let le = key.remove("le").ok_or(format!("{sample} without le"))?;
            let bound =
                if le == "+Inf" { f64::INFINITY } else { le.parse().map_err(|_| format!("{sample} le={le}"))? };
            series.entry(key).or_default().0.push((bound, *value));
        } else if sample.ends_with("_count") {
            series.entry(key).or_default().1 = Some(*value);
        } else if !seen.insert((sample.clone(), format!("{labels:?}"))) {
            return Err(format!("{sample}{labels:?} twice"));
        }
    }
    for (labels, (buckets, count)) in series {
        let ordered = buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let last = buckets.last().copied();
        if !ordered || last.map(|b| b.0) != Some(f64::INFINITY) || last.map(|b| b.1) != count {
            return Err(format!(
                "{name}{labels:?}: buckets {buckets:?} are not cumulative up to +Inf = _count {count:?}"
            ));
        }
    }
    Ok(())
}
