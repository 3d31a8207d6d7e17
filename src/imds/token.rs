//! IMDSv2 session tokens that iamlet issues and checks itself.
//!
//! A token is `base64url(version | expiry | mac)` where the MAC (HMAC-SHA256
//! with a key drawn at start) covers the version, the expiry and the caller's
//! IP: a token is useless from another pod. With `--imds-token-key-file`
//! the key is kept in a file only root on the node can read, so tokens
//! survive an agent restart; without it every token dies with the agent that
//! issued it (clients then get 401 and ask for a new one).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use thiserror::Error;

pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
pub const MAX_TTL_SECONDS: u64 = 21_600;

const VERSION: u8 = 1;
const MAC_LEN: usize = 24;
const TOKEN_LEN: usize = 1 + 8 + MAC_LEN;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("missing {TTL_HEADER} header")]
    MissingTtl,
    #[error("{TTL_HEADER} must be an integer from 1 to {MAX_TTL_SECONDS}")]
    InvalidTtl,
    #[error("malformed token")]
    Malformed,
    #[error("expired token")]
    Expired,
    #[error("token not issued to this caller")]
    WrongCaller,
}

pub struct TokenIssuer {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer(<key redacted>)")
    }
}

impl TokenIssuer {
    pub fn new() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        TokenIssuer { key }
    }

    pub fn issue(&self, caller: IpAddr, ttl: Duration, now: SystemTime) -> String {
        let expiry = unix_seconds(now).saturating_add(ttl.as_secs());
        let mut bytes = Vec::with_capacity(TOKEN_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&expiry.to_be_bytes());
        let mac = self.mac(&bytes, caller).finalize().into_bytes();
        bytes.extend_from_slice(&mac[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn validate(&self, token: &str, caller: IpAddr, now: SystemTime) -> Result<(), TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() != TOKEN_LEN || bytes[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let (signed, mac) = bytes.split_at(1 + 8);
        self.mac(signed, caller)
            .verify_truncated_left(mac)
            .map_err(|_| TokenError::WrongCaller)?;
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&signed[1..]);
        if u64::from_be_bytes(expiry) <= unix_seconds(now) {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    fn mac(&self, signed: &[u8], caller: IpAddr) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(signed);
        match caller {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac
    }
}

impl TokenIssuer {
    /// The issuer whose key is kept in `path`: the key already there (32
    /// bytes, a regular file owned by this user and readable by it only),
    /// or a new one written there. Symbolic links are never followed, and
    /// a new key is written to a fresh file and renamed into place, so a
    /// reader never sees half a key and two agents never share a file.
    pub fn from_key_file(path: &std::path::Path) -> std::io::Result<(Self, KeyOrigin)> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let no_follow = nix::libc::O_NOFOLLOW;
        if let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(no_follow)
            .open(path)
        {
            let meta = file.metadata()?;
            let trusted = meta.is_file()
                && meta.uid() == nix::unistd::geteuid().as_raw()
                && meta.mode() & 0o077 == 0;
            let mut content = Vec::with_capacity(33);
            std::io::Read::read_to_end(&mut std::io::Read::take(file, 33), &mut content)?;
            let mut key = [0u8; 32];
            if trusted && content.len() == key.len() {
                key.copy_from_slice(&content);
                return Ok((TokenIssuer { key }, KeyOrigin::Kept));
            }
        }
        let issuer = TokenIssuer::new();
        let mut suffix = [0u8; 8];
        rand::rng().fill_bytes(&mut suffix);
        let temporary = path.with_extension(format!("new-{}", u64::from_le_bytes(suffix)));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(no_follow)
                .mode(0o600)
                .open(&temporary)?;
            std::io::Write::write_all(&mut file, &issuer.key)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written?;
        Ok((issuer, KeyOrigin::Created))
    }
}

/// Where a key file's key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// An earlier agent's: its tokens stay valid.
    Kept,
    /// Written now (no file, or one of the wrong size or readable by others).
    Created,
}

impl Default for TokenIssuer {
    fn default() -> Self {
        Self::new()
    }
}

/// The TTL a client asks for: an integer number of seconds in 1..=21600.
pub fn parse_ttl(header: Option<&[u8]>) -> Result<Duration, TokenError> {
    let text = std::str::from_utf8(header.ok_or(TokenError::MissingTtl)?)
        .map_err(|_| TokenError::InvalidTtl)?;
    let seconds: u64 = text.trim().parse().map_err(|_| TokenError::InvalidTtl)?;
    if !(1..=MAX_TTL_SECONDS).contains(&seconds) {
        return Err(TokenError::InvalidTtl);
    }
    Ok(Duration::from_secs(seconds))
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 8));

    #[test]
    fn a_key_file_keeps_tokens_valid_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imds-token-key");
        let (first, origin) = TokenIssuer::from_key_file(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Created);
        let now = SystemTime::now();
        let token = first.issue(POD, Duration::from_secs(60), now);
        let (second, origin) = TokenIssuer::from_key_file(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Kept);
        assert_eq!(second.validate(&token, POD, now), Ok(()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_file_others_could_read_or_of_the_wrong_size_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imds-token-key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (issuer, origin) = TokenIssuer::from_key_file(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Created);
        assert_ne!(issuer.key, [7u8; 32]);
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(
            TokenIssuer::from_key_file(&path).unwrap().1,
            KeyOrigin::Created
        );
    }

    #[test]
    fn a_key_file_that_is_a_symbolic_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, [9u8; 32]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("imds-token-key");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let (issuer, origin) = TokenIssuer::from_key_file(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Created);
        assert_ne!(issuer.key, [9u8; 32], "the link's target was not used");
        assert_eq!(std::fs::read(&target).unwrap(), [9u8; 32], "nor written");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_token_works_for_its_caller_until_it_expires() {
        let issuer = TokenIssuer::new();
        let now = SystemTime::now();
        let token = issuer.issue(POD, Duration::from_secs(60), now);
        assert!(token.len() >= 40);
        assert_eq!(issuer.validate(&token, POD, now), Ok(()));
        assert_eq!(
            issuer.validate(&token, OTHER, now),
            Err(TokenError::WrongCaller)
        );
        assert_eq!(
            issuer.validate(&token, POD, now + Duration::from_secs(60)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn an_ipv6_token_is_bound_to_its_caller() {
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        let issuer = TokenIssuer::new();
        let now = SystemTime::now();
        let token = issuer.issue(v6("fd00::7"), Duration::from_secs(60), now);
        assert_eq!(issuer.validate(&token, v6("fd00::7"), now), Ok(()));
        for other in ["fd00::8", "fd00:0:0:1::7", "::10.0.0.7", "10.0.0.7"] {
            assert_eq!(
                issuer.validate(&token, v6(other), now),
                Err(TokenError::WrongCaller),
                "{other}"
            );
        }
        let v4_token = issuer.issue(POD, Duration::from_secs(60), now);
        assert_eq!(
            issuer.validate(&v4_token, v6("::10.0.0.7"), now),
            Err(TokenError::WrongCaller)
        );
    }

    #[test]
    fn tokens_from_elsewhere_are_rejected() {
        let issuer = TokenIssuer::new();
        let now = SystemTime::now();
        let foreign = TokenIssuer::new().issue(POD, Duration::from_secs(60), now);
        assert_eq!(
            issuer.validate(&foreign, POD, now),
            Err(TokenError::WrongCaller)
        );
        for bad in ["", "abc", "!!!!", &"A".repeat(44)] {
            assert!(issuer.validate(bad, POD, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttl_header_rules() {
        assert_eq!(parse_ttl(Some(b"21600")), Ok(Duration::from_secs(21600)));
        assert_eq!(parse_ttl(Some(b"1")), Ok(Duration::from_secs(1)));
        assert_eq!(parse_ttl(None), Err(TokenError::MissingTtl));
        for bad in [&b"0"[..], b"21601", b"-5", b"abc", b"1.5", b""] {
            assert_eq!(parse_ttl(Some(bad)), Err(TokenError::InvalidTtl), "{bad:?}");
        }
    }
}
