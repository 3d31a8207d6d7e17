//! The shipped alerts: `promtool check rules` accepts the rule file,
//! `promtool test rules` exercises every alert, and every series the rules
//! and their tests name is one a real agent's `/metrics` exposes, with the
//! same label names (so an alert cannot silently watch a metric that does
//! not exist, as the old `kube2iam_*_count` mapping did).

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::Node;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/monitoring")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup-test-env.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "iamlet.rules.yaml"]);
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "iamlet.rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert of the file is exercised by the unit tests.
    let rules = std::fs::read_to_string(monitoring().join("iamlet.rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(monitoring().join("iamlet.rules.test.yaml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool test"
        );
    }
}

/// Every `iamlet_*` series named in `text`, with the matchers written
/// beside it (`label="value"`, `label!="value"`, `label=~"..."`), without
/// the labels a scrape adds (`job`, `instance`, `le`).
fn selectors(text: &str) -> Vec<(String, Vec<&str>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("iamlet_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let matchers = match tail[end..].strip_prefix('{') {
            Some(selector) => {
                let close = selector.find('}').unwrap_or(0);
                selector[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| {
                        let label = m.split(['=', '!', '~']).next().unwrap_or_default().trim();
                        !label.is_empty() && !["job", "instance", "le"].contains(&label)
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        found.push((tail[..end].to_string(), matchers));
        rest = &tail[end..];
    }
    found
}

/// Each series named in `text` with the label names written beside it.
fn named_series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, matchers) in selectors(text) {
        let labels = found.entry(name).or_default();
        for matcher in matchers {
            let label = matcher.split(['=', '!', '~']).next().unwrap_or_default();
            labels.insert(label.trim().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_alerts_use_is_one_the_agent_exposes() {
    let node = Node::start().await;
    node.add_pod("default", "app", "127.0.8.10", Some("s3-reader"));
    node.add_pod("default", "bare", "127.0.8.11", None);
    let agent = node.agent(&[]).await;
    // Traffic so that the labelled families have children.
    let creds = "/latest/meta-data/iam/security-credentials/s3-reader";
    assert_eq!(agent.get("127.0.8.10", creds).await.status, 200);
    assert_eq!(agent.get("127.0.8.11", creds).await.status, 404);
    let scrape = agent.get("127.0.0.1", "/metrics").await.body;
    let exposed = exposed_series(&scrape);

    let rules = std::fs::read_to_string(monitoring().join("iamlet.rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(monitoring().join("iamlet.rules.test.yaml")).unwrap();
    // The values the rules select on exist too (`route="credentials"`,
    // `result="error"`, and the `success` that `code!=` excludes).
    let mut checked = 0;
    for (name, label, value) in exact_matchers(&rules) {
        let wanted = format!("{label}=\"{value}\"");
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(&wanted)),
            "the alerts select {name}{{{wanted}}}, which /metrics does not have:\n{scrape}"
        );
        checked += 1;
    }
    assert!(checked >= 3, "{checked} label values checked");
    let used = named_series(&format!("{rules}\n{tests}"));
    assert!(used.len() >= 9, "{used:?}");
    for (name, labels) in used {
        let Some(has) = exposed.get(&name) else {
            panic!("the alerts use {name}, which /metrics does not expose:\n{scrape}");
        };
        // An empty family exposes no label names yet; where it has children
        // the alerts' label names must be among theirs.
        if !has.is_empty() {
            assert!(
                labels.is_subset(has),
                "{name}: alerts use labels {labels:?}, /metrics has {has:?}"
            );
        }
    }
}

/// `iamlet_*{label="value"}` and `{label!="value"}` matchers in `text`
/// (regular expressions left out): (metric, label, value).
fn exact_matchers(text: &str) -> Vec<(String, String, String)> {
    selectors(text)
        .into_iter()
        .flat_map(|(name, matchers)| {
            matchers.into_iter().filter_map(move |matcher| {
                let (label, value) = matcher.split_once('=')?;
                (!value.starts_with('~')).then(|| {
                    (
                        name.clone(),
                        label.trim().trim_end_matches('!').to_string(),
                        value.trim().trim_matches('"').to_string(),
                    )
                })
            })
        })
        .collect()
}

/// Series names and label names of an exposition: counters and
/// histograms under each name they are queried by (`_total`, `_bucket`).
fn exposed_series(scrape: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut exposed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(typed) = line.strip_prefix("# TYPE ") {
            let mut parts = typed.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            let names: Vec<String> = match kind {
                "counter" => vec![format!("{name}_total")],
                "histogram" => ["_bucket", "_count", "_sum"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                _ => vec![name.to_string()],
            };
            for name in names {
                exposed.entry(name).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            for (name, labels) in named_series(line) {
                exposed.entry(name).or_default().extend(labels);
            }
        }
    }
    exposed
}
