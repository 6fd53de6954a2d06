//! The front of every request: its id, the header size limit, the proxy route served
//! before the router, the response count and the access log line.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use super::limits::RateLimit;
use crate::gate::{AuthenticatedUser, Gate, RequestId};
use crate::proxy::Upstreams;
use crate::status::StatusError;

/// Requests with larger headers than this many bytes are refused (431).
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimit(pub usize);

/// A new request id: 32 hex digits, a random prefix drawn once per process (so that
/// replicas do not collide) and a counter (no random draw per request).
fn next_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_string());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // `{prefix}{n:016x}`, without the formatting machinery
    let mut id = String::with_capacity(32);
    id.push_str(prefix);
    for shift in (0..16).rev() {
        let digit = ((n >> (shift * 4)) & 0xf) as u32;
        id.push(char::from_digit(digit, 16).unwrap_or('0'));
    }
    id
}

/// Whether `path` is a proxy path: `/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy...`.
fn is_proxy_path(path: &str) -> bool {
    path.starts_with(crate::proxy::path::PREFIX)
        && path
            .split('/')
            .nth(8)
            .is_some_and(|segment| segment.starts_with("proxy"))
}

/// The size of a request's headers, names and values.
fn header_bytes(req: &ServiceRequest) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The front of every request, the outermost middleware: gives it its request id
/// (echoed as `X-Request-Id`), refuses oversized headers (431), hands proxy requests with
/// a bearer token to the proxy handler before the session middleware and the router
/// (whose patterns would only cost regex matching: the proxy handler parses and checks
/// its path itself), counts the response and writes its access log line.
pub async fn front(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let _in_flight = crate::metrics::InFlight::start();
    // kept in the request, not copied: the handler's audit event takes it from there,
    // and it is taken back when the answer is ready
    req.extensions_mut().insert(RequestId(next_request_id()));
    // taken before the request is handed on (it is moved), and only when it is logged
    let log = log::log_enabled!(target: "kubegate::access", log::Level::Info)
        .then(|| AccessLog::of(&req));
    let limit = req
        .app_data::<web::Data<HeaderLimit>>()
        .map_or(usize::MAX, |limit| limit.0);
    let response = if header_bytes(&req) > limit {
        let error = StatusError::headers_too_large(format!(
            "the request headers are larger than {limit} bytes"
        ));
        req.into_response(error.response()).map_into_right_body()
    } else {
        // a proxy request with a bearer token needs no session: served here, before the
        // session middleware (which would read and rewrite cookies for nothing); one
        // with the session cookie goes on, to `session_proxy`
        let bearer = req.headers().contains_key(header::AUTHORIZATION);
        match proxy_state(&req).filter(|_| bearer) {
            Some((gate, upstreams)) => serve_proxy(req, gate, upstreams)
                .await?
                .map_into_right_body(),
            None => next.call(req).await?.map_into_left_body(),
        }
    };
    let id = response
        .request()
        .extensions_mut()
        .remove::<RequestId>()
        .map(|id| id.0)
        .unwrap_or_default();
    // an answer whose audit event did not reach the file never leaves as it is
    let mut response = if crate::gate::audit::take_unrecorded(&id) {
        let error = StatusError::unavailable(
            "the audit trail cannot record requests right now; kubegate refuses them until it can",
        );
        let req = response.request().clone();
        ServiceResponse::new(req, error.response()).map_into_right_body()
    } else {
        response.map_into_left_body()
    };
    let status = response.status().as_u16();
    crate::metrics::http_request(status);
    if let Some(log) = log {
        log.write(&id, status, started.elapsed(), response.request());
    }
    // the id's own bytes become the header's (its string is exactly as long as its
    // capacity: no copy)
    if let Ok(value) = HeaderValue::try_from(id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}

/// What the access log says of a request, taken before it is handled.
struct AccessLog {
    method: actix_web::http::Method,
    path: String,
    query: String,
    peer: Option<std::net::IpAddr>,
}

impl AccessLog {
    fn of(req: &ServiceRequest) -> AccessLog {
        AccessLog {
            method: req.method().clone(),
            path: req.path().to_string(),
            query: crate::gate::audit::mask_query(req.query_string()),
            peer: req.peer_addr().map(|a| a.ip()),
        }
    }

    /// One line at level info, target `kubegate::access`: request id, client, method,
    /// path with its query (token-like values masked), status, time to the response's
    /// head, and the authenticated user (`-` when none). Never a header value.
    fn write(&self, id: &str, status: u16, elapsed: Duration, req: &actix_web::HttpRequest) {
        // put together by hand: one line per request, and the formatting machinery's
        // cost per argument adds up (the line reads as `{id} {peer} {method}
        // {path}[?{query}] {status} {ms:.1}ms user={user}`)
        let mut line = String::with_capacity(96 + self.path.len() + self.query.len());
        line.push_str(id);
        line.push(' ');
        match self.peer {
            Some(peer) => crate::gate::audit::push_ip(&mut line, peer),
            None => line.push('-'),
        }
        line.push(' ');
        line.push_str(self.method.as_str());
        line.push(' ');
        line.push_str(&self.path);
        if !self.query.is_empty() {
            line.push('?');
            line.push_str(&self.query);
        }
        line.push(' ');
        push_number(&mut line, u64::from(status));
        line.push(' ');
        // milliseconds with one decimal, rounded
        let tenths = (elapsed.as_micros() as u64 + 50) / 100;
        push_number(&mut line, tenths / 10);
        line.push('.');
        push_number(&mut line, tenths % 10);
        line.push_str("ms user=");
        match req.extensions().get::<AuthenticatedUser>() {
            Some(user) => line.push_str(&user.user),
            None => line.push('-'),
        }
        log::info!(target: "kubegate::access", "{line}");
    }
}

/// Appends `n` in decimal.
fn push_number(line: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only
    line.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// What no route serves: a Kubernetes-style 404.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    StatusError::not_found(format!(
        "the server could not find the requested resource {}",
        req.path()
    ))
    .response()
}

