//! Which pod is behind a source IP: a watch-fed index of this node's pods
//! and of the namespaces' role policies.

mod health;
mod index;
mod info;
mod store;
mod watch;

pub use health::{IndexHealth, WatchKind, WatchReport};
pub use index::IpLookup;
pub use info::{AnnotationKeys, PodInfo, PodKey};
pub use store::{LookupError, PodStore, PodView};
pub use watch::{WatchError, spawn_watchers};
