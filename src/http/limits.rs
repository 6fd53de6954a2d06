//! Per-client rate limits: a middleware that counts the requests of each client address
//! to a set of path prefixes (login, token endpoints) and answers 429 past the limit.
//!
//! The limit is a token bucket per (prefix, client address): `burst` requests at once,
//! refilled at `per_minute`. It wraps the router with `.wrap(..)`, and `front` asks it
//! for proxy paths (served before the router), so that every configured prefix is
//! limited, the proxy route's included. It touches only requests whose path starts with
//! one of its prefixes; every other request
//! costs a few `starts_with`. The buckets are shared by all workers behind one mutex,
//! which only limited requests take (login and token calls are rare next to proxied ones).
//!
//! The client is the connection's peer address; when that peer is one of
//! `trusted_proxies` (a load balancer, an ingress), it is the nearest address in
//! `X-Forwarded-For` that is not a trusted proxy itself.

use std::collections::HashMap;
use std::future::{ready, Future, Ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::HttpResponse;
use kubegate_actors::network::Network;

use crate::status::StatusError;

/// Paths the address limit leaves to per-credential limits: the token endpoint of
/// kubectl single sign-on (refreshes per session, device polls per code; codes are
/// single-use), and the session check of `kubegate credential`.
const PER_CREDENTIAL: [&str; 2] = ["/auth/cli/token", "/auth/session"];
/// Buckets kept before full (idle) ones are dropped.
const PRUNE_AT: usize = 50_000;

/// A rate limit on some path prefixes, per client address.
#[derive(Debug, Clone)]
pub struct RateLimit {
    inner: Arc<Limiter>,
}

#[derive(Debug)]
struct Limiter {
    prefixes: Vec<String>,
    per_second: f64,
    burst: f64,
    trusted_proxies: Vec<Network>,
    buckets: Mutex<HashMap<(usize, IpAddr), Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A limit of `per_minute` requests (after a first `burst`) per client to paths
    /// starting with one of `prefixes`; each prefix has its own budget. `per_minute = 0`
    /// turns the limit off.
    pub fn new(prefixes: Vec<String>, per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            inner: Arc::new(Limiter {
                prefixes: if per_minute == 0 {
                    Vec::new()
                } else {
                    prefixes
                },
                per_second: f64::from(per_minute) / 60.0,
                burst: f64::from(burst.max(1)),
                trusted_proxies: Vec::new(),
                buckets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Trusts `X-Forwarded-For` from peers in `networks`.
    pub fn with_trusted_proxies(self, networks: Vec<Network>) -> RateLimit {
        let limiter = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Limiter {
            prefixes: shared.prefixes.clone(),
            per_second: shared.per_second,
            burst: shared.burst,
            trusted_proxies: Vec::new(),
            buckets: Mutex::new(HashMap::new()),
        });
        RateLimit {
            inner: Arc::new(Limiter {
                trusted_proxies: networks,
                ..limiter
            }),
        }
    }

    /// The prefix of `path` that is limited, by its index. kubectl's exec plugin calls
    /// [`PER_CREDENTIAL`] on every kubectl run: those are limited per credential
    /// (`crate::login::kubectl`), not per address, so that people behind one NAT
    /// address are not refused together.
    fn limited(&self, path: &str) -> Option<usize> {
        if PER_CREDENTIAL.contains(&path) {
            return None;
        }
        self.inner
            .prefixes
            .iter()
            .position(|p| path.starts_with(p.as_str()))
    }

    /// Takes one request from the bucket of (`prefix`, `client`) at `now`: `Ok`, or how
    /// long until the next one is allowed.
    fn take(&self, prefix: usize, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let limiter = &self.inner;
        let mut buckets = limiter
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= PRUNE_AT {
            let (per_second, burst) = (limiter.per_second, limiter.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
            });
            if buckets.len() >= PRUNE_AT {
                // that many clients limited at once: start over rather than grow
                log::warn!(
                    "rate limit: {} clients are being limited; their counts start over",
                    buckets.len()
                );
                buckets.clear();
            }
        }
        let bucket = buckets.entry((prefix, client)).or_insert(Bucket {
            tokens: limiter.burst,
            at: now,
        });
        let refilled =
            bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * limiter.per_second;
        bucket.tokens = refilled.min(limiter.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / limiter.per_second,
            ))
        }
    }

    /// The 429 for `req` when its client is over the limit of its path's prefix; takes
    /// one request from the client's budget otherwise. The middleware asks it for the
    /// routes of the router; `front` asks it for the proxy route, which it serves before
    /// the router.
    pub fn refusal(&self, req: &ServiceRequest) -> Option<HttpResponse> {
        let prefix = self.limited(req.path())?;
        let client = self.client(req)?;
        let wait = self.take(prefix, client, Instant::now()).err()?;
        let name = &self.inner.prefixes[prefix];
        crate::metrics::rate_limited(name);
        let seconds = wait.as_secs().max(1);
        log::warn!("rate limit: {client} sent too many requests to {name}*");
        let mut response = StatusError::too_many_requests(format!(
            "too many requests to {name}; try again in {seconds} s"
        ))
        .response();
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        Some(response)
    }

    /// The client of `req`: the peer, or, behind a trusted proxy, the nearest address of
    /// `X-Forwarded-For` that is not one.
    fn client(&self, req: &ServiceRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let trusted = |ip: &IpAddr| self.inner.trusted_proxies.iter().any(|n| n.contains(*ip));
        if !trusted(&peer) {
            return Some(client_key(peer));
        }
        let forwarded: Vec<IpAddr> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        Some(client_key(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !trusted(ip))
                .unwrap_or(peer),
        ))
    }
}

/// What the limit counts by: an IPv4 address, or the /64 network of an IPv6 address
/// (one client commonly has a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl<S, B> Transform<S, ServiceRequest> for RateLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = RateLimited<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RateLimited {
            service: Rc::new(service),
            limit: self.clone(),
        }))
    }
}

/// The service [`RateLimit`] wraps around the next one.
pub struct RateLimited<S> {
    service: Rc<S>,
    limit: RateLimit,
}

impl<S, B> Service<ServiceRequest> for RateLimited<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    #[allow(clippy::type_complexity)]
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if let Some(response) = self.limit.refusal(&req) {
            return Box::pin(ready(Ok(req.into_response(response).map_into_right_body())));
        }
        let service = self.service.clone();
        Box::pin(async move { Ok(service.call(req).await?.map_into_left_body()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let limit = RateLimit::new(vec!["/auth/".into()], 60, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limit.take(0, a, t0).is_ok());
        }
        let wait = limit.take(0, a, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(
            limit.take(0, b, t0).is_ok(),
            "another client has its own bucket"
        );
        assert!(limit.take(0, a, t0 + Duration::from_millis(1001)).is_ok());
        assert!(limit.take(0, a, t0 + Duration::from_millis(1002)).is_err());
        assert_eq!(limit.limited("/auth/github/login"), Some(0));
        assert_eq!(limit.limited("/pipeline/api/v1/orgs"), None);
        assert_eq!(
            RateLimit::new(vec!["/auth/".into()], 0, 3).limited("/auth/x"),
            None
        );
        let (one, other): (IpAddr, IpAddr) = (
            "2001:db8:1:2:aaaa::1".parse().unwrap(),
            "2001:db8:1:2:bbbb::9".parse().unwrap(),
        );
        assert_eq!(client_key(one), client_key(other), "one /64, one client");
        assert_ne!(
            client_key(one),
            client_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(
            client_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