/// The proxy route for requests that reach it through the session middleware (those
/// without an `Authorization` header: a browser's, with the session cookie); every other
/// request goes on to the router.
pub async fn session_proxy(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    match proxy_state(&req) {
        Some((gate, upstreams)) => Ok(serve_proxy(req, gate, upstreams)
            .await?
            .map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// The gate's and the proxy's state, when `req` is for the proxy route.
fn proxy_state(req: &ServiceRequest) -> Option<(web::Data<Gate>, web::Data<Upstreams>)> {
    if !is_proxy_path(req.path()) {
        return None;
    }
    let gate = req.app_data::<web::Data<Gate>>()?.clone();
    let upstreams = req.app_data::<web::Data<Upstreams>>()?.clone();
    Some((gate, upstreams))
}

/// Serves a proxy request: the rate limit (which wraps only the router) first, then the
/// proxy handler.
async fn serve_proxy(
    req: ServiceRequest,
    gate: web::Data<Gate>,
    upstreams: web::Data<Upstreams>,
) -> Result<ServiceResponse, actix_web::Error> {
    if let Some(refusal) = req
        .app_data::<RateLimit>()
        .and_then(|limit| limit.refusal(&req))
    {
        return Ok(req.into_response(refusal));
    }
    let (http, mut payload) = req.into_parts();
    let payload =
        <web::Payload as actix_web::FromRequest>::from_request(&http, &mut payload).await?;
    let answer = crate::proxy::handle(http.clone(), payload, gate, upstreams).await;
    Ok(ServiceResponse::new(http, answer))
}

#[cfg(test)]
mod tests {
    use super::next_request_id;

    #[test]
    fn request_ids_are_a_process_prefix_and_a_counter_in_32_hex_digits() {
        let (a, b) = (next_request_id(), next_request_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_eq!(a[..16], b[..16], "one prefix per process");
        let (n, m) = (
            u64::from_str_radix(&a[16..], 16).unwrap(),
            u64::from_str_radix(&b[16..], 16).unwrap(),
        );
        // other tests of this binary may draw ids in between
        assert!(m > n, "{a} then {b}");
    }
}
