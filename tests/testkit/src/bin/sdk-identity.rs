//! `sdk-identity`: what an unmodified Rust application in a pod does. It
//! builds aws-config's default credentials chain (which, with nothing in
//! the environment, asks the instance metadata service over IMDSv2 at
//! 169.254.169.254) and prints the caller ARN from sts:GetCallerIdentity.
//! Exit code 1 with the error when no credentials are found.

use aws_config::BehaviorVersion;

#[tokio::main]
async fn main() {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let sts = aws_sdk_sts::Client::new(&config);
    match sts.get_caller_identity().send().await {
        Ok(identity) => println!("{}", identity.arn().unwrap_or_default()),
        Err(error) => {
            eprintln!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(error)
            );
            std::process::exit(1);
        }
    }
}
