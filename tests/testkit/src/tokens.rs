//! ServiceAccount tokens: minting (TokenRequest) and checking (TokenReview)
//! with a real API server's rules and words, so that an agent which
//! authenticates pods by their projected tokens meets the same answers here
//! as on a cluster.
//!
//! Tokens are real-looking JWTs: `{"alg":"HS256","kid":"fake"}`, the claims
//! a pod-bound token carries, and an HMAC-SHA256 signature with a key that
//! is random per server (so a token from one test server is forged for any
//! other). Two things differ from a real server, both on purpose: expiry has
//! no leeway (a real one allows 60 s past `exp`, which would make
//! short-lived test tokens useless), and successful reviews are not cached
//! (a real one keeps answering yes for ~10 s after the pod is gone).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::store::{ApiError, Kind, ObjectKey, State};

/// The audience (and issuer) of a real cluster's API server: what a token
/// gets when the request names none, and what a review without audiences
/// requires.
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc";

/// A real server's TokenRequest floor: shorter requests are invalid.
pub(crate) const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Its default when the request gives no `expirationSeconds`.
pub(crate) const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// Its ceiling (2^32 s).
pub(crate) const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// What [`crate::ApiServer::mint_token`] mints: a token for
/// `service_account` in `namespace`, bound to `pod` if given. Unlike a
/// TokenRequest over HTTP, any `ttl` is allowed (zero included), so tests
/// can have tokens that expire while they watch.
///
/// ```
/// # use std::time::Duration;
/// # use iamlet_testkit::{ApiError, ApiServer, TokenSpec};
/// # fn example(api: &ApiServer) -> Result<(), ApiError> {
/// let spec = TokenSpec::new("default", "app")
///     .pod("app-1")
///     .audiences(["sts.amazonaws.com"])
///     .ttl(Duration::from_secs(2));
/// let token = api.mint_token(spec)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
    /// Empty means [`DEFAULT_AUDIENCE`], as in a TokenRequest.
    pub audiences: Vec<String>,
    pub ttl: Duration,
}

impl TokenSpec {
    /// Not bound to a pod, for the default audience, valid for an hour.
    pub fn new(namespace: &str, service_account: &str) -> Self {
        TokenSpec {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            pod: None,
            audiences: Vec::new(),
            ttl: Duration::from_secs(DEFAULT_EXPIRATION_SECONDS as u64),
        }
    }

    /// Binds the token to a pod of the namespace, as the kubelet's
    /// projected tokens are.
    pub fn pod(mut self, pod: &str) -> Self {
        self.pod = Some(pod.to_string());
        self
    }

    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
}

/// A token request after the HTTP layer's own checks: the object it is
/// bound to, and an exact lifetime.
pub(crate) struct Grant<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub pod: Option<&'a str>,
    /// A TokenRequest's `boundObjectRef.uid`: the pod must still be that one.
    pub pod_uid: Option<&'a str>,
    pub audiences: Vec<String>,
    pub ttl: Duration,
}

impl<'a> From<&'a TokenSpec> for Grant<'a> {
    fn from(spec: &'a TokenSpec) -> Self {
        Grant {
            namespace: &spec.namespace,
            service_account: &spec.service_account,
            pod: spec.pod.as_deref(),
            pod_uid: None,
            audiences: spec.audiences.clone(),
            ttl: spec.ttl,
        }
    }
}

/// A minted token, with what the TokenRequest answer reports about it.
pub(crate) struct Issued {
    pub token: String,
    pub audiences: Vec<String>,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

/// Signs and checks tokens with one server's key.
pub(crate) struct Signer {
    key: [u8; 32],
}

impl Signer {
    pub fn random() -> Self {
        Signer {
            key: rand::random(),
        }
    }

