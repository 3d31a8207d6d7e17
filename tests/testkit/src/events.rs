//! Events, as a real API server keeps them: one stored object served by two
//! APIs. Clients of the new API (kube-rs's `Recorder`, client-go's
//! `events` recorder) write `events.k8s.io/v1` Events, and a repeat of one
//! is a patch setting its `series`; `kubectl describe` and `kubectl get
//! events` read the same objects through the core v1 API, converted to its
//! older shape (`involvedObject`, `message`, `count`, timestamps).
//!
//! Writes are checked with a real server's events.k8s.io/v1 validation and
//! its words (required fields, length limits, immutable fields, a series of
//! at least 2), so an emitter that a cluster would refuse fails here too.

use std::borrow::Cow;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::ApiError;

/// A real server's limits (`pkg/apis/core/validation/events.go`), in bytes.
const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

/// Fields a real server refuses to change on update: the events.k8s.io
/// name, and the core name its errors use (validation runs on the internal,
/// core-shaped object).
const IMMUTABLE: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("reason", "reason"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("type", "type"),
    ("eventTime", "eventTime"),
    ("action", "action"),
    ("related", "related"),
    ("reportingController", "reportingController"),
    ("reportingInstance", "reportingInstance"),
];

/// The MicroTimes of an Event: where they are, and their names in errors.
const MICRO_TIMES: &[(&str, &str)] = &[
    ("/eventTime", "eventTime"),
    ("/series/lastObservedTime", "series.lastObservedTime"),
];

/// An events.k8s.io/v1 Event about to be stored (`old`: the stored one, on
/// update or patch): its times normalized to microseconds as a real server
/// writes MicroTimes, then validated. `name` and `namespace` are the
/// request's.
pub(crate) fn admit(
    name: &str,
    namespace: &str,
    old: Option<&Value>,
    mut event: Value,
) -> Result<Value, ApiError> {
    strip_nulls(&mut event);
    for (pointer, path) in MICRO_TIMES {
        if let Some(value) = event.pointer_mut(pointer) {
            normalize_micro_time(value, path)?;
        }
    }
    let mut errors = common_errors(name, namespace, &event);
    match old {
        None => errors.extend(create_errors(&event)),
        Some(old) => errors.extend(update_errors(old, &event)),
    }
    if errors.is_empty() {
        Ok(event)
    } else {
        Err(invalid(name, &errors))
    }
}

/// The core v1 form of a stored Event, what `kubectl describe` and `kubectl
/// get events` read. Its `count`, `firstTimestamp`, `lastTimestamp` and
/// `source` are the deprecated fields when an emitter set them; otherwise,
/// unlike a real server (which leaves them empty and lets clients fall back
/// on `series` and `eventTime`), they are derived: the series' count or 1,
/// the event time, the series' last observation, the reporting controller.
pub(crate) fn to_core(event: &Value) -> Value {
    let first = stamp(&event["deprecatedFirstTimestamp"])
        .or_else(|| stamp(&event["eventTime"]))
        .map_or(Value::Null, Value::String);
    let last = stamp(&event["deprecatedLastTimestamp"])
        .or_else(|| stamp(&event["series"]["lastObservedTime"]))
        .map_or_else(|| first.clone(), Value::String);
    let count = [&event["deprecatedCount"], &event["series"]["count"]]
        .into_iter()
        .find_map(|c| c.as_i64().filter(|c| *c > 0))
        .unwrap_or(1);
    let source = match &event["deprecatedSource"] {
        Value::Object(source) if !source.is_empty() => Value::Object(source.clone()),
        _ => json!({"component": event["reportingController"]}),
    };
    let mut core = json!({
        "kind": "Event", "apiVersion": "v1",
        "metadata": event["metadata"],
        "involvedObject": or_empty(&event["regarding"]),
        "reason": event["reason"], "message": event["note"], "type": event["type"],
        "source": source, "count": count, "firstTimestamp": first, "lastTimestamp": last,
        "eventTime": event["eventTime"], "series": event["series"], "action": event["action"],
        "related": event["related"],
        "reportingComponent": event["reportingController"],
        "reportingInstance": event["reportingInstance"],
    });
    strip_nulls(&mut core);
    core
}

/// An Event in its core form, converting one in the events.k8s.io form
/// (for a Table, which is printed from the core form whichever API asks).
pub(crate) fn as_core(event: &Value) -> Cow<'_, Value> {
    if event["apiVersion"] == "v1" {
        Cow::Borrowed(event)
    } else {
        Cow::Owned(to_core(event))
    }
}

