//! kubegate: an authenticating, authorizing and auditing gateway in front of many
//! Kubernetes API servers.
//!
//! This crate is the HTTP layer (routes, authentication, configuration, the CLI's
//! building blocks); the actors live in `kubegate-actors`.

pub mod api;
pub mod cli;
pub mod clusters;
pub mod config;
pub mod gate;
pub mod http;
pub mod login;
pub mod metrics;
pub mod proxy;
pub mod status;
