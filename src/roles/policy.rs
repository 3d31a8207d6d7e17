//! Namespace restrictions: the JSON array of allowed roles a namespace
//! carries in its `iam.amazonaws.com/allowed-roles` annotation.

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;

use super::arn::{BaseArn, RoleArn};

/// How entries of the allowed-roles array are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyFormat {
    /// Shell globs (`*`, `?`, `[a-z]`), matched against the whole string.
    Glob,
    /// Regular expressions, always anchored at both ends (kube2iam's were not).
    Regexp,
}

/// A namespace's compiled allow-list. A missing annotation allows nothing;
/// an annotation that does not parse allows nothing and says why.
#[derive(Clone, Debug)]
pub enum NamespacePolicy {
    Allows(Vec<Pattern>),
    Invalid(String),
}

#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    /// Patterns starting with `arn:` match the full role ARN; others match the
    /// role's name relative to the base ARN.
    matches_full_arn: bool,
    matcher: Matcher,
}

#[derive(Clone, Debug)]
enum Matcher {
    Glob(GlobMatcher),
    Regexp(Regex),
}

impl NamespacePolicy {
    pub fn parse(annotation: Option<&str>, format: PolicyFormat) -> Self {
        let Some(text) = annotation else {
            return NamespacePolicy::Allows(Vec::new());
        };
        let entries: Vec<String> = match serde_json::from_str(text) {
            Ok(entries) => entries,
            Err(error) => {
                return NamespacePolicy::Invalid(format!(
                    "allowed-roles is not a JSON array of strings: {error}"
                ));
            }
        };
        let mut patterns = Vec::with_capacity(entries.len());
        for entry in entries {
            match Pattern::compile(&entry, format) {
                Ok(pattern) => patterns.push(pattern),
                Err(why) => {
                    return NamespacePolicy::Invalid(format!("entry {entry:?}: {why}"));
                }
            }
        }
        NamespacePolicy::Allows(patterns)
    }

    /// Whether a pod in this namespace may assume `role`.
    pub fn allows(&self, role: &RoleArn, base: Option<&BaseArn>) -> bool {
        match self {
            NamespacePolicy::Invalid(_) => false,
            NamespacePolicy::Allows(patterns) => {
                let relative = relative_name(role, base);
                patterns.iter().any(|pattern| {
                    let subject = if pattern.matches_full_arn {
                        role.as_str()
                    } else {
                        relative
                    };
                    pattern.is_match(subject)
                })
            }
        }
    }

    /// The entries as written, for /debug/store.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            NamespacePolicy::Allows(patterns) => serde_json::Value::from(
                patterns
                    .iter()
                    .map(|p| p.source.clone())
                    .collect::<Vec<_>>(),
            ),
            NamespacePolicy::Invalid(why) => serde_json::json!({ "invalid": why }),
        }
    }
}

impl Pattern {
    fn compile(source: &str, format: PolicyFormat) -> Result<Self, String> {
        let matcher = match format {
            PolicyFormat::Glob => Matcher::Glob(
                GlobBuilder::new(source)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| e.to_string())?
                    .compile_matcher(),
            ),
            PolicyFormat::Regexp => {
                Matcher::Regexp(Regex::new(&format!("^(?:{source})$")).map_err(|e| e.to_string())?)
            }
        };
        let matches_full_arn = source.trim_start_matches('^').starts_with("arn:");
        Ok(Pattern {
            source: source.to_string(),
            matches_full_arn,
            matcher,
        })
    }

    fn is_match(&self, subject: &str) -> bool {
        match &self.matcher {
            Matcher::Glob(glob) => glob.is_match(subject),
            Matcher::Regexp(regex) => regex.is_match(subject),
        }
    }
}

/// The role relative to the base ARN (what a pod would write in its
/// annotation), or the path and name after `role/` for roles outside it.
fn relative_name<'a>(role: &'a RoleArn, base: Option<&BaseArn>) -> &'a str {
    let arn = role.as_str();
    if let Some(rest) = base.and_then(|b| arn.strip_prefix(b.as_str())) {
        return rest;
    }
    arn.split_once(":role/").map_or(arn, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> RoleArn {
        RoleArn::parse(&format!("arn:aws:iam::123456789012:role/{name}")).unwrap()
    }

    fn base() -> BaseArn {
        BaseArn::parse("arn:aws:iam::123456789012:role/").unwrap()
    }

    #[test]
    fn missing_annotation_allows_nothing() {
        let policy = NamespacePolicy::parse(None, PolicyFormat::Glob);
        assert!(!policy.allows(&role("reader"), Some(&base())));
    }

    #[test]
    fn invalid_json_allows_nothing() {
        for text in ["not json", "{\"a\":1}", "[1,2]", "[\"a\""] {
            let policy = NamespacePolicy::parse(Some(text), PolicyFormat::Glob);
            assert!(matches!(policy, NamespacePolicy::Invalid(_)), "{text}");
            assert!(!policy.allows(&role("a"), Some(&base())));
        }
    }

    #[test]
    fn globs_match_names_and_full_arns() {
        let policy = NamespacePolicy::parse(
            Some(r#"["app-*", "arn:aws:iam::123456789012:role/team/*"]"#),
            PolicyFormat::Glob,
        );
        assert!(policy.allows(&role("app-reader"), Some(&base())));
        assert!(policy.allows(&role("team/writer"), Some(&base())));
        assert!(!policy.allows(&role("admin"), Some(&base())));
        assert!(!policy.allows(&role("my-app-reader"), Some(&base())));
    }

    #[test]
    fn regexps_are_anchored() {
        let policy = NamespacePolicy::parse(Some(r#"["app-.*"]"#), PolicyFormat::Regexp);
        assert!(policy.allows(&role("app-reader"), Some(&base())));
        // kube2iam's unanchored match would have allowed this one.
        assert!(!policy.allows(&role("evil-app-reader"), Some(&base())));
        let full = NamespacePolicy::parse(
            Some(r#"["^arn:aws:iam::123456789012:role/app-[a-z]+$"]"#),
            PolicyFormat::Regexp,
        );
        assert!(full.allows(&role("app-reader"), None));
        assert!(!full.allows(&role("app-reader2"), None));
    }

    #[test]
    fn an_invalid_regexp_invalidates_the_policy() {
        let policy = NamespacePolicy::parse(Some(r#"["ok", "("]"#), PolicyFormat::Regexp);
        assert!(matches!(policy, NamespacePolicy::Invalid(_)));
        assert!(!policy.allows(&role("ok"), Some(&base())));
    }
}