    /// Mints a token with a real API server's checks: the service account
    /// must exist, and a bound pod must exist, run as that service account
    /// (`default` when its spec names none) and, if a uid is given, be that
    /// pod. The lifetime is not checked here (see the HTTP side).
    pub fn issue(&self, state: &State, grant: &Grant<'_>) -> Result<Issued, ApiError> {
        let account = state.get(&ObjectKey::new(
            Kind::ServiceAccount,
            grant.namespace,
            grant.service_account,
        ))?;
        let mut binding = json!({
            "namespace": grant.namespace,
            "serviceaccount": {"name": grant.service_account, "uid": account["metadata"]["uid"]},
        });
        if let Some(pod_name) = grant.pod {
            let pod = bound_pod(state, grant, pod_name)?;
            binding["pod"] = json!({"name": pod_name, "uid": pod["metadata"]["uid"]});
            if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                binding["node"] = json!({"name": node, "uid": node_uid(node)});
            }
        }
        let audiences = if grant.audiences.is_empty() {
            vec![DEFAULT_AUDIENCE.to_string()]
        } else {
            grant.audiences.clone()
        };
        let issued_at = SystemTime::now();
        let expires_at = issued_at + grant.ttl;
        let iat = unix_seconds(issued_at);
        let claims = json!({
            "aud": audiences,
            "exp": unix_seconds(expires_at),
            "iat": iat,
            "iss": DEFAULT_AUDIENCE,
            "jti": random_uuid(),
            "kubernetes.io": binding,
            "nbf": iat,
            "sub": format!("system:serviceaccount:{}:{}", grant.namespace, grant.service_account),
        });
        Ok(Issued {
            token: self.sign(&claims),
            audiences,
            issued_at,
            expires_at,
        })
    }

    /// A TokenReview's `status`, as a real API server writes it: the user
    /// and the audiences it was accepted for, or an `error` and no
    /// `authenticated` at all.
    pub fn review(&self, state: &State, token: &str, audiences: &[String]) -> Value {
        match self.authenticate(state, token, audiences) {
            Ok((user, audiences)) => {
                json!({"authenticated": true, "user": user, "audiences": audiences})
            }
            Err(rejection) => json!({"user": {}, "error": rejection.to_string()}),
        }
    }

    /// The checks of a real server's service account authenticator, in its
    /// order: ours at all, signature, audience, lifetime, then the objects
    /// the token names must still be the same ones.
    fn authenticate(
        &self,
        state: &State,
        token: &str,
        audiences: &[String],
    ) -> Result<(Value, Vec<String>), Rejection> {
        let claims = self.verify(token)?;
        let accepted = accepted_audiences(&claims, audiences)?;
        check_lifetime(&claims)?;
        let binding = &claims["kubernetes.io"];
        let namespace = binding["namespace"].as_str().unwrap_or_default();
        let account_name = binding["serviceaccount"]["name"]
            .as_str()
            .unwrap_or_default();
        let account_uid = binding["serviceaccount"]["uid"]
            .as_str()
            .unwrap_or_default();
        let account = state
            .get(&ObjectKey::new(
                Kind::ServiceAccount,
                namespace,
                account_name,
            ))
            .map_err(|e| Rejection::Invalid(e.message))?;
        let current_uid = account["metadata"]["uid"].as_str().unwrap_or_default();
        if current_uid != account_uid {
            return Err(Rejection::Invalid(format!(
                "service account UID ({current_uid}) does not match claim ({account_uid})"
            )));
        }
        let mut extra = Map::new();
        if let Some(pod) = binding["pod"].as_object() {
            check_pod(state, namespace, pod)?;
            for (key, value) in [("pod-name", &pod["name"]), ("pod-uid", &pod["uid"])] {
                extra.insert(
                    format!("authentication.kubernetes.io/{key}"),
                    json!([value]),
                );
            }
            if let Some(node) = binding["node"].as_object() {
                for (key, value) in [("node-name", &node["name"]), ("node-uid", &node["uid"])] {
                    extra.insert(
                        format!("authentication.kubernetes.io/{key}"),
                        json!([value]),
                    );
                }
            }
        }
        if let Some(jti) = claims["jti"].as_str() {
            extra.insert(
                "authentication.kubernetes.io/credential-id".into(),
                json!([format!("JTI={jti}")]),
            );
        }
        let user = json!({
            "username": format!("system:serviceaccount:{namespace}:{account_name}"),
            "uid": account_uid,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
            "extra": extra,
        });
        Ok((user, accepted))
    }

    fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "fake"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    /// The claims of a token this server signed. A token that is not a JWT
    /// from this issuer is not one a service account authenticator looks
    /// at: it only gets the bearer token authenticator's words.
    fn verify(&self, token: &str) -> Result<Value, Rejection> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err(Rejection::NotOurs);
        };
        let claims = decode_json(payload).ok_or(Rejection::NotOurs)?;
        if claims["iss"] != DEFAULT_AUDIENCE {
            return Err(Rejection::NotOurs);
        }
        let header = decode_json(header).ok_or(Rejection::NotOurs)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Rejection::bad_signature())?;
        let mut mac = self.mac();
        mac.update(format!("{}.{payload}", parts[0]).as_bytes());
        if header["alg"] != "HS256" || mac.verify_slice(&signature).is_err() {
            return Err(Rejection::bad_signature());
        }
        Ok(claims)
    }

    fn mac(&self) -> Hmac<Sha256> {
        match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
}

