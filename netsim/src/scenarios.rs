//! The scenario files shipped in the binary, and lookup by name or path.

use std::path::Path;

use crate::config::{Scenario, ScenarioError};

/// Embedded scenario files as (name, TOML text), in the order `list` prints them.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "baseline-30ms",
        include_str!("../scenarios/baseline-30ms.toml"),
    ),
    (
        "lossy-2pct-burst3",
        include_str!("../scenarios/lossy-2pct-burst3.toml"),
    ),
    ("bursty-ge", include_str!("../scenarios/bursty-ge.toml")),
    (
        "handshake-storm-30pct",
        include_str!("../scenarios/handshake-storm-30pct.toml"),
    ),
    (
        "corrupt-2pct",
        include_str!("../scenarios/corrupt-2pct.toml"),
    ),
    (
        "blackhole-2s",
        include_str!("../scenarios/blackhole-2s.toml"),
    ),
    (
        "blackhole-30s",
        include_str!("../scenarios/blackhole-30s.toml"),
    ),
    (
        "nat-rebind-port",
        include_str!("../scenarios/nat-rebind-port.toml"),
    ),
    (
        "nat-rebind-addr",
        include_str!("../scenarios/nat-rebind-addr.toml"),
    ),
    (
        "long-rtt-1500ms",
        include_str!("../scenarios/long-rtt-1500ms.toml"),
    ),
    (
        "satellite-geo-600ms",
        include_str!("../scenarios/satellite-geo-600ms.toml"),
    ),
    ("lte-trace", include_str!("../scenarios/lte-trace.toml")),
    (
        "dsl-bufferbloat-jitter",
        include_str!("../scenarios/dsl-bufferbloat-jitter.toml"),
    ),
    (
        "chaos-reorder-dup",
        include_str!("../scenarios/chaos-reorder-dup.toml"),
    ),
];

/// Returns the TOML text of an embedded scenario.
pub fn embedded_text(name: &str) -> Option<&'static str> {
    EMBEDDED
        .iter()
        .find(|(embedded, _)| *embedded == name)
        .map(|(_, text)| *text)
}

/// Loads a scenario by embedded name, or else from a file path; returns it with its text.
pub fn load(name_or_path: &str) -> Result<(Scenario, String), ScenarioError> {
    if let Some(text) = embedded_text(name_or_path) {
        return Ok((Scenario::from_toml(text)?, text.to_owned()));
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        return Err(ScenarioError::Unknown(name_or_path.to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((Scenario::from_toml(&text)?, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LinkSpec;

    #[test]
    fn every_embedded_scenario_parses_under_its_name() {
        for (name, text) in EMBEDDED {
            let scenario = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(scenario.name, *name);
        }
    }

    #[test]
    fn every_scenario_but_lte_resolves_without_traces() {
        for (name, text) in EMBEDDED {
            let scenario = Scenario::from_toml(text).unwrap();
            let resolved = LinkSpec::resolve(&scenario, None, None);
            assert_eq!(resolved.is_ok(), *name != "lte-trace", "{name}");
        }
    }

    #[test]
    fn lte_trace_without_paths_names_field() {
        let (scenario, _) = load("lte-trace").unwrap();
        let error = LinkSpec::resolve(&scenario, None, None).unwrap_err();
        assert!(error.to_string().contains("uplink.rate.trace"), "{error}");
        assert!(error.to_string().contains("--trace-up"), "{error}");
    }

    #[test]
    fn unknown_name_is_reported() {
        let error = load("no-such-scenario").unwrap_err();
        assert!(matches!(error, ScenarioError::Unknown(_)));
    }
}
