//! Rendered manifests as the kubelet would run them.

use serde_json::Value;

/// What the downward API gives on a node, for `$(VAR)` in args.
pub const DOWNWARD: [(&str, &str); 2] = [
    ("HOST_IP", "10.0.1.23"),
    ("NODE_NAME", "ip-10-0-1-23.ec2.internal"),
];

/// The container's args with `$(VAR)` expanded as the kubelet would, from
/// [`DOWNWARD`]; every variable used must be declared in the container's
/// `env`, and none may be left unexpanded.
pub fn expanded_args(container: &Value) -> Vec<String> {
    let declared: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| {
            let mut arg = arg.as_str().unwrap().to_string();
            for (name, value) in DOWNWARD {
                if arg.contains(&format!("$({name})")) {
                    assert!(declared.contains(&name), "$({name}) used but not declared");
                    arg = arg.replace(&format!("$({name})"), value);
                }
            }
            assert!(!arg.contains("$("), "unexpanded variable in {arg}");
            arg
        })
        .collect()
}
