//! Logs and metrics.

mod logging;
pub mod metrics;

pub use logging::init;
pub use metrics::Metrics;
