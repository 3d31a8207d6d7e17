//! What iamlet's tables look like in the kernel now, reduced to what the
//! agent wrote: handles and counter values (which change with traffic) are
//! left out, so two readings of untouched rules are equal.

use nftables::helper::{self, NftablesError};
use serde_json::Value;

use super::FirewallError;
use super::rules::{FAMILIES, HOST_TABLE, TABLE};

/// iamlet's tables as nft lists them, one entry per family and table
/// (`None` where the table is missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableState(Vec<Option<Value>>);

impl TableState {
    /// Reads iamlet's table in both families with `nft -j list table`, and
    /// with `host_pods` the hostNetwork pods' table too.
    pub fn read(host_pods: bool) -> Result<Self, FirewallError> {
        let names: &[&str] = if host_pods {
            &[TABLE, HOST_TABLE]
        } else {
            &[TABLE]
        };
        let mut tables = Vec::with_capacity(FAMILIES.len() * names.len());
        for (family, table) in FAMILIES
            .into_iter()
            .flat_map(|family| names.iter().map(move |table| (family, *table)))
        {
            let name = super::family_name(family);
            match helper::get_current_ruleset_raw(
                helper::DEFAULT_NFT,
                ["list", "table", name, table],
            ) {
                Ok(text) => {
                    let mut value: Value = serde_json::from_str(&text).map_err(|e| {
                        FirewallError::Nft(format!("nft printed invalid JSON: {e}"))
                    })?;
                    strip_volatile(&mut value);
                    tables.push(Some(value));
                }
                Err(NftablesError::NftFailed { stderr, .. })
                    if stderr.contains("No such file or directory") =>
                {
                    tables.push(None);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(TableState(tables))
    }

    /// Whether no family has iamlet's table.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// Whether every family has iamlet's table with at least one of its
    /// rules in it (a DNAT or a reject): what a reading right after an
    /// install must show before it is taken as the state to keep. A flush
    /// between the install and the reading would otherwise make "no rules"
    /// the state the guard defends.
    pub fn is_complete(&self) -> bool {
        self.0.iter().all(|table| {
            table.as_ref().is_some_and(|value| {
                value["nftables"].as_array().is_some_and(|objects| {
                    objects.iter().any(|object| {
                        object["rule"]["comment"]
                            .as_str()
                            .is_some_and(|c| c.starts_with("iamlet:"))
                    })
                })
            })
        })
    }

    /// How this reading differs from `expected`, in words for the log.
    pub fn difference(&self, expected: &TableState) -> Option<&'static str> {
        if self == expected {
            None
        } else if self.is_empty() {
            Some("deleted")
        } else if self.0.iter().any(Option::is_none) {
            Some("partly deleted")
        } else {
            Some("altered")
        }
    }
}

/// Removes what changes without anyone touching the rules: object handles,
/// nft's `metainfo` (its version) and counter values.
fn strip_volatile(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("handle");
            map.remove("metainfo");
            if let Some(Value::Object(counter)) = map.get_mut("counter") {
                counter.remove("packets");
                counter.remove("bytes");
            }
            for child in map.values_mut() {
                strip_volatile(child);
            }
        }
        Value::Array(items) => {
            items.retain(|item| item.get("metainfo").is_none());
            items.iter_mut().for_each(strip_volatile);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_handles_and_version_do_not_count_as_changes() {
        let listing = |packets: u64, handle: u64, version: &str| {
            let mut value = serde_json::json!({"nftables": [
                {"metainfo": {"version": version, "json_schema_version": 1}},
                {"table": {"family": "ip", "name": "iamlet", "handle": handle}},
                {"rule": {"family": "ip", "table": "iamlet", "chain": "prerouting", "handle": handle + 3,
                    "expr": [{"counter": {"packets": packets, "bytes": packets * 60}},
                             {"dnat": {"addr": "10.0.0.1", "port": 8181}}]}}
            ]});
            strip_volatile(&mut value);
            TableState(vec![Some(value), None])
        };
        let quiet = listing(0, 1, "1.0.6");
        assert_eq!(listing(9_000, 7, "1.0.9").difference(&quiet), None);
    }

    #[test]
    fn only_a_reading_with_every_familys_rules_is_complete() {
        let with_rule = Some(serde_json::json!({"nftables": [
            {"table": {"family": "ip", "name": "iamlet"}},
            {"rule": {"comment": "iamlet: pods' metadata traffic to the agent"}}
        ]}));
        let bare_table = Some(serde_json::json!({"nftables": [
            {"table": {"family": "ip6", "name": "iamlet"}}
        ]}));
        assert!(TableState(vec![with_rule.clone(), with_rule.clone()]).is_complete());
        assert!(!TableState(vec![with_rule.clone(), None]).is_complete());
        assert!(!TableState(vec![with_rule, bare_table]).is_complete());
        assert!(!TableState(vec![None, None]).is_complete());
    }

    #[test]
    fn a_changed_target_or_a_missing_table_is_a_difference() {
        let table = |port: u16| {
            let mut value = serde_json::json!({"nftables": [
                {"rule": {"expr": [{"dnat": {"addr": "10.0.0.1", "port": port}}]}}
            ]});
            strip_volatile(&mut value);
            Some(value)
        };
        let expected = TableState(vec![table(8181), table(8181)]);
        assert_eq!(
            TableState(vec![table(9999), table(8181)]).difference(&expected),
            Some("altered")
        );
        assert_eq!(
            TableState(vec![None, table(8181)]).difference(&expected),
            Some("partly deleted")
        );
        assert_eq!(
            TableState(vec![None, None]).difference(&expected),
            Some("deleted")
        );
    }
}
