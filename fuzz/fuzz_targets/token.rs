//! IMDSv2 tokens: arbitrary strings are never accepted, issued tokens are
//! accepted only from their caller, and TTL parsing never panics.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use iamlet::imds::token::{MAX_TTL_SECONDS, TokenIssuer, parse_ttl};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();

fuzz_target!(|input: (&str, &[u8], [u8; 4], u16)| {
    let (candidate, ttl_header, ip, ttl) = input;
    let issuer = ISSUER.get_or_init(TokenIssuer::new);
    let caller = IpAddr::V4(Ipv4Addr::from(ip));
    let now = SystemTime::now();
    assert!(issuer.validate(candidate, caller, now).is_err(), "forged token accepted: {candidate:?}");
    if let Ok(parsed) = parse_ttl(Some(ttl_header)) {
        assert!((1..=MAX_TTL_SECONDS).contains(&parsed.as_secs()));
    }
    let ttl = Duration::from_secs(u64::from(ttl.max(1)));
    let token = issuer.issue(caller, ttl, now);
    assert!(issuer.validate(&token, caller, now).is_ok());
    let other = IpAddr::V4(Ipv4Addr::from(u32::from_be_bytes(ip).wrapping_add(1)));
    assert!(issuer.validate(&token, other, now).is_err());
    assert!(issuer.validate(&token, caller, now + ttl).is_err());
});
