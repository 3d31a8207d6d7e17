//! Kubernetes' protobuf encoding, read as far as kubectl needs it.
//!
//! kubectl's typed commands (`create serviceaccount`, `create namespace`,
//! `create token`) send `application/vnd.kubernetes.protobuf` bodies and
//! do not fall back to JSON, so the server reads them: the `k8s\0` envelope
//! (a `runtime.Unknown` naming apiVersion and kind) around the object's
//! own message, turned into the JSON a client would have sent. Only the
//! kinds such commands create are known; others are refused with 415, as
//! for a media type the server does not speak. Replies stay JSON, which
//! every client accepts.

use serde_json::{Map, Value, json};

use crate::store::ApiError;

pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// How a field of a message is read into JSON.
#[derive(Clone, Copy)]
enum Field {
    /// A string; empty ones are left out, as JSON's `omitempty` does.
    Str,
    /// An integer; zero is left out.
    Int,
    /// An integer behind a pointer in Go: present means sent, zero too.
    OptInt,
    Bool,
    /// `meta.v1.Time`: seconds and nanos, as RFC 3339.
    Time,
    Msg(Schema),
    RepStr,
    RepMsg(Schema),
    /// `map<string, string>` (labels, annotations).
    StrMap,
}

/// A message's fields by number: (number, JSON name, how to read it).
type Schema = &'static [(u64, &'static str, Field)];

const OBJECT_META: Schema = &[
    (1, "name", Field::Str),
    (2, "generateName", Field::Str),
    (3, "namespace", Field::Str),
    (5, "uid", Field::Str),
    (6, "resourceVersion", Field::Str),
    (7, "generation", Field::Int),
    (8, "creationTimestamp", Field::Time),
    (11, "labels", Field::StrMap),
    (12, "annotations", Field::StrMap),
    (13, "ownerReferences", Field::RepMsg(OWNER_REFERENCE)),
    (14, "finalizers", Field::RepStr),
];

const OWNER_REFERENCE: Schema = &[
    (1, "kind", Field::Str),
    (3, "name", Field::Str),
    (4, "uid", Field::Str),
    (5, "apiVersion", Field::Str),
    (6, "controller", Field::Bool),
    (7, "blockOwnerDeletion", Field::Bool),
];

const OBJECT_REFERENCE: Schema = &[
    (1, "kind", Field::Str),
    (2, "namespace", Field::Str),
    (3, "name", Field::Str),
    (4, "uid", Field::Str),
    (5, "apiVersion", Field::Str),
];

const LOCAL_OBJECT_REFERENCE: Schema = &[(1, "name", Field::Str)];

const SERVICE_ACCOUNT: Schema = &[
    (1, "metadata", Field::Msg(OBJECT_META)),
    (2, "secrets", Field::RepMsg(OBJECT_REFERENCE)),
    (3, "imagePullSecrets", Field::RepMsg(LOCAL_OBJECT_REFERENCE)),
    (4, "automountServiceAccountToken", Field::Bool),
];

const NAMESPACE: Schema = &[
    (1, "metadata", Field::Msg(OBJECT_META)),
    (2, "spec", Field::Msg(&[(1, "finalizers", Field::RepStr)])),
];

const TOKEN_REQUEST: Schema = &[
    (1, "metadata", Field::Msg(OBJECT_META)),
    (
        2,
        "spec",
        Field::Msg(&[
            (1, "audiences", Field::RepStr),
            (3, "boundObjectRef", Field::Msg(BOUND_OBJECT_REFERENCE)),
            (4, "expirationSeconds", Field::OptInt),
        ]),
    ),
];

const BOUND_OBJECT_REFERENCE: Schema = &[
    (1, "kind", Field::Str),
    (2, "apiVersion", Field::Str),
    (3, "name", Field::Str),
    (4, "uid", Field::Str),
];

const TOKEN_REVIEW: Schema = &[
    (1, "metadata", Field::Msg(OBJECT_META)),
    (
        2,
        "spec",
        Field::Msg(&[(1, "token", Field::Str), (2, "audiences", Field::RepStr)]),
    ),
];