/// `legacyValidateEvent`'s checks of a new-style event (one with an
/// eventTime), on create and update alike.
fn common_errors(name: &str, namespace: &str, event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let regarding_namespace = text(&event["regarding"]["namespace"]);
    if regarding_namespace.is_empty() && !["default", "kube-system"].contains(&namespace) {
        errors.push(format!(
            "involvedObject.namespace: Invalid value: {regarding_namespace:?}: does not match event.namespace"
        ));
    }
    let controller = text(&event["reportingController"]);
    if controller.is_empty() {
        errors.push(required("reportingController"));
    } else if !is_qualified_name(controller) {
        errors.push(format!(
            "reportingController: Invalid value: {controller:?}: a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'"
        ));
    }
    errors.extend(bounded(
        event,
        "reportingInstance",
        "reportingInstance",
        REPORTING_INSTANCE_LIMIT,
    ));
    errors.extend(bounded(event, "action", "action", ACTION_LIMIT));
    errors.extend(bounded(event, "reason", "reason", REASON_LIMIT));
    if text(&event["note"]).len() > NOTE_LIMIT {
        errors.push(format!(
            "message: Invalid value: \"\": can have at most {NOTE_LIMIT} characters"
        ));
    }
    if !is_dns_subdomain(name) {
        errors.push(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    errors
}

/// A required string field of at most `limit` bytes.
fn bounded(event: &Value, field: &str, path: &str, limit: usize) -> Option<String> {
    let value = text(&event[field]);
    if value.is_empty() {
        Some(required(path))
    } else if value.len() > limit {
        Some(format!(
            "{path}: Invalid value: \"\": can have at most {limit} characters"
        ))
    } else {
        None
    }
}

/// `ValidateEventCreate`'s strict checks for the events.k8s.io/v1 API.
fn create_errors(event: &Value) -> Vec<String> {
    let mut errors = series_errors(event);
    if event["eventTime"].is_null() {
        errors.push(required("eventTime"));
    }
    let kind = text(&event["type"]);
    if kind != "Normal" && kind != "Warning" {
        errors.push(format!(
            "type: Invalid value: \"\": has invalid value: {kind}"
        ));
    }
    let unset = [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
    ];
    for (field, path) in unset {
        if !event[field].is_null() && event[field] != 0 {
            errors.push(format!("{path}: Invalid value: \"\": needs to be unset"));
        }
    }
    let source = &event["deprecatedSource"];
    if !text(&source["component"]).is_empty() || !text(&source["host"]).is_empty() {
        errors.push("source: Invalid value: \"\": needs to be unset".to_string());
    }
    errors
}

/// `ValidateEventUpdate`'s: a changed series must be valid, and what the
/// event says may not change (only the series moves on).
fn update_errors(old: &Value, event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if old["series"] != event["series"] {
        errors.extend(series_errors(event));
    }
    for (field, path) in IMMUTABLE {
        if old[field] != event[field] {
            errors.push(format!(
                "{path}: Invalid value: {}: field is immutable",
                event[field]
            ));
        }
    }
    errors
}

fn series_errors(event: &Value) -> Vec<String> {
    let series = &event["series"];
    if series.is_null() {
        return Vec::new();
    }
    let mut errors = Vec::new();
    if series["count"].as_i64().unwrap_or(0) < 2 {
        errors.push("series.count: Invalid value: \"\": should be at least 2".to_string());
    }
    if series["lastObservedTime"].is_null() {
        errors.push(required("series.lastObservedTime"));
    }
    errors
}

fn required(path: &str) -> String {
    format!("{path}: Required value")
}

/// A real server's 422 for an invalid Event: one error as it is, several
/// in brackets.
fn invalid(name: &str, errors: &[String]) -> ApiError {
    let cause = match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    ApiError::new(
        422,
        "Invalid",
        format!("Event.events.k8s.io {name:?} is invalid: {cause}"),
    )
}

/// A MicroTime as a real server writes it (`2026-01-02T03:04:05.123456Z`);
/// one it cannot read is refused as its decoder refuses it (400).
fn normalize_micro_time(value: &mut Value, path: &str) -> Result<(), ApiError> {
    let Some(sent) = value.as_str() else {
        return Ok(());
    };
    let at = parse_time(sent).ok_or_else(|| {
        ApiError::new(
            400,
            "BadRequest",
            format!("Event in version \"v1\" cannot be handled as a Event: {path}: cannot parse {sent:?} as RFC 3339"),
        )
    })?;
    *value = json!(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    ));
    Ok(())
}

/// A core `Time` (whole seconds, UTC) from a time in any RFC 3339 form.
fn stamp(value: &Value) -> Option<String> {
    let at = parse_time(value.as_str()?)?.replace_nanosecond(0).ok()?;
    at.format(&Rfc3339).ok()
}

pub(crate) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(|at| at.to_offset(time::UtcOffset::UTC))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn or_empty(value: &Value) -> Value {
    if value.is_null() {
        json!({})
    } else {
        value.clone()
    }
}

/// Top-level nulls are fields left unset, as Go's `omitempty` leaves them out.
fn strip_nulls(object: &mut Value) {
    if let Some(fields) = object.as_object_mut() {
        fields.retain(|_, value| !value.is_null());
    }
}

/// `IsQualifiedName`: `[prefix/]name`, the name at most 63 characters of
/// alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric; the
/// prefix a DNS subdomain.
fn is_qualified_name(text: &str) -> bool {
    let (prefix, name) = match text.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, text),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

/// A lowercase RFC 1123 subdomain of at most 253 characters.
fn is_dns_subdomain(text: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    text.len() <= 253 && text.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "team"},
            "eventTime": "2026-01-02T03:04:05.123456789+01:00",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "team", "uid": "u-1"},
            "reason": "RoleDenied", "note": "role r is not allowed", "type": "Warning",
            "action": "AssumeRole", "reportingController": "iamlet", "reportingInstance": "node-a",
        })
    }

    fn message(result: Result<Value, ApiError>) -> String {
        match result {
            Ok(value) => panic!("admitted: {value}"),
            Err(e) => {
                assert_eq!((e.code, e.reason), (422, "Invalid"));
                e.message
            }
        }
    }

    #[test]
    fn admits_a_good_event_with_its_times_in_microseconds() {
        let admitted = admit("web.1", "team", None, event()).expect("valid");
        assert_eq!(admitted["eventTime"], "2026-01-02T02:04:05.123456Z");
    }

    #[test]
    fn refuses_what_a_real_server_refuses_on_create() {
        let mut bad = event();
        for field in ["reason", "action", "reportingInstance", "eventTime"] {
            bad[field] = Value::Null;
        }
        bad["type"] = json!("Bogus");
        bad["deprecatedCount"] = json!(3);
        let text = message(admit("web.1", "team", None, bad));
        assert!(
            text.starts_with("Event.events.k8s.io \"web.1\" is invalid: [reportingInstance: Required value, action: Required value, reason: Required value, eventTime: Required value, type: Invalid value: \"\": has invalid value: Bogus, count: Invalid value: \"\": needs to be unset]"),
            "{text}"
        );

        let mut long = event();
        long["note"] = json!("x".repeat(NOTE_LIMIT + 1));
        let text = message(admit("web.1", "team", None, long));
        assert!(
            text.ends_with("message: Invalid value: \"\": can have at most 1024 characters"),
            "{text}"
        );

        let mut cluster_scoped = event();
        cluster_scoped["regarding"] = json!({"kind": "Node", "name": "node-a"});
        assert!(admit("web.1", "default", None, cluster_scoped.clone()).is_ok());
        let text = message(admit("web.1", "team", None, cluster_scoped));
        assert!(
            text.contains(
                "involvedObject.namespace: Invalid value: \"\": does not match event.namespace"
            ),
            "{text}"
        );

        let mut controller = event();
        controller["reportingController"] = json!("iamlet.dev/agent");
        assert!(admit("web.1", "team", None, controller.clone()).is_ok());
        controller["reportingController"] = json!("-iamlet");
        assert!(
            message(admit("web.1", "team", None, controller))
                .contains("reportingController: Invalid value")
        );
        assert!(
            message(admit("Web_1", "team", None, event())).contains("metadata.name: Invalid value")
        );
    }

    #[test]
    fn on_update_only_the_series_may_change_and_it_must_count_two_or_more() {
        let stored = admit("web.1", "team", None, event()).expect("valid");
        let mut repeat = stored.clone();
        repeat["series"] = json!({"count": 2, "lastObservedTime": "2026-01-02T02:05:00.5Z"});
        let updated = admit("web.1", "team", Some(&stored), repeat).expect("a series");
        assert_eq!(
            updated["series"]["lastObservedTime"],
            "2026-01-02T02:05:00.500000Z"
        );

        let mut one = stored.clone();
        one["series"] = json!({"count": 1});
        let text = message(admit("web.1", "team", Some(&stored), one));
        assert!(text.ends_with("[series.count: Invalid value: \"\": should be at least 2, series.lastObservedTime: Required value]"), "{text}");

        let mut edited = stored.clone();
        edited["note"] = json!("another note");
        let text = message(admit("web.1", "team", Some(&stored), edited));
        assert!(
            text.ends_with("message: Invalid value: \"another note\": field is immutable"),
            "{text}"
        );
    }

    #[test]
    fn the_core_form_carries_what_kubectl_prints() {
        let mut stored = admit("web.1", "team", None, event()).expect("valid");
        let core = to_core(&stored);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["uid"], "u-1");
        assert_eq!(core["message"], "role r is not allowed");
        assert_eq!(core["count"], 1);
        assert_eq!(core["firstTimestamp"], "2026-01-02T02:04:05Z");
        assert_eq!(core["lastTimestamp"], "2026-01-02T02:04:05Z");
        assert_eq!(core["source"], json!({"component": "iamlet"}));
        assert_eq!(core["reportingComponent"], "iamlet");
        assert_eq!(core["eventTime"], "2026-01-02T02:04:05.123456Z");
        assert!(core.get("note").is_none() && core.get("series").is_none());

        stored["series"] = json!({"count": 3, "lastObservedTime": "2026-01-02T02:09:00.000000Z"});
        let core = to_core(&stored);
        assert_eq!(core["count"], 3);
        assert_eq!(core["lastTimestamp"], "2026-01-02T02:09:00Z");
        assert_eq!(core["series"]["count"], 3);
        assert!(matches!(as_core(&core), Cow::Borrowed(_)));
    }
}
