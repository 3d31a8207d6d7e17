//! Documentation that is generated from the code stays in sync with it.

use std::path::Path;

#[test]
fn the_configuration_reference_matches_the_flags() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let generated = iamlet::cli::reference_markdown();
    if std::env::var_os("IAMLET_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/configuration.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/configuration.md is out of date: run `IAMLET_UPDATE_DOCS=1 cargo test --test docs`"
    );
    for flag in [
        "--iam-role-session-ttl",
        "--host-interface",
        "--require-imdsv2",
        "--metrics-port",
    ] {
        assert!(generated.contains(flag), "{flag}");
    }
}
