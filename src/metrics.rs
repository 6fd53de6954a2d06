//! Prometheus metrics: the figures kubegate keeps about itself, and their exposition.
//!
//! Everything here is plain atomics. The per-request figures (requests by org, cluster,
//! verb and status, with their latency) live in one [`Series`] per label set; each HTTP
//! worker keeps its own map from labels to series, so recording a request costs a
//! lookup in a thread-local map and three relaxed atomic additions: no lock, no
//! allocation once a worker has seen the label set. The global map (behind a mutex) is
//! touched only the first time a worker meets a label set, and when `/metrics` is read.
//!
//! `/metrics` is written by prometheus-client (the Prometheus project's crate) in the
//! OpenMetrics text format: [`render`] hands its registry two collectors that read the
//! atomics at scrape time, one for the figures kept here and one for the [`Figure`]s of
//! other modules. The crate's own counters and histograms are not used for the
//! per-request figures: its histogram takes a lock per observation.
//!
//! Other modules call in here:
//!
//! - the audit path (the gate's audit context) calls [`request`] once per audited request, and
//!   holds an [`OpenWatch`] for every watch being streamed;
//! - the `front` middleware of the HTTP server calls [`http_request`] for every request;
//! - the upgrade tunnel holds an [`UpgradedSession`] for each live session;
//! - login calls [`login`] with its provider and outcome;
//! - the HTTP server's rate limiter calls [`rate_limited`];
//! - TLS certificate reloads call [`tls_reload`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    text, DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder,
    LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Upper bounds of the latency histogram buckets, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Most distinct (org, cluster, verb, status) label sets kept; requests past it are
/// counted under `org="other"` so that a flood of made-up cluster ids cannot grow the
/// map without bound.
pub const MAX_SERIES: usize = 20_000;

/// Verbs known in advance; others (at most [`MAX_VERBS`] in all) are interned on first use.
const KNOWN_VERBS: [&str; 10] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "connect",
    "",
];
const MAX_VERBS: usize = 64;

/// The labels of one request series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    /// `None`: no org (the path had none), or the overflow series.
    org: Option<u64>,
    cluster: Option<u64>,
    verb: u8,
    status: u16,
    overflow: bool,
}

/// The figures of one label set.
#[derive(Debug, Default)]
struct Series {
    count: AtomicU64,
    /// Observations in each bucket (not cumulative), the last one past every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observed latencies, in microseconds.
    sum_micros: AtomicU64,
}