/// Why a review failed, worded as a real API server words it.
#[derive(Debug)]
enum Rejection {
    /// Not a service account token at all: only the bearer token
    /// authenticator's complaint.
    NotOurs,
    /// The service account authenticator's reason, which a real server
    /// reports next to the bearer token authenticator's.
    Invalid(String),
}

impl Rejection {
    /// go-jose's words for a signature no key verifies.
    fn bad_signature() -> Self {
        Rejection::Invalid("go-jose/go-jose: error in cryptographic primitive".into())
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NotOurs => write!(f, "invalid bearer token"),
            Rejection::Invalid(reason) => write!(f, "[invalid bearer token, {reason}]"),
        }
    }
}

fn bound_pod(state: &State, grant: &Grant<'_>, pod_name: &str) -> Result<Value, ApiError> {
    let pod = state.get(&ObjectKey::new(Kind::Pod, grant.namespace, pod_name))?;
    if service_account_of(&pod) != grant.service_account {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "cannot bind token for serviceaccount {:?} to pod running with different serviceaccount name.",
                grant.service_account
            ),
        ));
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    if let Some(wanted) = grant.pod_uid.filter(|u| !u.is_empty() && *u != uid) {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on Pod {pod_name:?}: the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok(pod)
}

/// A pod's service account: the admission controller of a real cluster
/// writes `default` into pods that name none; here it is implied.
pub(crate) fn service_account_of(pod: &Value) -> &str {
    pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|name| !name.is_empty())
        .unwrap_or("default")
}

/// The token's audiences that the review asked for (the API server's own
/// when it asked for none); none in common rejects the token.
fn accepted_audiences(claims: &Value, wanted: &[String]) -> Result<Vec<String>, Rejection> {
    let implicit = [DEFAULT_AUDIENCE.to_string()];
    let mut held: Vec<String> = match &claims["aud"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    if held.is_empty() {
        held = implicit.to_vec();
    }
    let wanted = if wanted.is_empty() {
        &implicit[..]
    } else {
        wanted
    };
    let accepted: Vec<String> = held
        .iter()
        .filter(|a| wanted.contains(a))
        .cloned()
        .collect();
    if accepted.is_empty() {
        return Err(Rejection::Invalid(format!(
            "token audiences {} is invalid for the target audiences {}",
            go_quoted(&held),
            go_quoted(wanted)
        )));
    }
    Ok(accepted)
}

/// `exp` and `nbf` to the second, without the 60 s of leeway a real server
/// allows: tests mint tokens that live for a second or two.
fn check_lifetime(claims: &Value) -> Result<(), Rejection> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let at = |claim: &str| claims[claim].as_i64().map(|s| s as f64);
    if at("exp").is_some_and(|exp| now >= exp) {
        return Err(Rejection::Invalid(
            "service account token has expired".into(),
        ));
    }
    if at("nbf").is_some_and(|nbf| now < nbf) {
        return Err(Rejection::Invalid(
            "service account token is not valid yet".into(),
        ));
    }
    if at("iat").is_some_and(|iat| now < iat) {
        return Err(Rejection::Invalid(
            "service account token is issued in the future".into(),
        ));
    }
    Ok(())
}

/// A deleted pod, or another pod of the same name, invalidates the tokens
/// bound to the old one.
fn check_pod(state: &State, namespace: &str, claim: &Map<String, Value>) -> Result<(), Rejection> {
    let name = claim["name"].as_str().unwrap_or_default();
    let claimed_uid = claim["uid"].as_str().unwrap_or_default();
    let pod = state
        .get(&ObjectKey::new(Kind::Pod, namespace, name))
        .map_err(|_| Rejection::Invalid("service account token has been invalidated".into()))?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    if uid != claimed_uid {
        return Err(Rejection::Invalid(format!(
            "pod UID ({uid}) does not match service account pod ref claim ({claimed_uid})"
        )));
    }
    Ok(())
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// Go's `%q` of a string slice, which a real server's audience error uses.
fn go_quoted(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

pub(crate) fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// There are no Node objects here; a pod-bound token still names its node
/// by a uid, which must be the same for every token of that node.
fn node_uid(node: &str) -> String {
    let digest = Sha256::digest(format!("node/{node}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid_text(bytes, 5)
}

fn random_uuid() -> String {
    uuid_text(rand::random(), 4)
}

fn uuid_text(mut bytes: [u8; 16], version: u8) -> String {
    bytes[6] = (bytes[6] & 0x0f) | (version << 4);
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
