//! `netsim compare`: the numbers that differ between two `summary.json` files.

use serde_json::Value;

/// One number that differs between two summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Dotted path, for example `transports.quic.quiet.latency_ms.p99`.
    pub path: String,
    /// Value in the first summary; `None` when the path is missing there.
    pub first: Option<f64>,
    /// Value in the second summary; `None` when the path is missing there.
    pub second: Option<f64>,
}

/// Lists every number of `first` and `second` that differs, in path order.
pub fn differences(first: &Value, second: &Value) -> Vec<Difference> {
    let mut left = Vec::new();
    let mut right = Vec::new();
    collect_numbers(first, String::new(), &mut left);
    collect_numbers(second, String::new(), &mut right);
    let left: std::collections::BTreeMap<_, _> = left.into_iter().collect();
    let right: std::collections::BTreeMap<_, _> = right.into_iter().collect();

    let mut paths: Vec<&String> = left.keys().chain(right.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| {
            let first = left.get(path).copied();
            let second = right.get(path).copied();
            (first != second).then(|| Difference {
                path: path.clone(),
                first,
                second,
            })
        })
        .collect()
}

fn collect_numbers(value: &Value, path: String, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Number(number) => {
            if let Some(number) = number.as_f64() {
                out.push((path, number));
            }
        }
        Value::Object(fields) => {
            for (key, child) in fields {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect_numbers(child, child_path, out);
            }
        }
        _ => {}
    }
}

/// Returns a warning for each text field, such as the scenario, that differs between the
/// two summaries: their numbers are then not from the same conditions.
pub fn condition_warnings(first: &Value, second: &Value) -> Vec<String> {
    ["scenario", "version"]
        .into_iter()
        .filter_map(|field| {
            let (left, right) = (first.get(field), second.get(field));
            (left != right).then(|| {
                let show =
                    |value: Option<&Value>| value.map_or("(none)".to_owned(), Value::to_string);
                format!("{field} differs: {} against {}", show(left), show(right))
            })
        })
        .collect()
}

/// Formats the differences as a table with the change in percent.
pub fn format(differences: &[Difference]) -> String {
    use std::fmt::Write as _;

    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<48} {:>12} {:>12} {:>10}",
        "path", "first", "second", "change"
    );
    for difference in differences {
        let show = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let change = match (difference.first, difference.second) {
            (Some(first), Some(second)) if first != 0.0 => {
                format!("{:+.1} %", (second - first) / first.abs() * 100.0)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            text,
            "{:<48} {:>12} {:>12} {:>10}",
            difference.path,
            show(difference.first),
            show(difference.second),
            change
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn differences_list_changed_numbers() {
        let first = json!({"seed": 1, "transports": {"quic": {"latency_ms": {"p99": 40.0}}}});
        let second = json!({"seed": 1, "transports": {"quic": {"latency_ms": {"p99": 50.0}}}});
        let found = differences(&first, &second);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "transports.quic.latency_ms.p99");
        assert_eq!(found[0].first, Some(40.0));
        assert_eq!(found[0].second, Some(50.0));
        assert!(format(&found).contains("+25.0 %"));
    }

    #[test]
    fn differences_include_missing_paths() {
        let first = json!({"transports": {"ws": {"lost": 0}}});
        let second = json!({"transports": {}});
        let found = differences(&first, &second);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].second, None);
    }

    #[test]
    fn equal_summaries_have_no_differences() {
        let summary = json!({"scenario": "baseline-30ms", "seed": 4});
        assert!(differences(&summary, &summary).is_empty());
    }

    #[test]
    fn condition_warnings_name_the_field() {
        let first = json!({"scenario": "lossy-2pct-burst3", "version": "0.1.0"});
        let second = json!({"scenario": "baseline-30ms", "version": "0.1.0"});
        let warnings = condition_warnings(&first, &second);
        assert_eq!(
            warnings,
            vec![r#"scenario differs: "lossy-2pct-burst3" against "baseline-30ms""#.to_owned()]
        );
        assert!(condition_warnings(&first, &first).is_empty());
    }
}
