//! iamlet: per-pod AWS IAM roles for Kubernetes.
//!
//! A node agent that answers pods' instance-metadata credential requests
//! with credentials for the role their `iam.amazonaws.com/role` annotation
//! names. See ARCHITECTURE.md for the map.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod entitlement;
pub mod events;
pub mod explain;
pub mod firewall;
pub mod identity;
pub mod imds;
pub mod pods;
pub mod roles;
pub mod startup;
pub mod telemetry;
pub mod token_review;
