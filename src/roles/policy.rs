//! Namespace restrictions: the JSON array of allowed roles a namespace
//! carries in its `iam.amazonaws.com/allowed-roles` annotation.

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;

use super::arn::{BaseArn, RoleArn};

/// How entries of the allowed-roles array are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyFormat {
    /// Shell globs (`*`, `?`, `[a-z]`), matched against the whole string.
    /// `*` and `?` stop at `/`, so `app-*` never admits `app-team/admin`;
    /// `team/**` admits every role under the `team/` path.
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
    /// Patterns starting with `arn:` match the full role ARN; others match
    /// the role's path and name relative to the base ARN, and only roles
    /// under the base ARN (same partition, account and path prefix).
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

    /// Whether a pod in this namespace may assume `role`. `base` is
    /// `--base-role-arn`: without it, relative entries match nothing.
    pub fn allows(&self, role: &RoleArn, base: Option<&BaseArn>) -> bool {
        self.deciding_entry(role, base).is_some()
    }

    /// The first entry, as written, that admits `role`: what `iamlet
    /// explain` names as the reason a role is allowed.
    pub fn deciding_entry(&self, role: &RoleArn, base: Option<&BaseArn>) -> Option<&str> {
        match self {
            NamespacePolicy::Invalid(_) => None,
            NamespacePolicy::Allows(patterns) => {
                let relative = base.and_then(|base| role.relative_to(base));
                patterns
                    .iter()
                    .find(|pattern| {
                        let subject = if pattern.matches_full_arn {
                            Some(role.as_str())
                        } else {
                            relative
                        };
                        subject.is_some_and(|subject| pattern.is_match(subject))
                    })
                    .map(|pattern| pattern.source.as_str())
            }
        }
    }

    /// The entries as written (none for an invalid annotation).
    pub fn entries(&self) -> Vec<&str> {
        match self {
            NamespacePolicy::Allows(patterns) => {
                patterns.iter().map(|p| p.source.as_str()).collect()
            }
            NamespacePolicy::Invalid(_) => Vec::new(),
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
            PolicyFormat::Glob => Matcher::Glob({
                check_classes(source)?;
                GlobBuilder::new(source)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| e.to_string())?
                    .compile_matcher()
            }),
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

/// A glob's character classes must not match `/`: globset's `[!x]` and a
/// range such as `[+-0]` would, and `*` not crossing `/` would mean little.
fn check_classes(source: &str) -> Result<(), String> {
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '[' => {
                let mut class = Vec::new();
                for c in chars.by_ref() {
                    if c == ']' && !class.is_empty() {
                        break;
                    }
                    class.push(c);
                }
                if matches!(class.first(), Some('!' | '^')) {
                    return Err("negated character classes ([!...]) could match '/'; list the characters allowed instead".into());
                }
                let spans_slash = class.contains(&'/')
                    || class
                        .windows(3)
                        .any(|w| w[1] == '-' && w[0] <= '/' && '/' <= w[2]);
                if spans_slash {
                    return Err("a character class may not match '/'".into());
                }
            }
            _ => {}
        }
    }
    Ok(())
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

    fn arn(text: &str) -> RoleArn {
        RoleArn::parse(text).unwrap()
    }

    #[test]
    fn relative_entries_admit_only_roles_under_the_base() {
        // Found by an attack: relative entries matched whatever followed
        // `:role/`, whatever the account or partition.
        for format in [PolicyFormat::Glob, PolicyFormat::Regexp] {
            let entries = match format {
                PolicyFormat::Glob => r#"["app-*", "s3-reader"]"#,
                PolicyFormat::Regexp => r#"["app-.*", "s3-reader"]"#,
            };
            let policy = NamespacePolicy::parse(Some(entries), format);
            assert!(policy.allows(&role("app-admin"), Some(&base())));
            assert!(policy.allows(&role("s3-reader"), Some(&base())));
            for other in [
                "arn:aws:iam::999999999999:role/app-admin",
                "arn:aws-cn:iam::123456789012:role/app-admin",
                "arn:aws-us-gov:iam::123456789012:role/s3-reader",
                "arn:aws:iam::999999999999:role/s3-reader",
            ] {
                assert!(
                    !policy.allows(&arn(other), Some(&base())),
                    "{format:?} {other}"
                );
            }
            assert!(
                !policy.allows(&role("s3-reader"), None),
                "without a base ARN relative entries match nothing"
            );
        }
    }

    #[test]
    fn relative_entries_respect_the_base_path() {
        let team = BaseArn::parse("arn:aws:iam::123456789012:role/team/").unwrap();
        let policy = NamespacePolicy::parse(Some(r#"["app-*"]"#), PolicyFormat::Glob);
        assert!(policy.allows(&role("team/app-x"), Some(&team)));
        assert!(!policy.allows(&role("app-x"), Some(&team)));
        assert!(!policy.allows(&role("other/app-x"), Some(&team)));
    }

    #[test]
    fn a_glob_star_stops_at_a_slash_and_a_double_star_does_not() {
        let policy = NamespacePolicy::parse(
            Some(r#"["app-*", "team/**", "arn:aws:iam::123456789012:role/ops-*"]"#),
            PolicyFormat::Glob,
        );
        assert!(policy.allows(&role("app-reader"), Some(&base())));
        assert!(!policy.allows(&role("app-team/admin"), Some(&base())));
        assert!(policy.allows(&role("team/a/b/reader"), Some(&base())));
        assert!(policy.allows(&role("ops-viewer"), None));
        assert!(!policy.allows(&role("ops-x/admin"), None));
        let question = NamespacePolicy::parse(Some(r#"["a?b"]"#), PolicyFormat::Glob);
        assert!(question.allows(&role("a-b"), Some(&base())));
        assert!(!question.allows(&role("a/b"), Some(&base())));
    }

    #[test]
    fn full_arn_globs_match_only_their_account_and_partition() {
        let policy = NamespacePolicy::parse(
            Some(r#"["arn:aws:iam::123456789012:role/app-*"]"#),
            PolicyFormat::Glob,
        );
        assert!(policy.allows(&role("app-x"), None));
        assert!(!policy.allows(&arn("arn:aws:iam::999999999999:role/app-x"), None));
        assert!(!policy.allows(&arn("arn:aws-cn:iam::123456789012:role/app-x"), None));
    }

    #[test]
    fn a_regexp_alternation_is_anchored_as_a_whole() {
        let policy = NamespacePolicy::parse(Some(r#"["app-reader|admin"]"#), PolicyFormat::Regexp);
        assert!(policy.allows(&role("app-reader"), Some(&base())));
        assert!(policy.allows(&role("admin"), Some(&base())));
        for refused in ["evil-admin", "app-reader-2", "xapp-reader", "admin2"] {
            assert!(!policy.allows(&role(refused), Some(&base())), "{refused}");
        }
    }

    #[test]
    fn describe_shows_the_entries_as_written_or_why_they_are_invalid() {
        let policy = NamespacePolicy::parse(
            Some(r#"["app-*", "arn:aws:iam::1:role/x"]"#),
            PolicyFormat::Glob,
        );
        assert_eq!(
            policy.describe(),
            serde_json::json!(["app-*", "arn:aws:iam::1:role/x"])
        );
        let invalid = NamespacePolicy::parse(Some("nope"), PolicyFormat::Glob);
        assert!(
            invalid.describe()["invalid"]
                .as_str()
                .unwrap()
                .contains("JSON")
        );
        let none = NamespacePolicy::parse(None, PolicyFormat::Glob);
        assert_eq!(none.describe(), serde_json::json!([]));
    }

    #[test]
    fn glob_classes_that_could_match_a_slash_are_refused() {
        for entry in ["ci-[!p]*", "ci-[^p]*", "a[+-0]b", "a[/]b", "x[a/]"] {
            let policy = NamespacePolicy::parse(
                Some(&serde_json::to_string(&[entry]).unwrap()),
                PolicyFormat::Glob,
            );
            assert!(matches!(policy, NamespacePolicy::Invalid(_)), "{entry}");
            assert!(!policy.allows(&role("ci-/admin"), Some(&base())));
        }
        let fine = NamespacePolicy::parse(Some(r#"["ci-[a-z]*", "x[]]y"]"#), PolicyFormat::Glob);
        assert!(fine.allows(&role("ci-build"), Some(&base())));
        assert!(!fine.allows(&role("ci-/admin"), Some(&base())));
    }
}