struct Registry {
    series: Mutex<HashMap<Key, Arc<Series>>>,
    verbs: Mutex<Vec<&'static str>>,
    http_by_status: [AtomicU64; 6],
    in_flight: AtomicI64,
    open_watches: AtomicI64,
    upgraded_sessions: AtomicI64,
    upgraded_total: AtomicU64,
    logins: Mutex<BTreeMap<(String, String), u64>>,
    rate_limited: Mutex<BTreeMap<String, u64>>,
    tls_reloads: [AtomicU64; 2],
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        series: Mutex::new(HashMap::new()),
        verbs: Mutex::new(KNOWN_VERBS.to_vec()),
        http_by_status: Default::default(),
        in_flight: AtomicI64::new(0),
        open_watches: AtomicI64::new(0),
        upgraded_sessions: AtomicI64::new(0),
        upgraded_total: AtomicU64::new(0),
        logins: Mutex::new(BTreeMap::new()),
        rate_limited: Mutex::new(BTreeMap::new()),
        tls_reloads: Default::default(),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // a panic while holding one of these locks leaves only counters behind: keep going
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn verb_index(verb: &str) -> u8 {
    if let Some(i) = KNOWN_VERBS.iter().position(|v| *v == verb) {
        return i as u8;
    }
    let mut verbs = lock(&registry().verbs);
    if let Some(i) = verbs.iter().position(|v| *v == verb) {
        return i as u8;
    }
    if verbs.len() >= MAX_VERBS {
        return KNOWN_VERBS.len() as u8 - 1; // ""
    }
    verbs.push(Box::leak(verb.to_string().into_boxed_str()));
    (verbs.len() - 1) as u8
}

thread_local! {
    /// This thread's handles on the series it has recorded into. Its keys are few (at most
    /// [`MAX_SERIES`]) and hashed on every request: foldhash, not the default SipHash
    /// (which was a quarter of `request`'s time).
    static LOCAL: RefCell<foldhash::HashMap<Key, Arc<Series>>> =
        RefCell::new(foldhash::HashMap::default());
}

/// Runs `f` on the series of `key`: from the worker's own map once it has seen `key`.
fn with_series(key: Key, f: impl FnOnce(&Series)) {
    let unseen = LOCAL.with(|local| match local.borrow().get(&key) {
        Some(found) => {
            f(found);
            None
        }
        None => Some(f),
    });
    if let Some(f) = unseen {
        f(&series(key));
    }
}

fn series(key: Key) -> Arc<Series> {
    let (found, overflow) = {
        let mut all = lock(&registry().series);
        let overflow = all.len() >= MAX_SERIES && !all.contains_key(&key);
        let stored = if overflow {
            Key {
                org: None,
                cluster: None,
                overflow: true,
                ..key
            }
        } else {
            key
        };
        (all.entry(stored).or_default().clone(), overflow)
    };
    // past the limit, label sets are not remembered by the worker either (made-up ids
    // would grow its map); they take the global lock each time
    if !overflow {
        LOCAL.with(|local| local.borrow_mut().insert(key, found.clone()));
    }
    found
}

/// Whether requests of `verb` go into the latency histogram: watches and upgraded
/// sessions last as long as the client wants, so their duration says nothing of
/// kubegate's latency (the Kubernetes API server leaves them out too).
fn timed(verb: &str) -> bool {
    !matches!(verb, "watch" | "connect")
}

/// Records one audited request (proxied, or to the REST API): its org and cluster
/// (`None` when the request had none), Kubernetes verb, status and duration (for a
/// stream, until it ended).
pub fn request(
    org: Option<u64>,
    cluster: Option<u64>,
    verb: &str,
    status: u16,
    duration: Duration,
) {
    let key = Key {
        org,
        cluster,
        verb: verb_index(verb),
        status,
        overflow: false,
    };
    let timed = timed(verb);
    with_series(key, |series| {
        series.count.fetch_add(1, Ordering::Relaxed);
        if timed {
            let seconds = duration.as_secs_f64();
            let bucket = LATENCY_BUCKETS
                .iter()
                .position(|bound| seconds <= *bound)
                .unwrap_or(LATENCY_BUCKETS.len());
            series.buckets[bucket].fetch_add(1, Ordering::Relaxed);
            series
                .sum_micros
                .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
        }
    });
}

/// Records one HTTP response of any route, by its status class.
pub fn http_request(status: u16) {
    let class = (status / 100).min(5) as usize;
    registry().http_by_status[class].fetch_add(1, Ordering::Relaxed);
}

/// A request being handled; the in-flight gauge counts it until this is dropped.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// Counts a request in.
    pub fn start() -> InFlight {
        registry().in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        registry().in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The requests of one server whose audit event is not yet submitted (streams until
/// they end), so that its shutdown can wait for the events of streams cut at the end of
/// the grace.
#[derive(Debug, Clone, Default)]
pub struct PendingAudits(Arc<AtomicI64>);

impl PendingAudits {
    /// Counts a request in until the guard is dropped.
    pub fn start(&self) -> AuditPending {
        self.0.fetch_add(1, Ordering::Relaxed);
        AuditPending(self.0.clone())
    }

    /// Requests whose audit event is still to be submitted.
    pub fn count(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }
}

/// One request counted in [`PendingAudits`].
#[derive(Debug)]
pub struct AuditPending(Arc<AtomicI64>);

impl Drop for AuditPending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// A watch being streamed to a client; counted in `kubegate_open_watches` until dropped.
#[derive(Debug)]
pub struct OpenWatch(());

impl OpenWatch {
    /// Counts a watch in.
    pub fn start() -> OpenWatch {
        registry().open_watches.fetch_add(1, Ordering::Relaxed);
        OpenWatch(())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        registry().open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upgraded session (exec, attach, port-forward) being relayed; counted in
/// `kubegate_upgraded_sessions_open` until dropped, and in `kubegate_upgraded_sessions_total`.
/// Hold one for as long as the tunnel is open.
#[derive(Debug)]
pub struct UpgradedSession(());

impl UpgradedSession {
    /// Counts a session in.
    pub fn start() -> UpgradedSession {
        let registry = registry();
        registry.upgraded_sessions.fetch_add(1, Ordering::Relaxed);
        registry.upgraded_total.fetch_add(1, Ordering::Relaxed);
        UpgradedSession(())
    }
}

impl Drop for UpgradedSession {
    fn drop(&mut self) {
        registry().upgraded_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Most distinct (provider, outcome) pairs of [`login`] kept; others count as `other`.
const MAX_LOGIN_SERIES: usize = 256;

/// Records the end of one login attempt: `provider` as configured (`github`, `dex`...),
/// `outcome` a short fixed word such as `success`, `denied`, `error`, `bad_state`.
pub fn login(provider: &str, outcome: &str) {
    let mut logins = lock(&registry().logins);
    let key = (provider.to_string(), outcome.to_string());
    if logins.len() >= MAX_LOGIN_SERIES && !logins.contains_key(&key) {
        *logins
            .entry(("other".to_string(), "other".to_string()))
            .or_default() += 1;
    } else {
        *logins.entry(key).or_default() += 1;
    }
}

/// Records a request refused by the rate limit of `prefix`.
pub fn rate_limited(prefix: &str) {
    *lock(&registry().rate_limited)
        .entry(prefix.to_string())
        .or_default() += 1;
}

/// Records a TLS certificate reload: `true` when the new certificate is in use, `false`
/// when it was refused and the old one kept.
pub fn tls_reload(ok: bool) {
    registry().tls_reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
}

/// Watches open now.
pub fn open_watches() -> i64 {
    registry().open_watches.load(Ordering::Relaxed)
}

/// What a [`Figure`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FigureKind {
    /// Only goes up; its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A figure known elsewhere (an actor's counters), written by [`render`] as it is.
#[derive(Debug, Clone)]
pub struct Figure {
    /// `kubegate_...`, a counter's ending in `_total`.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: FigureKind,
    /// The value.
    pub value: u64,
}

/// The media type of what [`render`] writes: the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The OpenMetrics text exposition of every figure kept here, then of `extra`, ended by
/// `# EOF`.
pub fn render(extra: &[Figure]) -> String {
    let mut exposition = prometheus_client::registry::Registry::default();
    exposition.register_collector(Box::new(Kept));
    exposition.register_collector(Box::new(Extra(extra.to_vec())));
    let mut out = String::with_capacity(4096);
    // the only errors are the writer's, and a String takes every write
    text::encode(&mut out, &exposition).expect("writing to a String does not fail");
    out
}

/// One label value of a label set whose values are text or numbers (an array of label
/// pairs takes one type of value). prometheus-client escapes what it writes.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Text(&'a str),
    Number(u64),
}

impl EncodeLabelValue for Value<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        match self {
            Value::Text(text) => text.encode(encoder),
            Value::Number(n) => n.encode(encoder),
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => f.write_str(text),
            Value::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The labels of one series of the request figures, already written but for the last
/// value: `head` holds every label before it and the last one's key
/// (`org="1",cluster="2",verb`), and `last` its value, which prometheus-client escapes.
/// `head` is handed to the encoder as the key of one label. A histogram series has its
/// labels written on each of its 17 lines; encoded label by label, that was a third of
/// the render's time with 1,000 series.
struct Written<'a> {
    head: &'a str,
    last: &'a str,
}

impl EncodeLabelSet for Written<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let mut label = encoder.encode_label();
        let mut key = label.encode_label_key()?;
        key.write_str(self.head)?;
        let mut value = key.encode_label_value()?;
        value.write_str(self.last)?;
        value.finish()
    }
}

/// Writes `org="...",cluster="...",` of `key` into `head` (numbers, or the fixed words
/// `other` and nothing: none needs escaping).
fn write_place(head: &mut String, key: &Key) {
    head.clear();
    let _ = write!(
        head,
        "org=\"{}\",cluster=\"{}\",",
        id(key.org, key.overflow),
        id(key.cluster, key.overflow)
    );
}

/// Writes `text` into `head` as a label value is written: `\`, `"` and a newline escaped.
fn write_escaped(head: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => head.push_str("\\\\"),
            '"' => head.push_str("\\\""),
            '\n' => head.push_str("\\n"),
            c => head.push(c),
        }
    }
}

/// The `org` or `cluster` label of a series.
fn id(value: Option<u64>, overflow: bool) -> Value<'static> {
    match (value, overflow) {
        (_, true) => Value::Text("other"),
        (Some(n), false) => Value::Number(n),
        (None, false) => Value::Text(""),
    }
}

/// Writes one sample of a counter family with `labels`.
fn counter(family: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(family.encode_family(labels)?)
}

/// The figures kept in this module, read when `/metrics` is scraped.
///
/// Counter families are declared without `_total`: OpenMetrics puts it after the name of
/// each sample, so `kubegate_requests` is written `kubegate_requests_total{...}`.
#[derive(Debug)]
struct Kept;

impl Collector for Kept {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let registry = registry();
        let verbs = lock(&registry.verbs).clone();
        let verb = |key: &Key| verbs.get(key.verb as usize).copied().unwrap_or("");
        let mut all: Vec<(Key, Arc<Series>)> = lock(&registry.series)
            .iter()
            .map(|(k, s)| (*k, s.clone()))
            .collect();
        all.sort_by_key(|(k, _)| *k);

