//! Per-client rate limits: a middleware that counts the requests of each client address
//! to a set of path prefixes (login, token endpoints) and answers 429 past the limit.
//!
//! The limit is governor's keyed GCRA limiter, which behaves as a token bucket per
//! (prefix, client address): `burst` requests at once, refilled at `per_minute`. Its
//! store keeps a client until a sweep (every minute, and whenever 50,000 are kept) finds
//! it back at a full budget; should 50,000 be limited at once, all counts start over
//! rather than memory grows. It wraps the router with `.wrap(..)`, and `front` asks it
//! for proxy paths (served before the router), so that every configured prefix is
//! limited, the proxy route's included. It touches only requests whose path starts with
//! one of its prefixes; every other request
//! costs a few `starts_with`. The budgets are shared by all workers behind one mutex
//! (governor's hash-map store), which only limited requests take (login and token calls
//! are rare next to proxied ones).
//!
//! The client is the connection's peer address; when that peer is one of
//! `trusted_proxies` (a load balancer, an ingress), it is the nearest address in
//! `X-Forwarded-For` that is not a trusted proxy itself.

use std::future::{ready, Future, Ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

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
/// Clients kept before those back at a full budget are dropped (and, should that many
/// still be limited at once, all of them: counts start over rather than memory grows).
const PRUNE_AT: usize = 50_000;

/// (prefix index, client): what a budget belongs to.
type Key = (usize, IpAddr);
/// governor's keyed GCRA limiter (a token bucket's behaviour: a burst, then a steady
/// rate), with a clock the tests can move.
type Keyed<C> = governor::RateLimiter<
    Key,
    governor::state::keyed::HashMapStateStore<Key>,
    C,
    governor::middleware::NoOpMiddleware<<C as governor::clock::Clock>::Instant>,
>;

/// A rate limit on some path prefixes, per client address.
#[derive(Clone)]
pub struct RateLimit {
    inner: Arc<Limiter<governor::clock::DefaultClock>>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("prefixes", &self.inner.prefixes)
            .finish_non_exhaustive()
    }
}

struct Limiter<C: governor::clock::Clock + Clone> {
    prefixes: Vec<String>,
    trusted_proxies: Vec<Network>,
    quota: Option<governor::Quota>,
    clock: C,
    /// Replaced whole when [`PRUNE_AT`] clients are limited at once.
    buckets: std::sync::RwLock<Keyed<C>>,
}

impl<C: governor::clock::Clock + Clone> Limiter<C> {
    fn new(prefixes: Vec<String>, per_minute: u32, burst: u32, clock: C) -> Self {
        let quota = std::num::NonZeroU32::new(per_minute).map(|rate| {
            governor::Quota::per_minute(rate)
                .allow_burst(std::num::NonZeroU32::new(burst.max(1)).unwrap_or(rate))
        });
        let unlimited = governor::Quota::per_second(std::num::NonZeroU32::MIN);
        Limiter {
            prefixes: if quota.is_some() {
                prefixes
            } else {
                Vec::new()
            },
            trusted_proxies: Vec::new(),
            buckets: std::sync::RwLock::new(Keyed::hashmap_with_clock(
                quota.unwrap_or(unlimited),
                clock.clone(),
            )),
            quota,
            clock,
        }
    }

    /// Takes one request from the budget of (`prefix`, `client`): `Ok`, or how long until
    /// the next one is allowed.
    fn take(&self, prefix: usize, client: IpAddr) -> Result<(), Duration> {
        let answer = {
            let buckets = self.buckets.read().unwrap_or_else(|p| p.into_inner());
            let answer = buckets.check_key(&(prefix, client));
            if buckets.len() < PRUNE_AT {
                return answer.map_err(|at| at.wait_time_from(self.clock.now()));
            }
            answer
        };
        self.prune();
        answer.map_err(|at| at.wait_time_from(self.clock.now()))
    }

