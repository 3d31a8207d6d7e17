//! JSON Patch (RFC 6902) and JSON Pointer (RFC 6901), as a PATCH with
//! `Content-Type: application/json-patch+json` applies them.
//!
//! A patch is applied to a copy, operation by operation, so a failure at
//! any step leaves the stored object as it was (the RFC's atomicity). The
//! two kinds of failure are kept apart because a real API server answers
//! them differently: a body that is not an array of objects never decodes
//! as a patch (400), while everything found while applying it (an unknown
//! `op`, a bad pointer, a missing target, a failed `test`) is a 422 whose
//! words are generic; the reason is kept here for tests to read.

use std::fmt;

use serde_json::Value;

/// Why a patch was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchError {
    /// The body is not a JSON Patch document (an array of objects).
    Malformed(String),
    /// An operation does not apply to the document.
    NotApplied(String),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::Malformed(why) | PatchError::NotApplied(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for PatchError {}

/// `document` with `patch` applied, or why not (`document` is untouched
/// either way). Operations are read as they are reached, as a real server
/// does: an unknown `op` after a failing `test` is not what is reported.
pub fn apply(document: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Some(operations) = patch.as_array() else {
        return Err(PatchError::Malformed(format!(
            "a JSON patch is an array of operations, not {}",
            type_name(patch)
        )));
    };
    if let Some(index) = operations.iter().position(|op| !op.is_object()) {
        return Err(PatchError::Malformed(format!(
            "operation {index} of the JSON patch is {}, not an object",
            type_name(&operations[index])
        )));
    }
    let mut document = document.clone();
    for (index, operation) in operations.iter().enumerate() {
        Operation::parse(operation)
            .and_then(|operation| operation.apply(&mut document))
            .map_err(|why| PatchError::NotApplied(format!("operation {index}: {why}")))?;
    }
    Ok(document)
}

/// One operation of a patch, its pointers parsed.
#[derive(Debug)]
enum Operation {
    Add { path: Pointer, value: Value },
    Remove { path: Pointer },
    Replace { path: Pointer, value: Value },
    Move { from: Pointer, path: Pointer },
    Copy { from: Pointer, path: Pointer },
    Test { path: Pointer, value: Value },
}

impl Operation {
    /// Members other than `op`, `path`, `from` and `value` are ignored, as
    /// the RFC says they must be.
    fn parse(object: &Value) -> Result<Operation, String> {
        let op = object["op"].as_str().unwrap_or("<missing>");
        let pointer = |member: &str| match &object[member] {
            Value::String(text) => Pointer::parse(text),
            Value::Null => Err(format!("{op} needs a \"{member}\" member")),
            other => Err(format!(
                "\"{member}\" must be a JSON pointer string, not {}",
                type_name(other)
            )),
        };
        let value = || {
            object
                .get("value")
                .cloned()
                .ok_or_else(|| format!("{op} needs a \"value\" member"))
        };
        Ok(match op {
            "add" => Operation::Add {
                path: pointer("path")?,
                value: value()?,
            },
            "remove" => Operation::Remove {
                path: pointer("path")?,
            },
            "replace" => Operation::Replace {
                path: pointer("path")?,
                value: value()?,
            },
            "move" => Operation::Move {
                from: pointer("from")?,
                path: pointer("path")?,
            },
            "copy" => Operation::Copy {
                from: pointer("from")?,
                path: pointer("path")?,
            },
            "test" => Operation::Test {
                path: pointer("path")?,
                value: value()?,
            },
            other => return Err(format!("unexpected kind of operation: {other}")),
        })
    }

    fn apply(self, document: &mut Value) -> Result<(), String> {
        match self {
            Operation::Add { path, value } => add(document, &path, value),
            Operation::Remove { path } => remove(document, &path).map(drop),
            Operation::Replace { path, value } => {
                let target = target_mut(document, &path)
                    .ok_or_else(|| format!("replace: {} does not exist", path.text))?;
                *target = value;
                Ok(())
            }
            Operation::Move { from, path } => {
                if from.is_proper_prefix_of(&path) {
                    return Err(format!(
                        "move: {} cannot be moved into its own child {}",
                        from.text, path.text
                    ));
                }
                let value = remove(document, &from)
                    .map_err(|_| format!("move: {} does not exist", from.text))?;
                add(document, &path, value)
            }
            Operation::Copy { from, path } => {
                let value = target(document, &from)
                    .cloned()
                    .ok_or_else(|| format!("copy: {} does not exist", from.text))?;
                add(document, &path, value)
            }
            Operation::Test { path, value } => match target(document, &path) {
                Some(found) if equal(found, &value) => Ok(()),
                None if value.is_null() && member_may_be_absent(document, &path) => Ok(()),
                Some(_) | None => Err(format!("testing value {} failed: test failed", path.text)),
            },
        }
    }
}

/// Whether the pointer names a member of an object that exists. A real
/// server tests against the object as its Go type encodes it, where an
/// empty field is left out rather than written as `null`; its patch library
/// therefore takes a missing member as equal to `null` (an absent
/// `spec.taints` passes a test for `null`). RFC 6902 alone would fail it.
fn member_may_be_absent(document: &Value, pointer: &Pointer) -> bool {
    pointer
        .split_last()
        .is_some_and(|(parent, _)| walk(document, parent).is_some_and(Value::is_object))
}

/// A JSON Pointer (RFC 6901): its text, for messages, and its reference
/// tokens with `~1` and `~0` unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    fn parse(text: &str) -> Result<Pointer, String> {
        let tokens = if text.is_empty() {
            Vec::new()
        } else {
            let rest = text
                .strip_prefix('/')
                .ok_or_else(|| format!("JSON pointer {text:?} does not start with '/'"))?;
            rest.split('/')
                .map(|token| {
                    unescape(token).ok_or_else(|| {
                        format!("JSON pointer {text:?} has a '~' not followed by 0 or 1")
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    fn is_proper_prefix_of(&self, other: &Pointer) -> bool {
        self.tokens.len() < other.tokens.len() && other.tokens.starts_with(&self.tokens)
    }

    /// The pointer to the parent, and the last token; `None` for the root.
    fn split_last(&self) -> Option<(&[String], &str)> {
        self.tokens
            .split_last()
            .map(|(last, parent)| (parent, last.as_str()))
    }
}

/// `~1` is `/` and `~0` is `~`, read left to right (so `~01` is `~1`).
fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// An array index token: digits without leading zeros, below `len`, or
/// (where `end` is allowed, for `add`) `-` or `len` itself for the end.
fn array_index(token: &str, len: usize, end: bool) -> Result<usize, String> {
    if token == "-" {
        return if end {
            Ok(len)
        } else {
            Err("\"-\" names no element of the array".to_string())
        };
    }
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return Err(format!("{token:?} is not an array index"));
    }
    let index: usize = token
        .parse()
        .map_err(|_| format!("{token:?} is not an array index"))?;
    let limit = if end { len } else { len.saturating_sub(1) };
    if index > limit || (!end && len == 0) {
        return Err(format!(
            "index {index} is out of bounds of an array of {len}"
        ));
    }
    Ok(index)
}

/// The value a sequence of tokens names, if it exists.
fn walk<'a>(document: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens
        .iter()
        .try_fold(document, |value, token| match value {
            Value::Object(map) => map.get(token),
            Value::Array(items) => array_index(token, items.len(), false)
                .ok()
                .and_then(|i| items.get(i)),
            _ => None,
        })
}

fn walk_mut<'a>(document: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens
        .iter()
        .try_fold(document, |value, token| match value {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => {
                let index = array_index(token, items.len(), false).ok()?;
                items.get_mut(index)
            }
            _ => None,
        })
}

fn target<'a>(document: &'a Value, pointer: &Pointer) -> Option<&'a Value> {
    walk(document, &pointer.tokens)
}

