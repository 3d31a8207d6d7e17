//! The seam to AWS STS: a trait for the cache, and the aws-sdk-sts client
//! that uses the node's own credentials from aws-config's default chain.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::Tag;
use futures::future::BoxFuture;
use thiserror::Error;

use super::{CredentialKey, Credentials, Secret};

/// Calls `sts:AssumeRole`. Implemented by [`AwsSts`]; tests count calls
/// through their own implementation.
pub trait AssumeRole: Send + Sync + 'static {
    fn assume_role<'a>(
        &'a self,
        key: &'a CredentialKey,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Credentials, StsError>>;
}

/// What went wrong asking STS, classified for the HTTP answer and logs.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct StsError {
    pub kind: StsErrorKind,
    /// STS's error code (`AccessDenied`, `Throttling`, ...) or iamlet's label
    /// for failures that never reached STS.
    pub code: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StsErrorKind {
    /// The node's role may not assume the pod's role (trust policy, ExternalId).
    AccessDenied,
    /// STS is rate-limiting the node.
    Throttled,
    /// STS rejected the request itself (duration, policy, session name).
    InvalidRequest,
    /// STS could not be reached or did not answer in time.
    Unavailable,
    Other,
}

impl StsError {
    pub fn new(kind: StsErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        StsError {
            kind,
            code: code.into(),
            message: message.into(),
        }
    }

    fn from_code(code: &str, message: &str) -> Self {
        let kind = match code {
            "AccessDenied" | "AccessDeniedException" | "RegionDisabledException" => {
                StsErrorKind::AccessDenied
            }
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                StsErrorKind::Throttled
            }
            "ValidationError" | "MalformedPolicyDocument" | "PackedPolicyTooLarge" => {
                StsErrorKind::InvalidRequest
            }
            _ => StsErrorKind::Other,
        };
        StsError::new(kind, code, message)
    }
}

/// STS through aws-sdk-sts, configured like any AWS SDK on the node:
/// credentials and region from the default chains (the instance profile in
/// production), endpoint from `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL`.
#[derive(Clone, Debug)]
pub struct AwsSts {
    client: aws_sdk_sts::Client,
}

impl AwsSts {
    /// `metadata_endpoint` is the real metadata service (`--metadata-addr`),
    /// where the node's own credentials and region come from when the
    /// environment does not provide them.
    pub async fn from_environment(metadata_endpoint: &str) -> Self {
        let imds = aws_config::imds::Client::builder()
            .endpoint(metadata_endpoint)
            .map(|builder| builder.build())
            .unwrap_or_else(|error| {
                tracing::warn!(%error, metadata_endpoint, "unusable metadata endpoint for the SDK; using the default");
                aws_config::imds::Client::builder().build()
            });
        let credentials = DefaultCredentialsChain::builder()
            .imds_client(imds.clone())
            .build()
            .await;
        let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::builder().build())
            .or_else(ImdsRegionProvider::builder().imds_client(imds).build());
        let config = aws_config::defaults(BehaviorVersion::latest())
            .credentials_provider(credentials)
            .region(region)
            .load()
            .await;
        AwsSts {
            client: aws_sdk_sts::Client::new(&config),
        }
    }

    /// The node's own identity (`sts:GetCallerIdentity`, which every
    /// principal may call): proof that the node's credentials resolve and
    /// that STS accepts them.
    pub async fn node_identity(&self) -> Result<String, StsError> {
        let output = self
            .client
            .get_caller_identity()
            .send()
            .await
            .map_err(classify)?;
        Ok(output.arn().unwrap_or("(no ARN)").to_string())
    }

    async fn call(&self, key: &CredentialKey, duration: Duration) -> Result<Credentials, StsError> {
        let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
        let mut request = self
            .client
            .assume_role()
            .role_arn(key.role.as_str())
            .role_session_name(&key.session_name)
            .set_external_id(key.external_id.clone())
            .duration_seconds(seconds);
        if let Some(session) = &key.tags {
            for (tag, value) in &session.tags {
                let tag = Tag::builder().key(tag).value(value).build().map_err(|e| {
                    StsError::new(StsErrorKind::InvalidRequest, "InvalidTag", e.to_string())
                })?;
                request = request.tags(tag);
            }
            // Transitive: a session the pod chains from this one keeps them.
            for (tag, _) in &session.tags {
                request = request.transitive_tag_keys(tag);
            }
            request = request.set_source_identity(session.source_identity.clone());
        }
        let output = request.send().await.map_err(classify)?;
        let issued = SystemTime::now();
        let creds = output.credentials().ok_or_else(|| {
            StsError::new(
                StsErrorKind::Other,
                "NoCredentials",
                "AssumeRole returned no credentials",
            )
        })?;
        let expiration = SystemTime::try_from(*creds.expiration()).map_err(|_| {
            StsError::new(
                StsErrorKind::Other,
                "BadExpiration",
                "AssumeRole returned an unusable expiration",
            )
        })?;
        Ok(Credentials {
            access_key_id: creds.access_key_id().to_string(),
            secret_access_key: Secret::new(creds.secret_access_key()),
            session_token: Secret::new(creds.session_token()),
            expiration,
            issued,
            grant_memo: Default::default(),
            rendered: Default::default(),
        })
    }
}

impl AssumeRole for AwsSts {
    fn assume_role<'a>(
        &'a self,
        key: &'a CredentialKey,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Credentials, StsError>> {
        Box::pin(self.call(key, duration))
    }
}

fn classify<E>(error: SdkError<E, HttpResponse>) -> StsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let status = service.raw().status().as_u16();
            match inner.code() {
                Some(code) => StsError::from_code(code, inner.message().unwrap_or("no message")),
                // No STS error document: a load balancer or proxy answered.
                None if status >= 500 => StsError::new(
                    StsErrorKind::Unavailable,
                    format!("HTTP{status}"),
                    format!("STS answered HTTP {status} without an error document"),
                ),
                None => StsError::new(
                    StsErrorKind::Other,
                    format!("HTTP{status}"),
                    format!("STS answered HTTP {status} without an error document"),
                ),
            }
        }
        SdkError::TimeoutError(_) => StsError::new(
            StsErrorKind::Unavailable,
            "Timeout",
            "STS did not answer in time",
        ),
        SdkError::DispatchFailure(failure) => StsError::new(
            StsErrorKind::Unavailable,
            "Unreachable",
            format!(
                "STS could not be reached: {:?}",
                failure.as_connector_error()
            ),
        ),
        other => StsError::new(
            StsErrorKind::Other,
            "SdkError",
            aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
        ),
    }
}
