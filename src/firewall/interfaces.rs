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
