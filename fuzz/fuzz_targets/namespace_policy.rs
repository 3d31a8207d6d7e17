//! Namespace allow-lists: any annotation text parses to a policy without
//! panicking; an invalid one allows nothing; regexps are anchored.
#![no_main]

use iamlet::roles::{BaseArn, NamespacePolicy, PolicyFormat, RoleArn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, bool, &str)| {
    let (annotation, regexp, role_name) = input;
    let format = if regexp { PolicyFormat::Regexp } else { PolicyFormat::Glob };
    let policy = NamespacePolicy::parse(Some(annotation), format);
    let base = BaseArn::parse("arn:aws:iam::123456789012:role/").ok();
    let Ok(role) = RoleArn::parse(&format!("arn:aws:iam::123456789012:role/{role_name}")) else {
        return;
    };
    let allowed = policy.allows(&role, base.as_ref());
    if matches!(policy, NamespacePolicy::Invalid(_)) {
        assert!(!allowed);
    }
    if let NamespacePolicy::Allows(patterns) = &policy
        && patterns.is_empty()
    {
        assert!(!allowed);
    }
    let _ = policy.describe();
});
