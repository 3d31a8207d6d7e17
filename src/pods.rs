//! Which pod is behind a source IP: a watch-fed index of this node's pods,
//! the namespaces' role policies and the ServiceAccounts' roles.

mod health;
mod index;
mod info;
mod store;
mod watch;

pub use health::{IndexHealth, WatchKind, WatchReport};
pub use index::{IpLookup, ServiceAccountInfo};
pub use info::{AnnotationKeys, PodInfo, PodKey};
pub use store::{LookupError, PodStore, PodView};
pub use watch::{WatchError, spawn_watchers};