        let mut family = encoder.encode_descriptor(
            "kubegate_requests",
            "Audited requests (proxied and REST API) by org, cluster, Kubernetes verb and status.",
            None,
            MetricType::Counter,
        )?;
        let (mut head, mut code) = (String::new(), String::new());
        for (key, series) in &all {
            write_place(&mut head, key);
            head.push_str("verb=\"");
            write_escaped(&mut head, verb(key));
            head.push_str("\",code");
            code.clear();
            let _ = write!(code, "{}", key.status);
            let labels = Written {
                head: &head,
                last: &code,
            };
            counter(&mut family, &labels, series.count.load(Ordering::Relaxed))?;
        }

        // the histogram is by org, cluster and verb: the statuses are summed
        let mut histograms: BTreeMap<Key, ([u64; LATENCY_BUCKETS.len() + 1], u64)> =
            BTreeMap::new();
        for (key, series) in all.iter().filter(|(key, _)| timed(verb(key))) {
            let entry = histograms.entry(Key { status: 0, ..*key }).or_default();
            for (sum, bucket) in entry.0.iter_mut().zip(&series.buckets) {
                *sum += bucket.load(Ordering::Relaxed);
            }
            entry.1 += series.sum_micros.load(Ordering::Relaxed);
        }
        let mut family = encoder.encode_descriptor(
            "kubegate_request_duration_seconds",
            "Time to serve audited requests (to the end of the response body), watches and upgrades left out.",
            None,
            MetricType::Histogram,
        )?;
        for (key, (counts, sum_micros)) in &histograms {
            write_place(&mut head, key);
            head.push_str("verb");
            let labels = Written {
                head: &head,
                last: verb(key),
            };
            // (upper bound, count in this bucket alone): prometheus-client adds them up
            let mut buckets = [(f64::INFINITY, 0); LATENCY_BUCKETS.len() + 1];
            for (i, count) in counts.iter().enumerate() {
                buckets[i] = (
                    LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                    *count,
                );
            }
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    *sum_micros as f64 / 1e6,
                    counts.iter().sum(),
                    &buckets,
                    None,
                )?;
        }

