//! The subset of JSONPath that CRD printer columns use: a chain of field
//! names and list indexes, as in `.status.archive.sizeBytes`,
//! `.status.volumes[0].name`, `.metadata.labels['volsnap.dev/schedule']` or
//! `.metadata.labels.volsnap\.dev/schedule`. An optional `$` root and `{}`
//! around the expression are accepted.

use serde_json::Value;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

/// Evaluates `path` against `value`. `None` when the path leads nowhere
/// (missing field, index out of range, wrong type) or is not in the
/// supported subset.
pub(crate) fn eval<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let steps = parse(path)?;
    let mut current = value;
    for step in &steps {
        current = match step {
            Step::Field(name) => current.as_object()?.get(name)?,
            Step::Index(i) => current.as_array()?.get(*i)?,
        };
    }
    Some(current)
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let mut path = path.trim();
    if let Some(inner) = path.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        path = inner.trim();
    }
    let path = path.strip_prefix('$').unwrap_or(path);
    let chars: Vec<char> = path.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                if name.is_empty() {
                    return None;
                }
                steps.push(Step::Field(name));
            }
            '[' => {
                let close = chars[i..].iter().position(|&c| c == ']')? + i;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                match quoted {
                    Some(name) => steps.push(Step::Field(name.to_string())),
                    None => steps.push(Step::Index(inner.parse().ok()?)),
                }
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn evaluates_simple_paths() {
        let obj = json!({
            "metadata": {"name": "a", "labels": {"volsnap.dev/schedule": "nightly"}},
            "status": {"phase": "Completed", "archive": {"sizeBytes": 123}, "volumes": [{"name": "data"}, {"name": "conf"}]}
        });
        assert_eq!(eval(&obj, ".status.archive.sizeBytes"), Some(&json!(123)));
        assert_eq!(eval(&obj, ".status.phase"), Some(&json!("Completed")));
        assert_eq!(eval(&obj, "{.metadata.name}"), Some(&json!("a")));
        assert_eq!(eval(&obj, "$.metadata.name"), Some(&json!("a")));
        assert_eq!(eval(&obj, ".status.volumes[1].name"), Some(&json!("conf")));
        assert_eq!(eval(&obj, ".metadata.labels['volsnap.dev/schedule']"), Some(&json!("nightly")));
        assert_eq!(eval(&obj, ".metadata.labels[\"volsnap.dev/schedule\"]"), Some(&json!("nightly")));
        assert_eq!(eval(&obj, r".metadata.labels.volsnap\.dev/schedule"), Some(&json!("nightly")));
        assert_eq!(eval(&obj, ""), Some(&obj));
    }

    #[test]
    fn missing_and_unsupported_paths_are_none() {
        let obj = json!({"status": {"phase": "Pending", "volumes": []}});
        assert_eq!(eval(&obj, ".status.archive.sizeBytes"), None);
        assert_eq!(eval(&obj, ".status.phase.deeper"), None);
        assert_eq!(eval(&obj, ".status.volumes[0]"), None);
        assert_eq!(eval(&obj, ".status.volumes[x]"), None);
        assert_eq!(eval(&obj, ".status..phase"), None);
        assert_eq!(eval(&obj, "status.phase"), None);
        assert_eq!(eval(&obj, ".status.volumes[0"), None);
    }
}
