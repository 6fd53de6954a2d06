//! The shared test harness: a Kubernetes API server stand-in, a PKI for it, and kubegate
//! started on port 0 in front of it.
#![allow(dead_code)]

pub mod addresses;
pub mod apiserver;
pub mod asciicast;
pub mod binary;
pub mod browser;
pub mod certs;
pub mod gateway;
pub mod http;
pub mod kubectl;
pub mod ldap;
pub mod limited_h2;
pub mod oidc;
pub mod openapi;
pub mod postgres;
pub mod postgres_tls;
pub mod raw;
pub mod relay;
pub mod session;
pub mod vault;
pub mod websocket;