/// The JSON form of a protobuf request body.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("the body does not start with the k8s protobuf prefix"))?;
    // runtime.Unknown: typeMeta 1, raw 2, contentEncoding 3.
    let (mut type_meta, mut raw, mut encoding) = (Value::Null, &[][..], "");
    for (number, wire) in fields(envelope)? {
        match (number, wire) {
            (1, Wire::Bytes(bytes)) => type_meta = read_message(bytes, TYPE_META)?,
            (2, Wire::Bytes(bytes)) => raw = bytes,
            (3, Wire::Bytes(bytes)) => encoding = text(bytes)?,
            _ => {}
        }
    }
    let api_version = type_meta["apiVersion"].as_str().unwrap_or("");
    let kind = type_meta["kind"].as_str().unwrap_or("");
    if !encoding.is_empty() {
        return Err(unsupported(kind));
    }
    let schema = match kind {
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Namespace" => NAMESPACE,
        "TokenRequest" => TOKEN_REQUEST,
        "TokenReview" => TOKEN_REVIEW,
        _ => return Err(unsupported(kind)),
    };
    let mut object = read_message(raw, schema)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

const TYPE_META: Schema = &[(1, "apiVersion", Field::Str), (2, "kind", Field::Str)];

fn read_message(bytes: &[u8], schema: Schema) -> Result<Value, ApiError> {
    let mut object = Map::new();
    for (number, wire) in fields(bytes)? {
        if let Some((_, name, field)) = schema.iter().find(|(n, ..)| *n == number) {
            store(&mut object, name, *field, wire)?;
        }
    }
    Ok(Value::Object(object))
}

/// A message's fields in order: number and value (fixed-width ones, which
/// none of the known messages use, are skipped).
fn fields(mut bytes: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            0 => Wire::Varint(read_varint(&mut bytes)?),
            2 => {
                let length = usize::try_from(read_varint(&mut bytes)?)
                    .map_err(|_| bad("a length does not fit"))?;
                let (head, tail) = bytes
                    .split_at_checked(length)
                    .ok_or_else(|| bad("a field runs past the end"))?;
                bytes = tail;
                Wire::Bytes(head)
            }
            1 | 5 => {
                let width = if wire_type == 1 { 8 } else { 4 };
                bytes = bytes
                    .get(width..)
                    .ok_or_else(|| bad("a fixed field runs past the end"))?;
                continue;
            }
            _ => return Err(bad("an unknown wire type")),
        };
        fields.push((number, value));
    }
    Ok(fields)
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn store(
    object: &mut Map<String, Value>,
    name: &str,
    field: Field,
    value: Wire<'_>,
) -> Result<(), ApiError> {
    let put = |object: &mut Map<String, Value>, value: Value| {
        object.insert(name.to_string(), value);
    };
    match (field, value) {
        (Field::Str, Wire::Bytes(bytes)) => {
            let text = text(bytes)?;
            if !text.is_empty() {
                put(object, json!(text));
            }
        }
        (Field::Int, Wire::Varint(0)) => {}
        (Field::Int | Field::OptInt, Wire::Varint(n)) => put(object, json!(n as i64)),
        (Field::Bool, Wire::Varint(n)) => put(object, json!(n != 0)),
        (Field::Time, Wire::Bytes(bytes)) => {
            if let Some(time) = read_time(bytes)? {
                put(object, json!(time));
            }
        }
        (Field::Msg(schema), Wire::Bytes(bytes)) => {
            let message = read_message(bytes, schema)?;
            if message.as_object().is_some_and(|m| !m.is_empty()) {
                put(object, message);
            }
        }
        (Field::RepStr, Wire::Bytes(bytes)) => push(object, name, json!(text(bytes)?)),
        (Field::RepMsg(schema), Wire::Bytes(bytes)) => {
            push(object, name, read_message(bytes, schema)?)
        }
        (Field::StrMap, Wire::Bytes(bytes)) => {
            let entry = read_message(bytes, &[(1, "k", Field::Str), (2, "v", Field::Str)])?;
            let key = entry["k"].as_str().unwrap_or_default().to_string();
            let value = entry["v"].as_str().unwrap_or_default();
            let map = object.entry(name).or_insert_with(|| json!({}));
            if let Some(map) = map.as_object_mut() {
                map.insert(key, json!(value));
            }
        }
        _ => return Err(bad(&format!("field {name} has the wrong wire type"))),
    }
    Ok(())
}

