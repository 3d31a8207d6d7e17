//! Routing and path checks: never panic, and a path that routes anywhere
//! holds no escape, dot segment or empty segment, so the router saw exactly
//! what the upstream would.
#![no_main]

use http::Method;
use iamlet::imds::routes::{Route, route};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 4] = [Method::GET, Method::HEAD, Method::PUT, Method::POST];

fuzz_target!(|input: (u8, &str)| {
    let (method, path) = input;
    let method = &METHODS[usize::from(method) % METHODS.len()];
    let deny = ["user-data".to_string(), "meta-data/identity-credentials/".to_string()];
    let Ok(routed) = route(method, path, &deny) else {
        return;
    };
    assert!(path.starts_with('/'));
    assert!(!path.contains('%') && !path.contains("//") && !path.contains('\\'));
    let body = path.strip_suffix('/').unwrap_or(path);
    assert!(!body.split('/').skip(1).any(|s| s == "." || s == ".."));
    if let Route::RoleCredentials(name) = routed {
        assert!(!name.is_empty() && !name.contains('/'));
    }
    if routed == Route::Proxy {
        // Nothing under meta-data/iam is ever proxied, nor a denied prefix.
        let rest: Vec<&str> = body.split('/').skip(2).collect();
        assert!(!rest.starts_with(&["meta-data", "iam"]), "{path}");
        assert!(!rest.starts_with(&["user-data"]), "{path}");
        assert!(!rest.starts_with(&["meta-data", "identity-credentials"]), "{path}");
    }
    if *method == Method::PUT {
        assert!(matches!(routed, Route::Token | Route::VersionedToken));
    }
});
