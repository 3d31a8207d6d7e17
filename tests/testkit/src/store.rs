//! The object store: pods, namespaces, service accounts, Events and Nodes
//! as JSON, a global resourceVersion, a history of changes for watches to
//! resume from, and compaction (410 Gone). Writes check what a real server
//! checks: a stale resourceVersion is a 409, and a patch (merge or JSON
//! patch) may not rename or move the object it is sent to.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{events, json_patch, nodes};

/// Resource kinds this server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    ServiceAccount,
    /// Stored as `events.k8s.io/v1`; the core v1 API serves them converted
    /// ([`Resource::CoreEvents`]).
    Event,
    /// Cluster-scoped; its taints are checked as a real server checks them.
    Node,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Event => "Event",
            Kind::Node => "Node",
        }
    }

    /// The API version objects of the kind are stored (and written) in.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Event => "events.k8s.io/v1",
            Kind::Pod | Kind::Namespace | Kind::ServiceAccount | Kind::Node => "v1",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Event => "events",
            Kind::Node => "nodes",
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
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// A change to an object of the kind, checked (and normalized) as a
    /// real server's validation would: `old` is the stored object on update.
    fn admit(self, key: &ObjectKey, old: Option<&Value>, object: Value) -> Result<Value, ApiError> {
        match self {
            Kind::Event => events::admit(&key.name, &key.namespace, old, object),
            Kind::Node => nodes::admit(&key.name, object),
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
            Resource::Stored(Kind::Node) => &[NAME],
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
    /// What went wrong, where `message` is a real server's generic words
    /// (a JSON patch that does not apply is only "the server rejected our
    /// request due to an error in our request"). Never sent: it is there
    /// for tests and their failure messages.
    pub cause: Option<String>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            cause: None,
        }
    }

    /// The same error, with the reason tests see and the wire does not.
    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// A write against a stale resourceVersion (`metav1.NewConflict`).
    pub fn conflict(kind: Kind, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.qualified_plural()
            ),
        )
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
        check_version(&key, &current, &object)?;
        self.replace(key, &current, object)
    }

    /// A PATCH as a real server applies it: to the current object, then
    /// checked as an update whose body is the result. So a resourceVersion
    /// the patch leaves in place always matches, one it sets must match (or
    /// 409), and one it removes makes the write unconditional; the name and
    /// namespace may not change (400).
    pub fn apply_patch(
        &mut self,
        key: ObjectKey,
        patch_type: PatchType,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let current = self.get(&key)?;
        let object = match patch_type {
            PatchType::Json => json_patch::apply(&current, patch).map_err(|e| match e {
                json_patch::PatchError::Malformed(why) => ApiError::new(400, "BadRequest", why),
                json_patch::PatchError::NotApplied(why) => ApiError::new(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                )
                .with_cause(why),
            })?,
            PatchType::Merge | PatchType::StrategicMerge => {
                let mut object = current.clone();
                merge(&mut object, patch);
                object
            }
        };
        check_identity(&key, &object)?;
        check_version(&key, &current, &object)?;
        self.replace(key, &current, object)
    }

    /// Stores a checked replacement; uid and creation time are the old ones.
    fn replace(
        &mut self,
        key: ObjectKey,
        current: &Value,
        object: Value,
    ) -> Result<Value, ApiError> {
        let mut object = key.kind.admit(&key, Some(current), object)?;
        for field in ["uid", "creationTimestamp"] {
            metadata_mut(&mut object).insert(field.into(), current["metadata"][field].clone());
        }
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

/// A resourceVersion in a written object is a precondition: it must be
/// the current one.
fn check_version(key: &ObjectKey, current: &Value, object: &Value) -> Result<(), ApiError> {
    let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if !sent.is_empty() && sent != current["metadata"]["resourceVersion"] {
        return Err(ApiError::conflict(key.kind, &key.name));
    }
    Ok(())
}

/// A patched object must still be an object, named as the URL names it
/// and in the URL's namespace, or a real server refuses the write.
fn check_identity(key: &ObjectKey, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() || !(object["metadata"].is_object() || object["metadata"].is_null()) {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} {:?} is invalid: patch: Invalid value: the patched object is not a {} (its metadata must be an object)",
                key.kind.name(),
                key.name,
                key.kind.name()
            ),
        ));
    }
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    if name != key.name {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            ),
        ));
    }
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
    if key.kind.namespaced() && !namespace.is_empty() && namespace != key.namespace {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// How a PATCH body is read, by its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`: RFC 6902.
    Json,
    /// `application/merge-patch+json`: RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`, applied as a merge patch:
    /// exact for maps (labels, annotations) and for lists a real server
    /// replaces whole (`spec.taints`, which is what `kubectl taint` sends);
    /// the `$patch` and `$setElementOrder` directives are not read.
    StrategicMerge,
}

impl PatchType {
    /// The patch type a `Content-Type` names (parameters ignored); others
    /// get a real server's 415.
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media_type.as_str() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
            _ => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
                ),
            )),
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
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
