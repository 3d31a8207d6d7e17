//! The fake upstream metadata service lives in the test-server crate, so the
//! network-namespace suite can run it as a process too.

pub use iamlet_testkit::imds::*;
