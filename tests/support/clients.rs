//! Real clients as a pod runs them: awscli (botocore), aws-config's IMDS
//! credentials provider, kubectl, and raw HTTP from a pod's address.

use std::net::SocketAddr;
use std::process::{Command, Output};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::relay::connect_from;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection from `source`.
pub async fn http_request(
    source: &str,
    target: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let stream = connect_from(source.parse().map_err(|e| format!("{e}"))?, target)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = http::Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", "169.254.169.254");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `aws <args>` inside a pod: no credentials of its own, metadata service
/// at `imds` (the pod's relay), AWS APIs at moto.
pub fn awscli(imds: &str, moto: &str, args: &[&str]) -> Output {
    Command::new(super::venv().join("bin/aws"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("{imds}/"))
        .env("AWS_ENDPOINT_URL", moto)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "1")
        .output()
        .expect("run aws")
}

/// The caller ARN `aws sts get-caller-identity` reports, or its stderr.
pub fn awscli_identity(imds: &str, moto: &str) -> Result<String, String> {
    let output = awscli(
        imds,
        moto,
        &["sts", "get-caller-identity", "--output", "json"],
    );
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
    Ok(value["Arn"].as_str().unwrap_or_default().to_string())
}

/// aws-config's own IMDS credentials provider (IMDSv2 only), then
/// GetCallerIdentity at moto with what it got.
pub async fn aws_config_identity(imds: &str, moto: &str) -> Result<String, String> {
    let client = aws_config::imds::Client::builder()
        .endpoint(imds)
        .map_err(|e| e.to_string())?
        .build();
    let provider = aws_config::imds::credentials::ImdsCredentialsProvider::builder()
        .imds_client(client)
        .build();
    let credentials = provider.provide_credentials().await.map_err(|e| {
        format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(e)
        )
    })?;
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(moto)
        .credentials_provider(credentials)
        .build();
    let identity = aws_sdk_sts::Client::from_conf(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(e)
            )
        })?;
    Ok(identity.arn().unwrap_or_default().to_string())
}

/// `kubectl --server <api> <args>` with a throwaway home.
pub fn kubectl(api: &str, args: &[&str]) -> Output {
    let home = std::env::temp_dir().join("iamlet-kubectl-home");
    let _ = std::fs::create_dir_all(&home);
    Command::new("kubectl")
        .arg(format!("--server={api}"))
        .args(args)
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("config"))
        .output()
        .expect("run kubectl")
}
