//! The object store: pods, namespaces, service accounts and Events as
//! JSON, a global resourceVersion, a history of changes for watches to
//! resume from, and compaction (410 Gone).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::events;

/// Resource kinds this server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    ServiceAccount,
    /// Stored as `events.k8s.io/v1`; the core v1 API serves them converted
    /// ([`Resource::CoreEvents`]).
    Event,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Event => "Event",
        }
    }

    /// The API version objects of the kind are stored (and written) in.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Event => "events.k8s.io/v1",
            Kind::Pod | Kind::Namespace | Kind::ServiceAccount => "v1",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Event => "events",
        }
    }

    /// The resource as a real server's errors name it: `pods`, and for a
    /// kind outside the core group, `events.events.k8s.io`.
    fn qualified_plural(self) -> String {
        match self.api_version().split_once('/') {
            Some((group, _)) => format!("{}.{group}", self.plural()),
            None => self.plural().to_string(),
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// A change to an object of the kind, checked (and normalized) as a
    /// real server's validation would: `old` is the stored object on update.
    fn admit(self, key: &ObjectKey, old: Option<&Value>, object: Value) -> Result<Value, ApiError> {
        match self {
            Kind::Event => events::admit(&key.name, &key.namespace, old, object),
            Kind::Pod | Kind::Namespace | Kind::ServiceAccount => Ok(object),
        }
    }
}

/// A kind as one API serves it. Objects are stored in one form; Events are
/// served twice, as on a real server: as stored (`events.k8s.io/v1`) and
/// through the core v1 API in its older shape, which kubectl reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Stored(Kind),
    /// Events as core v1 `Event`s (read and delete only).
    CoreEvents,
}

impl Resource {
    pub fn kind(self) -> Kind {
        match self {
            Resource::Stored(kind) => kind,
            Resource::CoreEvents => Kind::Event,
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Stored(kind) => kind.api_version(),
            Resource::CoreEvents => "v1",
        }
    }

    /// A stored object as this API shows it.
    pub fn show(self, object: &Value) -> Value {
        match self {
            Resource::Stored(_) => object.clone(),
            Resource::CoreEvents => events::to_core(object),
        }
    }

    /// The fields a real API server lets `fieldSelector` name, each with
    /// where it is read in the object as this API shows it.
    fn selectable_fields(self) -> &'static [(&'static str, &'static str)] {
        const NAME: (&str, &str) = ("metadata.name", "/metadata/name");
        const NAMESPACE: (&str, &str) = ("metadata.namespace", "/metadata/namespace");
        match self {
            Resource::Stored(Kind::Pod) => &[
                NAME,
                NAMESPACE,
                ("spec.nodeName", "/spec/nodeName"),
                ("status.phase", "/status/phase"),
            ],
            Resource::Stored(Kind::Namespace) => &[NAME, ("status.phase", "/status/phase")],
            Resource::Stored(Kind::ServiceAccount) => &[NAME, NAMESPACE],
            Resource::Stored(Kind::Event) => &[
                NAME,
                NAMESPACE,
                ("regarding.kind", "/regarding/kind"),
                ("regarding.namespace", "/regarding/namespace"),
                ("regarding.name", "/regarding/name"),
                ("regarding.uid", "/regarding/uid"),
                ("regarding.apiVersion", "/regarding/apiVersion"),
                ("regarding.resourceVersion", "/regarding/resourceVersion"),
                ("regarding.fieldPath", "/regarding/fieldPath"),
                ("reason", "/reason"),
                ("reportingController", "/reportingController"),
                ("type", "/type"),
            ],
            Resource::CoreEvents => &[
                NAME,
                NAMESPACE,
                ("involvedObject.kind", "/involvedObject/kind"),
                ("involvedObject.namespace", "/involvedObject/namespace"),
                ("involvedObject.name", "/involvedObject/name"),
                ("involvedObject.uid", "/involvedObject/uid"),
                ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
                (
                    "involvedObject.resourceVersion",
                    "/involvedObject/resourceVersion",
                ),
                ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
                ("reason", "/reason"),
                ("reportingComponent", "/reportingComponent"),
                ("source", "/source/component"),
                ("type", "/type"),
            ],
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
            format!("{} \"{name}\" not found", kind.qualified_plural()),
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

    pub fn create(&mut self, key: ObjectKey, object: Value) -> Result<Value, ApiError> {
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!(
                    "{} \"{}\" already exists",
                    key.kind.qualified_plural(),
                    key.name
                ),
            ));
        }
        let mut object = key.kind.admit(&key, None, object)?;
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
    pub fn update(&mut self, key: ObjectKey, object: Value) -> Result<Value, ApiError> {
        let current = self.get(&key)?;
        let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !sent.is_empty() && sent != current["metadata"]["resourceVersion"] {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.kind.qualified_plural(),
                    key.name
                ),
            ));
        }
        let mut object = key.kind.admit(&key, Some(&current), object)?;
        for field in ["uid", "creationTimestamp"] {
            metadata_mut(&mut object).insert(field.into(), current["metadata"][field].clone());
        }
        Ok(self.store(key, object, "MODIFIED"))
    }

    /// JSON merge patch (RFC 7386); strategic merge patches are applied the
    /// same way, which is exact for the maps (annotations, labels) tests patch.
    pub fn patch(&mut self, key: ObjectKey, patch: &Value) -> Result<Value, ApiError> {
        let current = self.get(&key)?;
        let mut object = current.clone();
        merge(&mut object, patch);
        let object = key.kind.admit(&key, Some(&current), object)?;
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

    /// Matching objects in key order, as `resource` shows them, with the
    /// version they are current at.
    pub fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        selector: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|(key, _)| {
                key.kind == resource.kind() && namespace.is_none_or(|ns| key.namespace == ns)
            })
            .map(|(_, object)| resource.show(object))
            .filter(|object| selector.matches(object))
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
        object["apiVersion"] = json!(key.kind.api_version());
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

/// `fieldSelector`: comma-separated `field=value`, `field==value`,
/// `field!=value`; each term kept as (JSON pointer, value, equal).
#[derive(Clone, Debug, Default)]
pub struct FieldSelector {
    terms: Vec<(&'static str, String, bool)>,
}

impl FieldSelector {
    pub fn parse(resource: Resource, text: &str) -> Result<Self, ApiError> {
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
            let Some((_, pointer)) = resource
                .selectable_fields()
                .iter()
                .find(|(label, _)| *label == field)
            else {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("field label not supported: {field}"),
                ));
            };
            terms.push((*pointer, value.to_string(), equal));
        }
        Ok(FieldSelector { terms })
    }

    /// Whether an object, as the selector's API shows it, is selected.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(pointer, value, equal)| {
            let actual = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *equal
        })
    }
}
