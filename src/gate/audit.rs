//! Building audit events on the request path and handing them to the Auditor actor.
//!
//! Streamed responses (lists, watches) are audited when they end, with the bytes that
//! went each way, by wrapping the bodies in [`Counted`] streams.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix::Recipient;
use actix_web::HttpRequest;
use bytes::Bytes;
use futures_util::Stream;
use kubegate_actors::attributes::RequestAttributes;
use kubegate_actors::auditor::{AuditDecision, AuditEvent, Journal, RecordBatch, Recorded};

/// Query parameters whose values are never recorded.
const SECRET_QUERY_KEYS: [&str; 8] = [
    "token",
    "password",
    "secret",
    "auth",
    "key",
    "sig",
    "code",
    "credential",
];

/// Masks the values of token-like query parameters.
pub fn mask_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_key(k) => format!("{k}=REDACTED"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_QUERY_KEYS.iter().any(|s| key.contains(s))
}

/// Where a worker's events go: the audit file first, written on the request path (the
/// [`Journal`], when the file is a sink), and the Auditor actor for the other sinks.
///
/// Cloned for every answer whose body is audited: the Auditor's address is shared, since
/// each clone of an actix `Recipient` allocates twice (its boxed sender and the sender's
/// task).
#[derive(Clone)]
pub struct AuditTrail {
    auditor: Arc<Recipient<RecordBatch>>,
    journal: Option<Arc<Journal>>,
    /// Whether the Auditor has sinks beside the journal's file.
    others: bool,
}

/// An event that did not reach the audit file: the request must not be answered as if it
/// were recorded (the event waits in the journal's backlog).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit trail cannot record request {request_id}: {reason}")]
pub struct Unrecorded {
    /// The request's id.
    pub request_id: String,
    /// Why.
    pub reason: String,
}

thread_local! {
    /// Requests of this worker answered in their handler whose event the file did not
    /// take: `front` answers them 503 instead (see [`take_unrecorded`]).
    static UNRECORDED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Whether the event of request `id`, finished by its handler, did not reach the audit
/// file (asked once per request, by the outermost middleware, which then answers 503).
pub fn take_unrecorded(id: &str) -> bool {
    UNRECORDED.with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.is_empty() {
            return false;
        }
        let before = ids.len();
        ids.retain(|known| known != id);
        // bounded whatever happens: ids of requests that never came back here go too
        if ids.len() > 1024 {
            ids.clear();
        }
        ids.len() != before
    })
}

impl AuditTrail {
    /// Events go to `auditor` only, in batches.
    pub fn new(auditor: Recipient<RecordBatch>) -> AuditTrail {
        AuditTrail {
            auditor: Arc::new(auditor),
            journal: None,
            others: true,
        }
    }

    /// Events are written to `journal` before their requests are answered; `others`:
    /// whether the Auditor has other sinks to hand them to.
    pub fn with_journal(mut self, journal: Arc<Journal>, others: bool) -> AuditTrail {
        self.journal = Some(journal);
        self.others = others;
        self
    }

    /// The Auditor.
    pub fn auditor(&self) -> &Recipient<RecordBatch> {
        &self.auditor
    }

    /// Records `event`: in the audit file now (when it is a sink), then with the other
    /// sinks in batches. An error means the file did not take it.
    pub fn record(&self, event: AuditEvent) -> Result<(), Unrecorded> {
        let Some(journal) = &self.journal else {
            submit(&self.auditor, event);
            return Ok(());
        };
        let recorded = journal.record(&event);
        if matches!(recorded, Ok(Recorded::Aggregated)) {
            return Ok(());
        }
        let recorded = recorded.map(|_| ()).map_err(|e| Unrecorded {
            request_id: event.request_id.clone(),
            reason: e.to_string(),
        });
        if self.others {
            submit(&self.auditor, event);
        }
        recorded
    }
}

/// The RFC 3339 time of `seconds` since the epoch, to the second and without its `Z`
/// (`2026-12-07T11:50:31`), formatted once a second on each thread: the audit events' times
/// and the log's lines begin with it.
pub fn second_text(seconds: u64) -> Rc<str> {
    thread_local! {
        static LAST: RefCell<(u64, Rc<str>)> = RefCell::new((u64::MAX, Rc::from("")));
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != seconds {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            *last = (seconds, Rc::from(text.trim_end_matches('Z')));
        }
        last.1.clone()
    })
}

