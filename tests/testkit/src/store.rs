//! The object store: pods, namespaces and service accounts as JSON, a global
//! resourceVersion, an event history for watches to resume from, and
//! compaction (410 Gone).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Resource kinds this server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    ServiceAccount,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::ServiceAccount => "serviceaccounts",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// The fields a real API server lets `fieldSelector` name for the kind.
    fn selectable_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "status.phase",
            ],
            Kind::Namespace => &["metadata.name", "status.phase"],
            Kind::ServiceAccount => &["metadata.name", "metadata.namespace"],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// Cluster-scoped kinds have no namespace, whatever the caller passes.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: if kind.namespaced() {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub resource_version: u64,
    pub kind: Kind,
    pub event_type: &'static str,
    pub object: Value,
}

/// An API error in Kubernetes' `Status` form.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(kind: Kind, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.plural()),
        )
    }

    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}

const HISTORY_LIMIT: usize = 10_000;

pub struct State {
    pub resource_version: u64,
    pub objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Arc<StoredEvent>>,
    /// Watches asking to resume from before this version get 410 Gone.
    pub compacted_below: u64,
    next_uid: u64,
    events: broadcast::Sender<Arc<StoredEvent>>,
}

impl State {
    pub fn new(events: broadcast::Sender<Arc<StoredEvent>>) -> Self {
        State {
            resource_version: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_below: 0,
            next_uid: 1,
            events,
        }
    }

    pub fn get(&self, key: &ObjectKey) -> Result<Value, ApiError> {
        self.objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(key.kind, &key.name))
    }

    pub fn create(&mut self, key: ObjectKey, mut object: Value) -> Result<Value, ApiError> {
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", key.kind.plural(), key.name),
            ));
        }
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.next_uid);
        self.next_uid += 1;
        let meta = metadata_mut(&mut object);
        meta.entry("uid").or_insert(json!(uid));
        meta.entry("creationTimestamp")
            .or_insert(json!(now_rfc3339()));
        let namespace = (key.kind == Kind::Namespace).then(|| key.name.clone());
        let created = self.store(key, object, "ADDED");
        if let Some(namespace) = namespace {
            self.ensure_default_service_account(&namespace);
        }
        Ok(created)
    }

    /// What a real cluster's service account controller does for every new
    /// namespace, and again whenever that account is deleted: pods that name
    /// no service account run as `default`, so it has to exist for their
    /// tokens to be issued. A re-created one has a new uid, so tokens for the
    /// old one stay invalid.
    fn ensure_default_service_account(&mut self, namespace: &str) {
        let key = ObjectKey::new(Kind::ServiceAccount, namespace, "default");
        if !self.objects.contains_key(&key) {
            let _ = self.create(key, json!({"metadata": {}}));
        }
    }

    /// Replaces an object; a resourceVersion in the body must match.
    pub fn update(&mut self, key: ObjectKey, mut object: Value) -> Result<Value, ApiError> {
        let current = self.get(&key)?;
        let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !sent.is_empty() && sent != current["metadata"]["resourceVersion"] {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.kind.plural(),
                    key.name
                ),
            ));
        }
        for field in ["uid", "creationTimestamp"] {
            metadata_mut(&mut object).insert(field.into(), current["metadata"][field].clone());
        }
        Ok(self.store(key, object, "MODIFIED"))
    }

    /// JSON merge patch (RFC 7386); strategic merge patches are applied the
    /// same way, which is exact for the maps (annotations, labels) tests patch.
    pub fn patch(&mut self, key: ObjectKey, patch: &Value) -> Result<Value, ApiError> {
        let mut object = self.get(&key)?;
        merge(&mut object, patch);
        Ok(self.store(key, object, "MODIFIED"))
    }

    pub fn delete(&mut self, key: &ObjectKey) -> Result<Value, ApiError> {
        let mut object = self
            .objects
            .remove(key)
            .ok_or_else(|| ApiError::not_found(key.kind, &key.name))?;
        self.resource_version += 1;
        metadata_mut(&mut object).insert(
            "resourceVersion".into(),
            json!(self.resource_version.to_string()),
        );
        self.record(key.kind, "DELETED", object.clone());
        if key.kind == Kind::ServiceAccount && key.name == "default" {
            let namespace = ObjectKey::new(Kind::Namespace, "", &key.namespace);
            if self.objects.contains_key(&namespace) {
                self.ensure_default_service_account(&key.namespace);
            }
        }
        Ok(object)
    }

    /// Forgets the history: every watch resuming from an earlier version
    /// gets an in-stream 410 and must relist.
    pub fn compact(&mut self) {
        self.resource_version += 1;
        self.compacted_below = self.resource_version;
        self.history.clear();
    }

    /// Matching objects in key order, with the version they are current at.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|(key, object)| {
                key.kind == kind
                    && namespace.is_none_or(|ns| key.namespace == ns)
                    && selector.matches(object)
            })
            .map(|(_, object)| object.clone())
            .collect();
        (items, self.resource_version)
    }

    /// Events after `since` for a watch, or `None` if they were compacted.
    pub fn events_since(&self, since: u64) -> Option<Vec<Arc<StoredEvent>>> {
        if since < self.compacted_below {
            return None;
        }
        let oldest_kept = self.history.front().map(|e| e.resource_version);
        if oldest_kept.is_some_and(|oldest| since + 1 < oldest) {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|e| e.resource_version > since)
                .cloned()
                .collect(),
        )
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    fn store(&mut self, key: ObjectKey, mut object: Value, event_type: &'static str) -> Value {
        self.resource_version += 1;
        let meta = metadata_mut(&mut object);
        meta.insert("name".into(), json!(key.name));
        meta.insert(
            "resourceVersion".into(),
            json!(self.resource_version.to_string()),
        );
        if key.kind.namespaced() {
            meta.insert("namespace".into(), json!(key.namespace));
        } else {
            meta.remove("namespace");
        }
        object["kind"] = json!(key.kind.name());
        object["apiVersion"] = json!("v1");
        self.objects.insert(key.clone(), object.clone());
        self.record(key.kind, event_type, object.clone());
        object
    }

    fn record(&mut self, kind: Kind, event_type: &'static str, object: Value) {
        let event = Arc::new(StoredEvent {
            resource_version: self.resource_version,
            kind,
            event_type,
            object,
        });
        self.history.push_back(event.clone());
        while self.history.len() > HISTORY_LIMIT {
            self.history.pop_front();
        }
        // Sent under the state lock: a watch that subscribed under the lock
        // sees every later event exactly once.
        let _ = self.events.send(event);
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "2026-01-01T00:00:00Z".to_string())
}

fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    match object["metadata"].as_object_mut() {
        Some(meta) => meta,
        None => unreachable!("metadata was just made an object"),
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(target) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// `fieldSelector`: comma-separated `path=value`, `path==value`, `path!=value`.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector {
    terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    pub fn parse(kind: Kind, text: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("invalid field selector {term:?}"),
                ));
            };
            if !kind.selectable_fields().contains(&field) {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("field label not supported: {field}"),
                ));
            }
            terms.push((field.to_string(), value.to_string(), equal));
        }
        Ok(FieldSelector { terms })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, value, equal)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = object
                .pointer(&pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *equal
        })
    }
}
