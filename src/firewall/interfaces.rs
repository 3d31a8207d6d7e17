//! `--host-interface`: which interfaces pods' traffic arrives on.
//!
//! kube2iam took one name with an optional `+` wildcard. iamlet also takes
//! `!` negation and comma-separated lists: `cali+`, `eni+,vlan+`, `!eth0`,
//! `cali+,!cali-system`. Traffic matches when it arrives on any listed
//! interface (or on any interface, when only negations are given) and on
//! none of the negated ones.

use std::fmt;

/// A parsed interface selection, in nft's pattern syntax (`*` wildcards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceMatch {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    source: String,
}

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_NAME: usize = 15;

impl InterfaceMatch {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err("empty interface name in the list".into());
            }
            let (negated, name) = match item.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, item),
            };
            let pattern = to_nft_pattern(name)?;
            if negated { &mut exclude } else { &mut include }.push(pattern);
        }
        Ok(InterfaceMatch {
            include,
            exclude,
            source: text.to_string(),
        })
    }
}

impl InterfaceMatch {
    /// Whether traffic arriving on interface `name` is matched.
    pub fn matches(&self, name: &str) -> bool {
        let included =
            self.include.is_empty() || self.include.iter().any(|p| pattern_matches(p, name));
        included && !self.exclude.iter().any(|p| pattern_matches(p, name))
    }

    /// Included names without a wildcard: each must name an interface that
    /// exists, since a rule for a mistyped name matches nothing and pods
    /// would reach the real metadata service.
    pub fn literal_names(&self) -> impl Iterator<Item = &str> {
        self.include
            .iter()
            .filter(|p| !p.ends_with('*'))
            .map(String::as_str)
    }

    /// Whether some included entry is a wildcard (which may match nothing
    /// until pods start).
    pub fn has_wildcard(&self) -> bool {
        self.include.is_empty() || self.include.iter().any(|p| p.ends_with('*'))
    }
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => name.starts_with(stem),
        None => name == pattern,
    }
}

/// The names of the interfaces in this network namespace.
pub fn present() -> std::io::Result<Vec<String>> {
    let interfaces = nix::net::if_::if_nameindex().map_err(std::io::Error::from)?;
    Ok(interfaces
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .collect())
}

impl fmt::Display for InterfaceMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn to_nft_pattern(name: &str) -> Result<String, String> {
    let (stem, wildcard) = match name.strip_suffix('+') {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    if stem.is_empty() && !wildcard {
        return Err("empty interface name".into());
    }
    if stem.len() > MAX_NAME {
        return Err(format!(
            "interface name {name:?} is longer than {MAX_NAME} characters"
        ));
    }
    let bad = |c: char| c.is_whitespace() || c.is_control() || "/\"'*+!,\\".contains(c);
    if let Some(c) = stem.chars().find(|c| bad(*c)) {
        return Err(format!(
            "character {c:?} is not allowed in interface name {name:?}"
        ));
    }
    Ok(if wildcard {
        format!("{stem}*")
    } else {
        stem.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube2iam_forms_and_more() {
        let one = InterfaceMatch::parse("docker0").unwrap();
        assert_eq!(
            (one.include.as_slice(), one.exclude.len()),
            (&["docker0".to_string()][..], 0)
        );
        assert_eq!(InterfaceMatch::parse("cali+").unwrap().include, ["cali*"]);
        let not = InterfaceMatch::parse("!eth0").unwrap();
        assert!(not.include.is_empty());
        assert_eq!(not.exclude, ["eth0"]);
        let list = InterfaceMatch::parse("eni+, vlan+,!eni-mgmt").unwrap();
        assert_eq!(list.include, ["eni*", "vlan*"]);
        assert_eq!(list.exclude, ["eni-mgmt"]);
        assert_eq!(list.to_string(), "eni+, vlan+,!eni-mgmt");
    }

    #[test]
    fn matching_follows_nft_patterns() {
        let calico = InterfaceMatch::parse("cali+,!cali-system").unwrap();
        assert!(calico.matches("cali12ab"));
        assert!(!calico.matches("cali-system"));
        assert!(!calico.matches("eth0"));
        assert!(calico.has_wildcard());
        assert_eq!(calico.literal_names().count(), 0);
        let docker = InterfaceMatch::parse("docker0").unwrap();
        assert!(docker.matches("docker0") && !docker.matches("docker01"));
        assert_eq!(docker.literal_names().collect::<Vec<_>>(), ["docker0"]);
        assert!(!docker.has_wildcard());
        let not = InterfaceMatch::parse("!eth0").unwrap();
        assert!(not.matches("veth1") && !not.matches("eth0") && not.has_wildcard());
    }

    #[test]
    fn the_loopback_interface_is_present() {
        assert!(present().unwrap().iter().any(|name| name == "lo"));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            ",",
            "eth0,",
            "a b",
            "cali*",
            "c+ali",
            "!",
            "averyveryverylongname",
            "x/y",
            "\"x",
        ] {
            assert!(InterfaceMatch::parse(bad).is_err(), "{bad:?}");
        }
    }
}