        let mut family = encoder.encode_descriptor(
            "kubegate_http_responses",
            "HTTP responses of every route, by status class.",
            None,
            MetricType::Counter,
        )?;
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
            let value = registry.http_by_status[i + 1].load(Ordering::Relaxed);
            counter(&mut family, &[("class", class)], value)?;
        }
        for (name, help, value) in [
            (
                "kubegate_requests_in_flight",
                "Requests being handled now, until their response head is sent (open streams: kubegate_open_watches).",
                registry.in_flight.load(Ordering::Relaxed),
            ),
            (
                "kubegate_open_watches",
                "Watches being streamed to clients now.",
                registry.open_watches.load(Ordering::Relaxed),
            ),
            (
                // not `kubegate_upgraded_sessions`: that is the family of the counter below
                "kubegate_upgraded_sessions_open",
                "Upgraded sessions (exec, attach, port-forward) open now.",
                registry.upgraded_sessions.load(Ordering::Relaxed),
            ),
        ] {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        ConstCounter::new(registry.upgraded_total.load(Ordering::Relaxed)).encode(
            encoder.encode_descriptor(
                "kubegate_upgraded_sessions",
                "Upgraded sessions opened.",
                None,
                MetricType::Counter,
            )?,
        )?;

        let mut family = encoder.encode_descriptor(
            "kubegate_logins",
            "Login attempts by provider and outcome.",
            None,
            MetricType::Counter,
        )?;
        for ((provider, outcome), n) in lock(&registry.logins).iter() {
            let labels = [
                ("provider", Value::Text(provider)),
                ("outcome", Value::Text(outcome)),
            ];
            counter(&mut family, &labels, *n)?;
        }
        let mut family = encoder.encode_descriptor(
            "kubegate_rate_limited",
            "Requests refused with 429 by a per-client rate limit, by the limited path prefix.",
            None,
            MetricType::Counter,
        )?;
        for (prefix, n) in lock(&registry.rate_limited).iter() {
            counter(&mut family, &[("prefix", Value::Text(prefix))], *n)?;
        }
        let mut family = encoder.encode_descriptor(
            "kubegate_tls_reloads",
            "Serving certificate reloads: ok (in use) or failed (the old one kept).",
            None,
            MetricType::Counter,
        )?;
        for (i, outcome) in ["ok", "failed"].into_iter().enumerate() {
            let value = registry.tls_reloads[i].load(Ordering::Relaxed);
            counter(&mut family, &[("outcome", outcome)], value)?;
        }
        Ok(())
    }
}