/// `now` as an event's time says it, RFC 3339 to the millisecond
/// (`2026-12-07T11:50:31.326Z`, as `humantime::format_rfc3339_millis` writes it), the part
/// up to the second from [`second_text`].
fn event_time(now: SystemTime) -> String {
    let Ok(since) = now.duration_since(SystemTime::UNIX_EPOCH) else {
        return humantime::format_rfc3339_millis(now).to_string();
    };
    let (second, millis) = (second_text(since.as_secs()), since.subsec_millis());
    let mut time = String::with_capacity(second.len() + 5);
    time.push_str(&second);
    time.push('.');
    for digit in [millis / 100, millis / 10 % 10, millis % 10] {
        time.push(char::from(b'0' + digit as u8));
    }
    time.push('Z');
    time
}

/// A method as the event's text: the standard ones are not copied.
fn method_text(method: &actix_web::http::Method) -> std::borrow::Cow<'static, str> {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|m| **m == method.as_str()) {
        Some(m) => std::borrow::Cow::Borrowed(m),
        None => std::borrow::Cow::Owned(method.as_str().to_string()),
    }
}

/// An address as text, as `Display` writes it. IPv4 (nearly every client) is written
/// digit by digit: `Ipv4Addr`'s `Display` goes through the formatting machinery and its
/// padding, a cost paid several times per request (audit event, access log,
/// `X-Forwarded-For`).
pub fn ip_text(ip: std::net::IpAddr) -> String {
    if ip.is_ipv6() {
        return ip.to_string();
    }
    let mut text = String::with_capacity(15);
    push_ip(&mut text, ip);
    text
}

