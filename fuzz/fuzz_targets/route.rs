//! Routing and path checks: never panic, and a path that routes anywhere
//! holds no escape, dot segment or empty segment, so the router saw exactly
//! what the upstream would; nothing under meta-data/iam (in any case) or on
//! the deny-list is proxied, and no agent route is reached through the DNAT.
#![no_main]

use http::Method;
use iamlet::imds::routes::{DEFAULT_DENY, DenyList, MetadataRoute, Origin, Route, route};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 4] = [Method::GET, Method::HEAD, Method::PUT, Method::POST];

fuzz_target!(|input: (u8, bool, &str)| {
    let (method, dnat, path) = input;
    let method = &METHODS[usize::from(method) % METHODS.len()];
    let origin = if dnat { Origin::Dnat } else { Origin::Direct };
    let deny = DenyList::new(DEFAULT_DENY);
    let Ok(routed) = route(method, path, origin, &deny) else {
        return;
    };
    assert!(path.starts_with('/'));
    assert!(!path.contains('%') && !path.contains("//") && !path.contains('\\'));
    let body = path.strip_suffix('/').unwrap_or(path);
    assert!(!body.split('/').skip(1).any(|s| s == "." || s == ".."));
    if origin == Origin::Dnat {
        assert!(matches!(routed, Route::Metadata(_)), "{path}");
    }
    if let Route::Metadata(MetadataRoute::RoleCredentials(name)) = routed {
        assert!(!name.is_empty() && !name.contains('/'));
    }
    if routed == Route::Metadata(MetadataRoute::Proxy) {
        let rest: Vec<String> = body.split('/').skip(2).map(str::to_ascii_lowercase).collect();
        assert!(!rest.starts_with(&["meta-data".into(), "iam".into()]), "{path}");
        assert!(!rest.starts_with(&["user-data".into()]), "{path}");
        assert!(!rest.starts_with(&["meta-data".into(), "identity-credentials".into()]), "{path}");
        assert!(!rest.starts_with(&["dynamic".into(), "instance-identity".into(), "signature".into()]), "{path}");
    }
    if *method == Method::PUT {
        assert_eq!(routed, Route::Metadata(MetadataRoute::Token));
    }
});