fn push(object: &mut Map<String, Value>, name: &str, item: Value) {
    let list = object.entry(name).or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.push(item);
    }
}

/// `meta.v1.Time` (seconds 1, nanos 2); the zero time is no time.
fn read_time(bytes: &[u8]) -> Result<Option<String>, ApiError> {
    let time = read_message(bytes, &[(1, "s", Field::Int), (2, "n", Field::Int)])?;
    let seconds = time["s"].as_i64().unwrap_or(0);
    if seconds == 0 {
        return Ok(None);
    }
    Ok(time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }))
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, ApiError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes
            .split_first()
            .ok_or_else(|| bad("a varint runs past the end"))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(bad("a varint is too long"))
}

fn text(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|_| bad("a string is not UTF-8"))
}

fn bad(why: &str) -> ApiError {
    ApiError::new(400, "BadRequest", format!("invalid protobuf body: {why}"))
}

fn unsupported(kind: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "this test server reads protobuf only for ServiceAccount, Namespace, TokenRequest and TokenReview, not {kind:?}; send JSON"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl create serviceaccount app` sends.
    const KUBECTL_SERVICE_ACCOUNT: &[u8] = b"k8s\x00\n\x14\n\x02v1\x12\x0eServiceAccount\x12\x15\n\x13\n\x03app\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x1a\x00\"\x00";

    #[test]
    fn reads_kubectls_service_account() {
        let object = decode(KUBECTL_SERVICE_ACCOUNT).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}})
        );
    }

    #[test]
    fn reads_maps_repeated_fields_and_integers() {
        // TokenRequest{spec{audiences: [a, b], boundObjectRef{kind: Pod, name: web}, expirationSeconds: 600}}
        let bound = [b"\x0a\x03Pod".as_slice(), b"\x1a\x03web"].concat();
        let spec = [
            b"\x0a\x01a".as_slice(),
            b"\x0a\x01b",
            &[0x1a, bound.len() as u8],
            &bound,
            b"\x20\xd8\x04",
        ]
        .concat();
        let raw = [&[0x12, spec.len() as u8], spec.as_slice()].concat();
        let type_meta = b"\x0a\x18authentication.k8s.io/v1\x12\x0cTokenRequest";
        let body = [
            MAGIC,
            &[0x0a, type_meta.len() as u8],
            type_meta,
            &[0x12, raw.len() as u8],
            &raw,
        ]
        .concat();
        let object = decode(&body).unwrap();
        assert_eq!(object["kind"], "TokenRequest");
        assert_eq!(
            object["spec"],
            json!({"audiences": ["a", "b"], "boundObjectRef": {"kind": "Pod", "name": "web"}, "expirationSeconds": 600})
        );

        // ObjectMeta{annotations: {k: v}}
        let entry = b"\x0a\x01k\x12\x01v";
        let meta = [&[0x62, entry.len() as u8], entry.as_slice()].concat();
        let object = read_message(
            &[&[0x0a, meta.len() as u8], meta.as_slice()].concat(),
            SERVICE_ACCOUNT,
        )
        .unwrap();
        assert_eq!(object["metadata"]["annotations"], json!({"k": "v"}));
    }

    #[test]
    fn refuses_kinds_it_cannot_read_and_broken_bodies() {
        let pod = b"k8s\x00\n\x09\n\x02v1\x12\x03Pod\x12\x00";
        assert_eq!(decode(pod).map_err(|e| e.code).err(), Some(415));
        assert_eq!(decode(b"{}").map_err(|e| e.code).err(), Some(400));
        assert_eq!(
            decode(b"k8s\x00\n\xff").map_err(|e| e.code).err(),
            Some(400)
        );
    }
}