/// Appends an address as [`ip_text`] writes it.
pub fn push_ip(text: &mut String, ip: std::net::IpAddr) {
    let std::net::IpAddr::V4(v4) = ip else {
        text.push_str(&ip.to_string());
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
}

/// Events gathered by workers and not yet handed to the Auditor, in every worker.
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// A worker hands its events over when it has this many...
const BATCH: usize = 32;
/// ...or when the first of them has waited this long.
const LINGER: Duration = Duration::from_millis(20);

/// The events one worker has gathered.
#[derive(Default)]
struct WorkerEvents {
    events: Vec<AuditEvent>,
    auditor: Option<Recipient<RecordBatch>>,
    timer_set: bool,
}

impl Drop for WorkerEvents {
    /// A worker that stops hands over what it still holds.
    fn drop(&mut self) {
        if let Some(auditor) = self.auditor.take() {
            hand_over(&auditor, std::mem::take(&mut self.events));
        }
    }
}

thread_local! {
    static GATHERED: RefCell<WorkerEvents> = RefCell::new(WorkerEvents::default());
}

/// Hands an event to the Auditor: gathered by this worker and sent with others within
/// [`LINGER`], so that a busy worker does not wake the auditor's thread per request.
pub fn submit(auditor: &Recipient<RecordBatch>, event: AuditEvent) {
    PENDING.fetch_add(1, Ordering::AcqRel);
    let (full, set_timer) = GATHERED.with(|gathered| {
        let mut gathered = gathered.borrow_mut();
        if gathered.auditor.is_none() {
            gathered.auditor = Some(auditor.clone());
        }
        gathered.events.push(event);
        let set_timer = !gathered.timer_set;
        gathered.timer_set = true;
        (gathered.events.len() >= BATCH, set_timer)
    });
    if full {
        hand_over_gathered();
    } else if set_timer {
        match actix_rt::Arbiter::try_current() {
            Some(arbiter) => {
                arbiter.spawn(async {
                    actix_rt::time::sleep(LINGER).await;
                    hand_over_gathered();
                });
            }
            None => hand_over_gathered(),
        }
    }
}

fn hand_over_gathered() {
    let taken = GATHERED.with(|gathered| {
        let mut gathered = gathered.borrow_mut();
        gathered.timer_set = false;
        let auditor = gathered.auditor.clone()?;
        Some((auditor, std::mem::take(&mut gathered.events)))
    });
    if let Some((auditor, events)) = taken {
        hand_over(&auditor, events);
    }
}

/// `try_send` first (it cannot be cancelled, so events handed over while a worker shuts
/// down still arrive); when the mailbox is full, `send` with back-pressure on this
/// worker. A closed mailbox is logged, never silent.
fn hand_over(auditor: &Recipient<RecordBatch>, events: Vec<AuditEvent>) {
    use actix::dev::SendError;
    let count = events.len();
    if count == 0 {
        return;
    }
    match auditor.try_send(RecordBatch(events)) {
        Ok(()) => {
            PENDING.fetch_sub(count, Ordering::AcqRel);
        }
        Err(SendError::Full(batch)) => {
            let request = auditor.send(batch);
            match actix_rt::Arbiter::try_current() {
                Some(arbiter) => {
                    arbiter.spawn(async move {
                        if let Err(e) = request.await {
                            log::error!("{count} audit events lost: {e}");
                        }
                        PENDING.fetch_sub(count, Ordering::AcqRel);
                    });
                }
                None => {
                    log::error!("{count} audit events lost: the auditor is busy and this worker is stopping");
                    PENDING.fetch_sub(count, Ordering::AcqRel);
                }
            }
        }
        Err(SendError::Closed(_)) => {
            log::error!("{count} audit events lost: the auditor has stopped");
            PENDING.fetch_sub(count, Ordering::AcqRel);
        }
    }
}

/// Waits (at shutdown) until every worker has handed over what it gathered, for at most
/// `limit`. Returns how many events were still not handed over.
pub async fn drain_workers(limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let pending = PENDING.load(Ordering::Acquire);
        if pending == 0 || Instant::now() >= deadline {
            return pending;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What is known of a request while it is handled; becomes its [`AuditEvent`].
pub struct AuditContext {
    started: Instant,
    /// Lets shutdown wait until this request's event is submitted.
    _pending: Option<crate::metrics::AuditPending>,
    /// The event being filled in.
    pub event: AuditEvent,
}

impl AuditContext {
    /// Starts an event for `req`; `pending` lets shutdown wait for it (see
    /// [`crate::gate::Gate::record`], which every handler uses).
    pub fn new(
        req: &HttpRequest,
        request_id: &str,
        pending: Option<crate::metrics::AuditPending>,
    ) -> AuditContext {
        // at most 256 characters, copied at once
        let header = |name: &str| {
            let value = req
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match value.char_indices().nth(256) {
                Some((end, _)) => value[..end].to_string(),
                None => value.to_string(),
            }
        };
        AuditContext {
            started: Instant::now(),
            _pending: pending,
            event: AuditEvent {
                time: event_time(SystemTime::now()),
                request_id: request_id.to_string(),
                user: String::new(),
                org: None,
                cluster: None,
                attributes: RequestAttributes::default(),
                method: method_text(req.method()),
                path: String::new(),
                query: mask_query(req.uri().query().unwrap_or("")),
                client: req.peer_addr().map(|a| ip_text(a.ip())).unwrap_or_default(),
                user_agent: header("user-agent"),
                status: 0,
                duration_ms: 0.0,
                bytes_in: 0,
                bytes_out: 0,
                decision: AuditDecision::Deny,
                reason: String::new(),
                error: None,
                request_body: None,
                aggregated: None,
                ended: None,
                acting_as: None,
                recording: None,
            },
        }
    }

    /// Completes the event and records it, before the handler's answer leaves: when the
    /// audit file does not take it, the answer is replaced by a 503 (see
    /// [`take_unrecorded`]).
    pub fn finish(self, trail: &AuditTrail, status: u16, bytes_in: u64, bytes_out: u64) {
        if let Err(e) = self.complete(trail, status, bytes_in, bytes_out) {
            UNRECORDED.with(|ids| ids.borrow_mut().push(e.request_id));
        }
    }

    /// Completes the event and records it; an error means the audit file did not take it.
    pub fn complete(
        mut self,
        trail: &AuditTrail,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<(), Unrecorded> {
        self.event.status = status;
        self.event.bytes_in = bytes_in;
        self.event.bytes_out = bytes_out;
        let elapsed = self.started.elapsed();
        self.event.duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        crate::metrics::request(
            self.event.org,
            self.event.cluster,
            &self.event.attributes.verb,
            status,
            elapsed,
        );
        trail.record(self.event)
    }
}

/// The first bytes of a request body, kept for the audit record.
#[derive(Debug, Default)]
pub struct CapturedBody {
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl CapturedBody {
    /// Keeps at most `limit` bytes; past that, only that it was longer.
    pub fn new(limit: usize) -> Rc<RefCell<CapturedBody>> {
        Rc::new(RefCell::new(CapturedBody {
            bytes: Vec::new(),
            limit,
            truncated: false,
        }))
    }

    fn push(&mut self, chunk: &[u8]) {
        if self.truncated {
            return;
        }
        if self.bytes.len() + chunk.len() > self.limit {
            // never keep part of a body: it could be part of a secret
            self.truncated = true;
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(chunk);
        }
    }

    /// The body as the audit record keeps it: redacted JSON, or a note.
    pub fn record(&self, seen: u64) -> serde_json::Value {
        if self.truncated {
            return serde_json::json!({"unrecorded": "longer than audit.max_body_bytes", "bytes": seen});
        }
        match serde_json::from_slice::<serde_json::Value>(&self.bytes) {
            Ok(mut body) => {
                redact(&mut body);
                body
            }
            Err(_) => serde_json::json!({"unrecorded": "not JSON", "bytes": seen}),
        }
    }
}

/// Keys whose values are never recorded (after Rancher's list): matched in lower case,
/// anywhere in the key.
const SECRET_KEYS: [&str; 12] = [
    "password",
    "passphrase",
    "token",
    "secret",
    "privatekey",
    "private_key",
    "accesskey",
    "secretkey",
    "clientkey",
    "kubeconfig",
    "credential",
    "apikey",
];

/// Redacts a request body in place: every value of a Secret's `data` and `stringData`,
/// and the value of every key that names a secret thing, at any depth.
pub fn redact(body: &mut serde_json::Value) {
    use serde_json::Value;
    if body.get("kind").and_then(Value::as_str) == Some("Secret") {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(map)) = body.get_mut(field) {
                for value in map.values_mut() {
                    *value = Value::String("REDACTED".into());
                }
            }
        }
    }
    match body {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let lower = key.to_ascii_lowercase();
                if SECRET_KEYS.iter().any(|k| lower.contains(k)) {
                    *value = Value::String("REDACTED".into());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Counts the bytes of a stream into a shared cell, and keeps the first of them when
/// asked to.
pub struct Counted<S> {
    inner: S,
    count: Rc<Cell<u64>>,
    capture: Option<Rc<RefCell<CapturedBody>>>,
}

impl<S> Counted<S> {
    /// Wraps `inner`; `count` grows with every chunk.
    pub fn new(inner: S, count: Rc<Cell<u64>>) -> Self {
        Counted {
            inner,
            count,
            capture: None,
        }
    }

    /// Also keeps the body (up to its limit) in `capture`.
    pub fn capturing(mut self, capture: Rc<RefCell<CapturedBody>>) -> Self {
        self.capture = Some(capture);
        self
    }
}

impl<S, E> Stream for Counted<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.count.set(self.count.get() + chunk.len() as u64);
            if let Some(capture) = &self.capture {
                capture.borrow_mut().push(chunk);
            }
        }
        polled
    }
}

/// A response body that records the request's audit event before its last bytes go
/// out (with the last chunk of a body of known length, else at its end, before the
/// chunked encoding's last chunk), or when it is dropped early (the client went away
/// mid-stream, the API server's body broke).
pub struct AuditedBody<S> {
    inner: S,
    sent: u64,
    /// The body's length, when known.
    length: Option<u64>,
    failed: Option<String>,
    received: Rc<Cell<u64>>,
    body: Option<Rc<RefCell<CapturedBody>>>,
    pending: Option<(AuditContext, AuditTrail, u16)>,
    /// The event could not be recorded: the body ended with an error instead.
    cut: bool,
    /// Counts a watch in `kubegate_open_watches` while it streams.
    _watch: Option<crate::metrics::OpenWatch>,
}

/// Why an audited body ended before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The API server's body broke.
    #[error("upstream body: {0}")]
    Upstream(String),
    /// The audit trail did not take the request's event: the client must not get a
    /// whole answer.
    #[error(transparent)]
    Unrecorded(#[from] Unrecorded),
}

impl<S> AuditedBody<S> {
    /// Wraps `inner`, whose length is `length` when known; `received` counts the request
    /// body.
    pub fn new(
        inner: S,
        ctx: AuditContext,
        trail: AuditTrail,
        status: u16,
        received: Rc<Cell<u64>>,
        length: Option<u64>,
    ) -> Self {
        let watch = (ctx.event.attributes.verb == "watch").then(crate::metrics::OpenWatch::start);
        AuditedBody {
            inner,
            sent: 0,
            length,
            failed: None,
            received,
            body: None,
            pending: Some((ctx, trail, status)),
            cut: false,
            _watch: watch,
        }
    }

    /// Records the request body kept in `body` with the event.
    pub fn with_request_body(mut self, body: Option<Rc<RefCell<CapturedBody>>>) -> Self {
        self.body = body;
        self
    }

    /// Records the event of an answer without a body, in its handler (see
    /// [`AuditContext::finish`]).
    pub fn finish_now(mut self) {
        if let Some((ctx, trail, status)) = self.take_event() {
            ctx.finish(&trail, status, self.received.get(), self.sent);
        }
    }

    fn take_event(&mut self) -> Option<(AuditContext, AuditTrail, u16)> {
        let (mut ctx, trail, status) = self.pending.take()?;
        if let Some(error) = self.failed.take() {
            ctx.event.error = Some(error);
        }
        if let Some(body) = self.body.take() {
            ctx.event.request_body = Some(body.borrow().record(self.received.get()));
        }
        Some((ctx, trail, status))
    }

    fn record(&mut self) -> Result<(), Unrecorded> {
        match self.take_event() {
            Some((ctx, trail, status)) => {
                ctx.complete(&trail, status, self.received.get(), self.sent)
            }
            None => Ok(()),
        }
    }
}

impl<S, E> Stream for AuditedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cut {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        let ended = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.sent += chunk.len() as u64;
                let last = self.length.is_some_and(|length| self.sent >= length);
                if !last {
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Some(chunk)
            }
            Poll::Ready(Some(Err(e))) => {
                let error = format!("upstream body: {e}");
                self.failed = Some(error);
                return Poll::Ready(Some(Err(BodyError::Upstream(e.to_string()))));
            }
            Poll::Ready(None) => None,
        };
        // the last bytes: the event goes first
        match self.record() {
            Ok(()) => Poll::Ready(ended.map(Ok)),
            Err(e) => {
                self.cut = true;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }
}

impl<S> Drop for AuditedBody<S> {
    fn drop(&mut self) {
        // a body cut short: nothing whole was answered, so nothing more to do on error
        let _ = self.record();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event's time reads as humantime writes it, at every millisecond of a second
    /// and across seconds (the part up to the second is kept per thread).
    #[test]
    fn event_times_read_as_humantime_writes_them() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_644_231_000);
        for millis in (0..2_500).step_by(7).chain([999, 1_000, 1_001, 86_400_000]) {
            let now = start + Duration::from_millis(millis) + Duration::from_micros(999);
            assert_eq!(
                event_time(now),
                humantime::format_rfc3339_millis(now).to_string()
            );
        }
        let now = SystemTime::now();
        assert_eq!(
            event_time(now),
            humantime::format_rfc3339_millis(now).to_string()
        );
    }

    #[test]
    fn bodies_are_redacted() {
        let mut secret = serde_json::json!({"kind": "Secret", "data": {"tls.key": "a2V5"}, "stringData": {"user": "root"},
            "metadata": {"name": "s", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x"}}});
        redact(&mut secret);
        assert_eq!(secret["data"]["tls.key"], "REDACTED");
        assert_eq!(secret["stringData"]["user"], "REDACTED");
        assert_eq!(secret["metadata"]["name"], "s");
        let mut config = serde_json::json!({"kind": "ConfigMap", "data": {"db_password": "p", "apiToken": "t", "color": "red"},
            "spec": {"list": [{"privateKey": "k"}, {"kubeconfig": {"nested": "x"}}]}});
        redact(&mut config);
        assert_eq!(config["data"]["db_password"], "REDACTED");
        assert_eq!(config["data"]["apiToken"], "REDACTED");
        assert_eq!(config["data"]["color"], "red");
        assert_eq!(config["spec"]["list"][0]["privateKey"], "REDACTED");
        assert_eq!(config["spec"]["list"][1]["kubeconfig"], "REDACTED");
        let long = CapturedBody::new(4);
        long.borrow_mut().push(b"{\"password\": 1}");
        assert_eq!(
            long.borrow().record(15)["unrecorded"],
            "longer than audit.max_body_bytes"
        );
    }

    #[test]
    fn standard_methods_are_not_copied() {
        use actix_web::http::Method;
        for name in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            assert!(
                matches!(method_text(&method), std::borrow::Cow::Borrowed(text) if text == name),
                "{name}"
            );
        }
        let extension = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_text(&extension), "PROPFIND");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.255",
            "255.255.255.255",
            "9.99.100.109",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
            let mut line = String::from("from ");
            push_ip(&mut line, ip);
            assert_eq!(line, format!("from {ip}"));
        }
    }

    #[test]
    fn masks_token_like_values() {
        assert_eq!(mask_query(""), "");
        assert_eq!(
            mask_query("watch=true&resourceVersion=5"),
            "watch=true&resourceVersion=5"
        );
        assert_eq!(
            mask_query("access_token=abc&labelSelector=a%3Db&X-Amz-Signature=zz&password=p"),
            "access_token=REDACTED&labelSelector=a%3Db&X-Amz-Signature=REDACTED&password=REDACTED"
        );
        assert_eq!(
            mask_query("id_token=x&code=y"),
            "id_token=REDACTED&code=REDACTED"
        );
    }
}
