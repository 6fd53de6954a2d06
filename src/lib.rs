//! kubegate: an authenticating, authorizing and auditing gateway in front of many
//! Kubernetes API servers.
//!
//! This crate is the HTTP layer (routes, authentication, configuration, the CLI's
//! building blocks); the actors live in `kubegate-actors`.

pub mod access;
pub mod admin;
pub mod api;
pub mod audit;
pub mod audit_api;
pub mod auth;
pub mod cli;
pub mod clusters;
pub mod config;
pub mod limits;
pub mod login;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod status;
pub mod tls;
pub mod tokens;
pub mod tunnel;
pub mod upstream;