    /// Drops the clients back at a full budget; with [`PRUNE_AT`] still limited, all.
    fn prune(&self) {
        let mut buckets = self.buckets.write().unwrap_or_else(|p| p.into_inner());
        buckets.retain_recent();
        buckets.shrink_to_fit();
        if buckets.len() >= PRUNE_AT {
            log::warn!(
                "rate limit: {} clients are being limited; their counts start over",
                buckets.len()
            );
            if let Some(quota) = self.quota {
                *buckets = Keyed::hashmap_with_clock(quota, self.clock.clone());
            }
        }
    }
}

impl RateLimit {
    /// A limit of `per_minute` requests (after a first `burst`) per client to paths
    /// starting with one of `prefixes`; each prefix has its own budget. `per_minute = 0`
    /// turns the limit off.
    pub fn new(prefixes: Vec<String>, per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            inner: Arc::new(Limiter::new(
                prefixes,
                per_minute,
                burst,
                governor::clock::DefaultClock::default(),
            )),
        }
    }

    /// Trusts `X-Forwarded-For` from peers in `networks`.
    pub fn with_trusted_proxies(self, networks: Vec<Network>) -> RateLimit {
        match Arc::try_unwrap(self.inner) {
            Ok(mut limiter) => {
                limiter.trusted_proxies = networks;
                RateLimit {
                    inner: Arc::new(limiter),
                }
            }
            // shared already: only at start, where it is not
            Err(shared) => RateLimit { inner: shared },
        }
    }

    /// Drops the clients that are back at a full budget: run every minute, so that the
    /// memory of the limit follows the clients being limited now.
    pub fn sweep(&self) {
        self.inner.prune();
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

    /// The 429 for `req` when its client is over the limit of its path's prefix; takes
    /// one request from the client's budget otherwise. The middleware asks it for the
    /// routes of the router; `front` asks it for the proxy route, which it serves before
    /// the router.
    pub fn refusal(&self, req: &ServiceRequest) -> Option<HttpResponse> {
        let prefix = self.limited(req.path())?;
        let client = self.client(req)?;
        let wait = self.inner.take(prefix, client).err()?;
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
        // refused, so recorded (a flood of them from one client is summed up, as 401s are)
        if let Some(gate) = req.app_data::<actix_web::web::Data<crate::gate::Gate>>() {
            let mut audit = gate.record(req.request());
            audit.event.path = req.path().to_string();
            audit.event.reason = format!("rate limited: over the limit of {name}*");
            let bytes_out = match actix_web::body::MessageBody::size(response.body()) {
                actix_web::body::BodySize::Sized(n) => n,
                _ => 0,
            };
            gate.refused(
                req.request(),
                audit,
                response.status(),
                &format!("too many requests to {name}"),
                bytes_out,
            );
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
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = Limiter::new(vec!["/auth/".into()], 60, 3, clock.clone());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(limiter.take(0, a).is_ok());
        }
        let wait = limiter.take(0, a).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(
            limiter.take(0, b).is_ok(),
            "another client has its own bucket"
        );
        clock.advance(Duration::from_millis(1001));
        assert!(limiter.take(0, a).is_ok());
        clock.advance(Duration::from_millis(1));
        assert!(limiter.take(0, a).is_err());
        // a sweep forgets the clients back at a full budget only
        clock.advance(Duration::from_secs(2));
        limiter.prune();
        assert_eq!(
            limiter.buckets.read().unwrap().len(),
            1,
            "a is still limited"
        );
        clock.advance(Duration::from_secs(10));
        limiter.prune();
        assert_eq!(limiter.buckets.read().unwrap().len(), 0);
        let limit = RateLimit::new(vec!["/auth/".into()], 60, 3);
        assert_eq!(limit.limited("/auth/github/login"), Some(0));
        assert_eq!(limit.limited("/pipeline/api/v1/orgs"), None);
        assert_eq!(limit.limited("/auth/cli/authorize"), Some(0));
        assert_eq!(
            limit.limited("/auth/cli/token"),
            None,
            "limited per credential"
        );
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