/// The figures handed to [`render`] by other modules.
#[derive(Debug)]
struct Extra(Vec<Figure>);

impl Collector for Extra {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for figure in &self.0 {
            match figure.kind {
                FigureKind::Counter => {
                    let family = figure.name.strip_suffix("_total").unwrap_or(figure.name);
                    ConstCounter::new(figure.value).encode(encoder.encode_descriptor(
                        family,
                        figure.help,
                        None,
                        MetricType::Counter,
                    )?)?
                }
                FigureKind::Gauge => ConstGauge::new(figure.value).encode(
                    encoder.encode_descriptor(figure.name, figure.help, None, MetricType::Gauge)?,
                )?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line of `text` that starts with `prefix`, its value.
    fn value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn label_values_are_escaped_on_every_line() {
        // org 9902 is used by this test only
        request(
            Some(9902),
            None,
            "we\"ird\\verb",
            200,
            Duration::from_millis(3),
        );
        let text = render(&[]);
        let labels = r#"org="9902",cluster="",verb="we\"ird\\verb""#;
        assert_eq!(
            value(
                &text,
                &format!("kubegate_requests_total{{{labels},code=\"200\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("kubegate_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}}")
            ),
            Some(1.0)
        );
    }

    #[test]
    fn requests_are_counted_by_labels_with_a_histogram() {
        // org 9901 is used by this test only: the registry is global to the process
        for _ in 0..3 {
            request(Some(9901), Some(2), "get", 200, Duration::from_millis(3));
        }
        request(Some(9901), Some(2), "get", 404, Duration::from_secs(2));
        request(Some(9901), Some(2), "watch", 200, Duration::from_secs(300));
        request(
            Some(9901),
            None,
            "frobnicate",
            201,
            Duration::from_millis(1),
        );
        let text = render(&[]);
        let get = "kubegate_requests_total{org=\"9901\",cluster=\"2\",verb=\"get\"";
        assert_eq!(value(&text, &format!("{get},code=\"200\"}}")), Some(3.0));
        assert_eq!(value(&text, &format!("{get},code=\"404\"}}")), Some(1.0));
        assert_eq!(
            value(
                &text,
                "kubegate_requests_total{org=\"9901\",cluster=\"\",verb=\"frobnicate\",code=\"201\"}"
            ),
            Some(1.0)
        );
        // prometheus-client writes `le` first
        let bucket = |le: &str| {
            let labels = format!("le=\"{le}\",org=\"9901\",cluster=\"2\",verb=\"get\"");
            value(
                &text,
                &format!("kubegate_request_duration_seconds_bucket{{{labels}}}"),
            )
        };
        assert_eq!(bucket("0.001"), Some(0.0));
        assert_eq!(bucket("0.005"), Some(3.0));
        assert_eq!(bucket("2.5"), Some(4.0));
        assert_eq!(bucket("+Inf"), Some(4.0));
        let sum = value(
            &text,
            "kubegate_request_duration_seconds_sum{org=\"9901\",cluster=\"2\",verb=\"get\"}",
        )
        .unwrap();
        assert!((sum - 2.009).abs() < 1e-9, "{sum}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("kubegate_request_duration_seconds")
                    && l.contains("org=\"9901\",cluster=\"2\",verb=\"watch\"")),
            "watches stay out of the histogram"
        );
        assert_eq!(
            value(
                &text,
                "kubegate_requests_total{org=\"9901\",cluster=\"2\",verb=\"watch\",code=\"200\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn counts_from_several_threads_add_up() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        request(Some(9902), Some(1), "list", 200, Duration::from_micros(50));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = render(&[]);
        assert_eq!(
            value(
                &text,
                "kubegate_requests_total{org=\"9902\",cluster=\"1\",verb=\"list\",code=\"200\"}"
            ),
            Some(4000.0)
        );
    }

    #[test]
    fn gauges_follow_their_guards_and_logins_are_escaped() {
        let before = open_watches();
        let watch = OpenWatch::start();
        let session = UpgradedSession::start();
        assert_eq!(open_watches(), before + 1);
        drop(watch);
        drop(session);
        assert_eq!(open_watches(), before);
        login("dex \"corp\"", "success");
        login("dex \"corp\"", "success");
        login("dex \"corp\"", "denied");
        let text = render(&[Figure {
            name: "kubegate_test_figure",
            help: "A figure from elsewhere.",
            kind: FigureKind::Gauge,
            value: 7,
        }]);
        assert_eq!(
            value(
                &text,
                "kubegate_logins_total{provider=\"dex \\\"corp\\\"\",outcome=\"success\"}"
            ),
            Some(2.0)
        );
        assert!(text.contains("# TYPE kubegate_test_figure gauge\nkubegate_test_figure 7\n"));
        assert!(text.contains("# TYPE kubegate_upgraded_sessions_open gauge"));
    }

    #[test]
    fn the_exposition_is_openmetrics() {
        request(Some(9903), Some(1), "get", 200, Duration::from_millis(700));
        let text = render(&[Figure {
            name: "kubegate_test_events_total",
            help: "A counter from elsewhere.",
            kind: FigureKind::Counter,
            value: 3,
        }]);
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        // a counter's family is declared without `_total`, which each sample has
        assert!(text.contains(
            "# HELP kubegate_test_events A counter from elsewhere.\n\
             # TYPE kubegate_test_events counter\n\
             kubegate_test_events_total 3\n"
        ));
        assert!(text.contains("# TYPE kubegate_requests counter\n"));
        assert!(text.contains("# TYPE kubegate_upgraded_sessions counter\n"));
        assert!(!text.contains("# TYPE kubegate_upgraded_sessions gauge"));
        // the bounds are floats
        let bucket = |le: &str| {
            let labels = format!("le=\"{le}\",org=\"9903\",cluster=\"1\",verb=\"get\"");
            value(
                &text,
                &format!("kubegate_request_duration_seconds_bucket{{{labels}}}"),
            )
        };
        assert_eq!(bucket("0.5"), Some(0.0));
        assert_eq!(bucket("1.0"), Some(1.0));
        assert_eq!(bucket("60.0"), Some(1.0));
        assert_eq!(bucket("+Inf"), Some(1.0));
    }
}