fn target_mut<'a>(document: &'a mut Value, pointer: &Pointer) -> Option<&'a mut Value> {
    walk_mut(document, &pointer.tokens)
}

/// `add`: the root is replaced; an object member is set (replaced if it
/// was there); an array element is inserted before the index (`-`: at the
/// end). The parent must exist.
fn add(document: &mut Value, pointer: &Pointer, value: Value) -> Result<(), String> {
    let Some((parent, last)) = pointer.split_last() else {
        *document = value;
        return Ok(());
    };
    match walk_mut(document, parent) {
        Some(Value::Object(map)) => {
            map.insert(last.to_string(), value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = array_index(last, items.len(), true)
                .map_err(|why| format!("add to {}: {why}", pointer.text))?;
            items.insert(index, value);
            Ok(())
        }
        Some(other) => Err(format!(
            "add to {}: the parent is {}, not an object or array",
            pointer.text,
            type_name(other)
        )),
        None => Err(format!(
            "add to {}: the parent does not exist",
            pointer.text
        )),
    }
}

/// `remove`: the value at the pointer, which must exist, taken out.
fn remove(document: &mut Value, pointer: &Pointer) -> Result<Value, String> {
    let Some((parent, last)) = pointer.split_last() else {
        return Err("remove: the whole document cannot be removed".to_string());
    };
    let missing = || format!("remove: {} does not exist", pointer.text);
    match walk_mut(document, parent) {
        Some(Value::Object(map)) => map.remove(last).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let index = array_index(last, items.len(), false)
                .map_err(|why| format!("remove {}: {why}", pointer.text))?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

/// The RFC's equality: numbers by value (`1` equals `1.0`), objects
/// regardless of member order, arrays element by element.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| equal(x, y)))
        }
        _ => a == b,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn applied(document: Value, patch: Value) -> Value {
        apply(&document, &patch).unwrap_or_else(|e| panic!("{patch}: {e}"))
    }

    fn refused(document: Value, patch: Value) -> String {
        match apply(&document, &patch) {
            Err(PatchError::NotApplied(why)) => why,
            other => panic!("{patch}: expected NotApplied, got {other:?}"),
        }
    }

    #[test]
    fn add_sets_members_and_inserts_elements() {
        let doc = json!({"fruit": "apple", "list": ["x", "z"]});
        let patch = json!([
            {"op": "add", "path": "/colour", "value": "red"},
            {"op": "add", "path": "/fruit", "value": "pear"},
            {"op": "add", "path": "/list/1", "value": "y"},
            {"op": "add", "path": "/list/-", "value": "end"},
            {"op": "add", "path": "/list/0", "value": ["nested"]},
            {"op": "add", "path": "/list/5", "value": "after the end"},
        ]);
        assert_eq!(
            applied(doc, patch),
            json!({"fruit": "pear", "colour": "red",
                   "list": [["nested"], "x", "y", "z", "end", "after the end"]})
        );
    }

    #[test]
    fn add_needs_an_existing_parent_and_an_index_in_bounds() {
        let doc = json!({"a": {"b": 1}, "list": [1, 2]});
        refused(
            doc.clone(),
            json!([{"op": "add", "path": "/missing/x", "value": 1}]),
        );
        refused(
            doc.clone(),
            json!([{"op": "add", "path": "/list/3", "value": 1}]),
        );
        refused(
            doc.clone(),
            json!([{"op": "add", "path": "/list/01", "value": 1}]),
        );
        refused(
            doc.clone(),
            json!([{"op": "add", "path": "/a/b/c", "value": 1}]),
        );
        refused(doc, json!([{"op": "add", "path": "/a"}]));
    }

    #[test]
    fn add_at_the_root_replaces_the_document() {
        let doc = json!({"a": 1});
        assert_eq!(
            applied(doc, json!([{"op": "add", "path": "", "value": [1]}])),
            json!([1])
        );
    }

    #[test]
    fn remove_takes_members_and_elements_out() {
        let doc = json!({"keep": 1, "drop": 2, "list": ["a", "b", "c"]});
        let patch = json!([
            {"op": "remove", "path": "/drop"},
            {"op": "remove", "path": "/list/1"},
        ]);
        assert_eq!(applied(doc, patch), json!({"keep": 1, "list": ["a", "c"]}));
    }

    #[test]
    fn remove_of_what_is_not_there_fails() {
        let doc = json!({"list": ["a"]});
        refused(doc.clone(), json!([{"op": "remove", "path": "/nothing"}]));
        refused(doc.clone(), json!([{"op": "remove", "path": "/list/1"}]));
        refused(doc.clone(), json!([{"op": "remove", "path": "/list/-"}]));
        refused(doc, json!([{"op": "remove", "path": ""}]));
    }

    #[test]
    fn replace_needs_the_target_to_exist() {
        let doc = json!({"a": {"b": [1, 2]}});
        assert_eq!(
            applied(
                doc.clone(),
                json!([{"op": "replace", "path": "/a/b/0", "value": {"x": null}}])
            ),
            json!({"a": {"b": [{"x": null}, 2]}})
        );
        assert_eq!(
            applied(
                doc.clone(),
                json!([{"op": "replace", "path": "", "value": 3}])
            ),
            json!(3)
        );
        refused(
            doc.clone(),
            json!([{"op": "replace", "path": "/a/c", "value": 1}]),
        );
        refused(
            doc,
            json!([{"op": "replace", "path": "/a/b/2", "value": 1}]),
        );
    }

    #[test]
    fn move_removes_then_adds() {
        let doc = json!({"from": {"inner": "v", "other": 1}, "to": {}, "list": [1, 2, 3, 4]});
        let patch = json!([
            {"op": "move", "from": "/from/inner", "path": "/to/inner"},
            {"op": "move", "from": "/list/0", "path": "/list/3"},
        ]);
        assert_eq!(
            applied(doc.clone(), patch),
            json!({"from": {"other": 1}, "to": {"inner": "v"}, "list": [2, 3, 4, 1]})
        );
        refused(
            doc.clone(),
            json!([{"op": "move", "from": "/from", "path": "/from/child"}]),
        );
        refused(
            doc,
            json!([{"op": "move", "from": "/nothing", "path": "/x"}]),
        );
    }

    #[test]
    fn move_to_itself_changes_nothing() {
        let doc = json!({"a": {"b": 1}});
        assert_eq!(
            applied(
                doc.clone(),
                json!([{"op": "move", "from": "/a", "path": "/a"}])
            ),
            doc
        );
    }

    #[test]
    fn copy_duplicates_a_value() {
        let doc = json!({"a": {"b": [1]}, "list": [0]});
        let patch = json!([
            {"op": "copy", "from": "/a", "path": "/c"},
            {"op": "copy", "from": "/a/b/0", "path": "/list/-"},
        ]);
        assert_eq!(
            applied(doc.clone(), patch),
            json!({"a": {"b": [1]}, "c": {"b": [1]}, "list": [0, 1]})
        );
        refused(doc, json!([{"op": "copy", "from": "/none", "path": "/c"}]));
    }

    #[test]
    fn test_compares_by_value() {
        let doc = json!({"n": 10, "o": {"x": 1, "y": [1, "two"]}, "s": "text", "z": null});
        let patch = json!([
            {"op": "test", "path": "/n", "value": 10.0},
            {"op": "test", "path": "/o", "value": {"y": [1.0, "two"], "x": 1}},
            {"op": "test", "path": "/s", "value": "text"},
            {"op": "test", "path": "/z", "value": null},
            {"op": "test", "path": "", "value": doc.clone()},
        ]);
        assert_eq!(applied(doc.clone(), patch), doc);
        let why = refused(
            doc.clone(),
            json!([{"op": "test", "path": "/s", "value": "other"}]),
        );
        assert!(why.contains("testing value /s failed"), "{why}");
        refused(
            doc.clone(),
            json!([{"op": "test", "path": "/o/y", "value": ["two", 1]}]),
        );
        refused(
            doc.clone(),
            json!([{"op": "test", "path": "/n", "value": "10"}]),
        );
        refused(
            doc.clone(),
            json!([{"op": "test", "path": "/missing", "value": 1}]),
        );
        refused(
            doc.clone(),
            json!([{"op": "test", "path": "/missing/deeper", "value": null}]),
        );
        refused(
            doc.clone(),
            json!([{"op": "test", "path": "/o/y/2", "value": null}]),
        );
    }

    #[test]
    fn an_absent_member_tests_equal_to_null_as_on_a_real_server() {
        let doc = json!({"spec": {}});
        let patch = json!([{"op": "test", "path": "/spec/taints", "value": null}]);
        assert_eq!(applied(doc.clone(), patch), doc);
    }

    #[test]
    fn pointers_unescape_tilde_and_slash() {
        let doc = json!({"a/b": 1, "m~n": 2, "~1": 3, "": {"": 4}, " ": 5});
        let patch = json!([
            {"op": "test", "path": "/a~1b", "value": 1},
            {"op": "test", "path": "/m~0n", "value": 2},
            {"op": "test", "path": "/~01", "value": 3},
            {"op": "test", "path": "//", "value": 4},
            {"op": "test", "path": "/ ", "value": 5},
            {"op": "replace", "path": "/a~1b", "value": 6},
        ]);
        assert_eq!(
            applied(doc, patch),
            json!({"a/b": 6, "m~n": 2, "~1": 3, "": {"": 4}, " ": 5})
        );
        let why = refused(
            json!({}),
            json!([{"op": "add", "path": "/a~2", "value": 1}]),
        );
        assert!(why.contains('~'), "{why}");
        refused(json!({}), json!([{"op": "add", "path": "a", "value": 1}]));
    }

    #[test]
    fn a_failure_leaves_the_document_unchanged() {
        let doc = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let patch = json!([
            {"op": "remove", "path": "/spec/taints/0"},
            {"op": "test", "path": "/spec/taints", "value": ["not", "this"]},
        ]);
        let why = refused(doc.clone(), patch);
        assert!(
            why.starts_with("operation 1: testing value /spec/taints failed"),
            "{why}"
        );
        assert_eq!(doc["spec"]["taints"][0]["key"], "a");
    }

    #[test]
    fn only_a_document_that_is_not_a_list_of_objects_is_malformed() {
        let doc = json!({});
        for patch in [
            json!({"op": "add"}),
            json!("add"),
            json!([{"op": "test", "path": "", "value": {}}, 3]),
        ] {
            assert!(
                matches!(apply(&doc, &patch), Err(PatchError::Malformed(_))),
                "{patch}"
            );
        }
        let unknown = refused(doc.clone(), json!([{"op": "frobnicate", "path": "/a"}]));
        assert!(unknown.contains("frobnicate"), "{unknown}");
        refused(doc.clone(), json!([{"path": "/a", "value": 1}]));
        refused(doc.clone(), json!([{"op": "add", "value": 1}]));
        refused(doc, json!([{"op": "add", "path": 7, "value": 1}]));
        assert_eq!(applied(json!({"a": 1}), json!([])), json!({"a": 1}));
    }

    #[test]
    fn unknown_members_are_ignored() {
        let doc = json!({"a": 1});
        let patch = json!([{"op": "replace", "path": "/a", "value": 2, "comment": "x", "from": 9}]);
        assert_eq!(applied(doc, patch), json!({"a": 2}));
    }
}
