//! The metadata HTTP server pods talk to: routes, IMDSv2 tokens, credential
//! answers and the proxy to the real metadata service; and the container
//! credentials endpoint beside it.

mod agent;
mod connection;
mod container;
mod decisions;
mod handler;
mod limit;
mod proxy;
pub mod responses;
pub mod routes;
mod server;
pub mod token;

pub use connection::{Connection, ConnectionLimits};
pub use container::{CREDENTIALS_PATH, ContainerEndpoint};
pub use decisions::{DecisionLog, SAMPLE_WINDOW};
pub use handler::{Listener, MetadataService, ServiceSettings};
pub use limit::RateLimiter;
pub use proxy::{ProxyError, Upstream};
pub use server::serve;
pub use token::TokenIssuer;
