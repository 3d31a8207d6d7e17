// Embeds the git commit into `iamlet --version`. Builds without a git
// checkout (a container build context) pass IAMLET_GIT_COMMIT instead.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=IAMLET_GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("IAMLET_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=IAMLET_GIT_COMMIT={commit}");
}
