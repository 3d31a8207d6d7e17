//! Role annotations and ARNs: never panic, and anything accepted is an ARN
//! STS would take, whose name is what the metadata listing shows.
#![no_main]

use iamlet::roles::{BaseArn, RoleArn, to_role_arn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (annotation, base) = input;
    let base = BaseArn::parse(base).ok();
    if let Some(base) = &base {
        assert!(base.as_str().ends_with('/'));
    }
    let Ok(arn) = to_role_arn(annotation, base.as_ref()) else {
        return;
    };
    let text = arn.as_str();
    assert!(text.starts_with("arn:aws"));
    assert!(text.contains(":iam::") && text.contains(":role/"));
    assert_eq!(arn.account().len(), 12);
    let name = arn.name();
    assert!(!name.is_empty() && name.len() <= 64 && !name.contains('/'));
    assert_eq!(RoleArn::parse(text).as_ref(), Ok(&arn), "parsing is stable");
});
