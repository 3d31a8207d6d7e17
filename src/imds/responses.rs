//! Response bodies in the metadata service's formats. Everything is
//! `text/plain` (JSON included), errors are the service's small XHTML pages.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::credentials::Credentials;
use crate::roles::RoleArn;

pub type Body = Full<Bytes>;

/// `YYYY-MM-DDTHH:MM:SSZ`: UTC, no fraction, no offset, as the SDKs parse it.
pub fn imds_time(time: SystemTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from(time)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "text/plain", body.into())
}

/// JSON served the way the metadata service serves it: as text/plain.
pub fn json_text(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    text(status, body)
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    with_type(status, "application/json", body.into())
}

/// The metadata service's error page for `status`.
pub fn status_page(status: StatusCode) -> Response<Body> {
    let title = format!(
        "{} - {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let page = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
         <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
         \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
         <head>\n  <title>{title}</title>\n </head>\n \
         <body>\n  <h1>{title}</h1>\n </body>\n</html>\n"
    );
    with_type(status, "text/html", page.into())
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialDocument<'a> {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
}

/// The credential document. Every field is fixed for one credential set
/// (`LastUpdated` is when iamlet received them), so it is rendered once.
pub fn credentials(credentials: &Credentials) -> Response<Body> {
    let body = credentials.rendered.get_or_render(|| {
        let document = CredentialDocument {
            code: "Success",
            last_updated: imds_time(credentials.issued),
            kind: "AWS-HMAC",
            access_key_id: &credentials.access_key_id,
            secret_access_key: credentials.secret_access_key.expose(),
            token: credentials.session_token.expose(),
            expiration: imds_time(credentials.expiration),
        };
        serde_json::to_vec_pretty(&document)
            .unwrap_or_default()
            .into()
    });
    text(StatusCode::OK, body)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InfoDocument {
    code: &'static str,
    last_updated: String,
    instance_profile_arn: String,
    instance_profile_id: String,
}

/// `iam/info` for a pod: the instance profile its role would have, never the
/// node's. The ID is derived from the ARN (stable, opaque, in AWS's format).
pub fn iam_info(role: &RoleArn, now: SystemTime) -> Response<Body> {
    json_text(
        StatusCode::OK,
        &InfoDocument {
            code: "Success",
            last_updated: imds_time(now),
            instance_profile_arn: role.instance_profile_arn(),
            instance_profile_id: profile_id(role),
        },
    )
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDocument<'a> {
    code: &'a str,
    message: &'a str,
    last_updated: String,
}

/// A failed credential request, in the shape the metadata service uses for
/// instance-profile failures, with an HTTP status SDKs treat as failure.
pub fn credential_error(
    status: StatusCode,
    code: &str,
    message: &str,
    now: SystemTime,
) -> Response<Body> {
    json_text(
        status,
        &ErrorDocument {
            code,
            message,
            last_updated: imds_time(now),
        },
    )
}

fn profile_id(role: &RoleArn) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = <sha2::Sha256 as sha2::Digest>::digest(role.as_str().as_bytes());
    let tail: String = digest
        .iter()
        .take(17)
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect();
    format!("AIPA{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_have_no_fraction_and_no_offset() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_323_045_678);
        assert_eq!(imds_time(time), "2026-01-02T03:04:05Z");
    }

    #[test]
    fn not_found_is_the_xhtml_page() {
        let response = status_page(StatusCode::NOT_FOUND);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html");
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentialDocument<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    account_id: &'a str,
    expiration: String,
}

/// The container credentials document (EKS Pod Identity's): the SDKs'
/// container providers read these five keys, `Expiration` in RFC 3339.
pub fn container_credentials(credentials: &Credentials, account_id: &str) -> Response<Body> {
    let document = ContainerCredentialDocument {
        access_key_id: &credentials.access_key_id,
        secret_access_key: credentials.secret_access_key.expose(),
        token: credentials.session_token.expose(),
        account_id,
        expiration: imds_time(credentials.expiration),
    };
    json(StatusCode::OK, &document)
}

#[derive(Serialize)]
struct ContainerError<'a> {
    code: &'a str,
    message: &'a str,
}

/// The container credentials endpoint's error document.
pub fn container_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(status, &ContainerError { code, message })
}
