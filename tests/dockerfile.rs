//! No container engine runs here, so the Dockerfile is checked by
//! construction: the build context it copies resolves as a workspace with
//! the committed lock file, the runtime stage has what the binary executes,
//! and the entrypoint is the binary the build stage produced.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

use std::path::Path;
use std::process::Command;

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/Dockerfile"))
        .unwrap()
}

/// `COPY src... dest` lines of the build stage (not `--from=` copies).
fn context_copies(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        .map(|l| {
            let mut words: Vec<String> = l.split_whitespace().skip(1).map(String::from).collect();
            let dest = words.pop().unwrap();
            (words, dest)
        })
        .collect()
}

#[test]
fn the_build_context_resolves_with_the_committed_lock_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let context = tempfile::tempdir().unwrap();
    for (sources, dest) in context_copies(&dockerfile()) {
        for source in sources {
            let from = root.join(&source);
            assert!(from.exists(), "COPY {source}: not in the repository");
            let to = if dest.ends_with('/') {
                context.path().join(&dest).join(&source)
            } else {
                context.path().join(&dest)
            };
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let status = Command::new("cp")
                .arg("-r")
                .arg(&from)
                .arg(&to)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    let metadata = Command::new("cargo")
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--format-version",
            "1",
            "--no-deps",
        ])
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let bins: Vec<&str> = value["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter(|t| t["kind"][0] == "bin")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(bins.contains(&"iamlet"), "{bins:?}");
}

#[test]
fn the_runtime_stage_has_what_the_binary_runs() {
    let text = dockerfile();
    assert!(text.contains("cargo build --release --locked --bin iamlet"));
    assert!(
        text.contains("nftables"),
        "the firewall module executes nft"
    );
    assert!(text.contains("COPY --from=build /src/target/release/iamlet /usr/local/bin/iamlet"));
    assert!(text.contains(r#"ENTRYPOINT ["/usr/local/bin/iamlet"]"#));
    // Root by default, so that kube2iam's privileged DaemonSet without
    // runAsUser can manage the rules after an image swap (the last USER
    // line is the one in force).
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER line");
    assert_eq!(user.trim(), "0:0");
    for label in ["title", "version", "revision", "licenses"] {
        assert!(
            text.contains(&format!("org.opencontainers.image.{label}")),
            "{label}"
        );
    }
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "multi-stage: build and runtime");
}
