//! `GET /pipeline/api/v1/orgs/{org}/audit`: the org's audit trail, newest first, with
//! filters (`since`, `until`, `user`, `cluster`, `verb`, `resource`, `status`, `decision`) and cursor
//! pagination (`limit`, `cursor`). Org admins see their org; global administrators
//! every org. Served from PostgreSQL when that sink is configured (the cursor is the last
//! event's id: keyset pagination, see [`query_audit`]), else from the JSON-lines file
//! (and its rotated files, plain or gzip-compressed; the cursor is the key of the last
//! event returned, so events written while a client pages never shift its pages).
//!
//! `GET /pipeline/api/v1/orgs/{org}/audit/histogram`: the same trail counted per minute
//! and decision (allow, deny, error) over a time range of at most [`MAX_BUCKETS`]
//! minutes, with the same filters: PostgreSQL groups the rows itself
//! (`date_trunc('minute', time)`); the file source is scanned, its rotated files too
//! (those older than the range left unread).

use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use kubegate_actors::auditor::{audit_histogram, query_audit, AuditQuery};
use serde_json::{json, Value};

use crate::api::{guarded, Access, ApiError, ApiErrorBody};
use crate::config::{AuditSinkKind, Config};
use crate::gate::Gate;

/// Where the query API reads events from.
#[derive(Debug, Clone)]
pub enum AuditSource {
    /// The PostgreSQL sink's table.
    Postgres(String),
    /// The file sink's file (its rotated files are found beside it).
    File(PathBuf),
    /// No sink that can be read (stdout only).
    None,
}

impl AuditSource {
    /// The best source the configuration offers.
    pub fn of(config: &Config) -> AuditSource {
        let has = |sink: AuditSinkKind| config.audit.sinks.contains(&sink);
        match &config.audit.postgres_url {
            Some(url) if has(AuditSinkKind::Postgres) => AuditSource::Postgres(url.clone()),
            _ if has(AuditSinkKind::File) => AuditSource::File(config.audit.file.clone()),
            _ => AuditSource::None,
        }
    }
}

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn parse_query(
    org: u64,
    query: &web::Query<Vec<(String, String)>>,
) -> Result<(AuditQuery, Option<String>), ApiError> {
    let mut q = AuditQuery {
        org,
        limit: 100,
        ..Default::default()
    };
    let mut cursor = None;
    for (key, value) in query.iter() {
        let time = |v: &str| {
            humantime::parse_rfc3339_weak(v)
                .map_err(|e| bad(format!("{key}: \"{v}\" is not an RFC 3339 time: {e}")))
        };
        match key.as_str() {
            "since" => q.since = Some(time(value)?),
            "until" => q.until = Some(time(value)?),
            "user" => q.user = Some(value.clone()),
            "cluster" => q.cluster = Some(value.parse().map_err(|_| bad(format!("cluster: \"{value}\" is not a number")))?),
            "verb" => q.verb = Some(value.clone()),
            "resource" => q.resource = Some(value.clone()),
            "status" => q.status = Some(value.parse().map_err(|_| bad(format!("status: \"{value}\" is not a number")))?),
            "decision" if matches!(value.as_str(), "allow" | "deny" | "error") => q.decision = Some(value.clone()),
            "decision" => return Err(bad(format!("decision: \"{value}\" is not one of allow, deny, error"))),
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| bad(format!("limit: \"{value}\" must be 1 to 1000")))?
            }
            // a number for PostgreSQL, a key for the file: `list` checks it is one it gave
            "cursor" => {
                q.before = value.parse().ok();
                cursor = Some(value.clone());
            }
            other => return Err(bad(format!("unknown filter \"{other}\"; use since, until, user, cluster, verb, resource, status, decision, limit, cursor"))),
        }
    }
    Ok((q, cursor))
}

fn bad_cursor(value: &str) -> ApiError {
    bad(format!("cursor: \"{value}\" is not a cursor this API gave"))
}

/// Where the file source's events sort: newest first by time, then request id.
type FileKey = (String, String);

fn file_key(event: &Value) -> FileKey {
    (
        event["time"].as_str().unwrap_or("").to_string(),
        event["request_id"].as_str().unwrap_or("").to_string(),
    )
}

/// The file source's cursor: the key of the last event a page held, hex-encoded.
fn encode_file_cursor((time, id): &FileKey) -> String {
    format!("{time}\n{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_file_cursor(cursor: &str) -> Option<FileKey> {
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (time, id) = text.split_once('\n')?;
    Some((time.to_string(), id.to_string()))
}

fn matches(event: &Value, q: &AuditQuery) -> bool {
    let time = event["time"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
    event["org"].as_u64() == Some(q.org)
        && q.since.is_none_or(|s| time.is_some_and(|t| t >= s))
        && q.until.is_none_or(|u| time.is_some_and(|t| t < u))
        && q.user.as_deref().is_none_or(|u| event["user"] == u)
        && q.cluster
            .is_none_or(|c| event["cluster"].as_u64() == Some(c))
        && q.verb.as_deref().is_none_or(|v| event["verb"] == v)
        && q.resource.as_deref().is_none_or(|r| event["resource"] == r)
        && q.status
            .is_none_or(|s| event["status"].as_u64() == Some(u64::from(s)))
        && q.decision.as_deref().is_none_or(|d| event["decision"] == d)
}

/// The matching events of `text` (JSON lines) that come after the cursor `after`, each
/// with its key (made once, not at every comparison).
fn keyed_events(
    text: &str,
    q: &AuditQuery,
    after: Option<&FileKey>,
    into: &mut Vec<(FileKey, Value)>,
) {
    into.extend(
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| matches(event, q))
            .map(|e| (file_key(&e), e))
            .filter(|(key, _)| after.is_none_or(|after| key < after)),
    );
}

/// Newest first, each key once, at most `keep` (the file read twice across a rotation
/// holds some events twice).
fn best(keyed: &mut Vec<(FileKey, Value)>, keep: usize) {
    keyed.sort_by(|a, b| b.0.cmp(&a.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    keyed.truncate(keep);
}

/// How far an event's time may be after its file's modification time (see [`from_file`]).
const MTIME_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads the file and then its rotated files (plain or gzip), newest first, and returns
/// the page after the cursor `after`.
///
/// No event is newer than the file holding it was last written (its modification time,
/// which a compressed file keeps), so once a page's worth of events is newer than the
/// next file, that file and every older one are left unread: a page of recent events
/// reads the newest files only, however long the kept history. (With a second's margin:
/// file times come from the kernel's coarse clock, which may lag an event's own time
/// by a tick.)
fn from_file(
    file: PathBuf,
    q: &AuditQuery,
    after: Option<&FileKey>,
) -> std::io::Result<(Vec<Value>, Option<String>)> {
    use kubegate_actors::auditor::rotation::{read_rotated, rotated_files};
    let mut keyed: Vec<(FileKey, Value)> = Vec::new();
    match std::fs::read_to_string(&file) {
        Ok(text) => keyed_events(&text, q, after, &mut keyed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // listed after the file was read: if it rotated meanwhile, its events are in this
    // list (and read twice, which `best` undoes)
    for rotated in rotated_files(&file)? {
        if q.since
            .is_some_and(|since| rotated.modified + MTIME_MARGIN < since)
        {
            break; // this file and the older ones hold only events before `since`
        }
        if keyed.len() > q.limit {
            best(&mut keyed, q.limit + 1);
            let last = keyed
                .last()
                .and_then(|(key, _)| humantime::parse_rfc3339_weak(&key.0).ok());
            if last.is_some_and(|last| rotated.modified + MTIME_MARGIN < last) {
                break; // a page and the next one's first event, all newer than this file
            }
        }
        match read_rotated(&rotated) {
            Ok(text) => keyed_events(&text, q, after, &mut keyed),
            // removed by the retention since it was listed
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // workers hand events over in batches: the files are in writing order, not quite in
    // time order. A page goes on after its cursor's key (the last event of the page
    // before), so events written while a client pages never shift what it reads next.
    best(&mut keyed, q.limit + 1);
    let more = keyed.len() > q.limit;
    keyed.truncate(q.limit);
    let next = more
        .then(|| keyed.last().map(|(key, _)| encode_file_cursor(key)))
        .flatten();
    Ok((keyed.into_iter().map(|(_, e)| e).collect(), next))
}

/// A page of an org's audit trail.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `list` writes
struct AuditPage {
    /// Audit events, newest first (kubegate's audit event as written to its sinks).
    events: Vec<serde_json::Map<String, Value>>,
    /// The cursor of the next page, if there is one.
    next: Option<String>,
}

/// The audit trail of an org, newest first, filtered and paged (those the policy lets
/// `list` `kubegate:audit`; admins by default).
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs/{org}/audit",
    tag = "audit",
    operation_id = "listAuditEvents",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("since" = Option<String>, Query, description = "Events at or after this time (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Events before this time (RFC 3339)"),
        ("user" = Option<String>, Query, description = "Events of this user"),
        ("cluster" = Option<u64>, Query, description = "Events of this cluster id"),
        ("verb" = Option<String>, Query, description = "Events of this verb (`get`, `list`, `create`...)"),
        ("resource" = Option<String>, Query, description = "Events on this resource (`pods`...)"),
        ("status" = Option<u16>, Query, description = "Events answered with this HTTP status"),
        ("decision" = Option<String>, Query, description = "`allow`, `deny` or `error`"),
        ("limit" = Option<u32>, Query, description = "At most this many events, 1 to 1000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "The `next` of the page before"),
    ),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        (status = 400, description = "A filter is not valid: the message names it", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it", body = ApiErrorBody),
        (status = 503, description = "The audit trail cannot be read", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn list(
    req: HttpRequest,
    query: web::Query<Vec<(String, String)>>,
    gate: web::Data<Gate>,
    state: web::Data<AuditSource>,
) -> HttpResponse {
    let st = state.clone();
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "list",
            object: "kubegate:audit",
        },
        |org, _| async move {
            let (q, cursor) = parse_query(org, &query)?;
            let (events, next) = match st.as_ref().clone() {
                AuditSource::Postgres(url) => {
                    if let (Some(c), None) = (&cursor, q.before) {
                        return Err(bad_cursor(c));
                    }
                    let (events, next) = query_audit(&url, &q).await.map_err(unreadable)?;
                    (events, next.map(|n| n.to_string()))
                }
                AuditSource::File(file) => {
                    let after = match &cursor {
                        Some(c) => Some(decode_file_cursor(c).ok_or_else(|| bad_cursor(c))?),
                        None => None,
                    };
                    web::block(move || from_file(file, &q, after.as_ref()))
                        .await
                        .map_err(unreadable)?
                        .map_err(unreadable)?
                }
                AuditSource::None => return Err(no_readable_sink()),
            };
            Ok(HttpResponse::Ok().json(json!({"events": events, "next": next})))
        },
    )
    .await
}

/// The trail could not be read (503).
fn unreadable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the audit trail cannot be read: {e}"),
    )
}

/// No sink the API can read is configured (404).
fn no_readable_sink() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no audit sink that can be read is configured (add \"file\" or \"postgres\" to audit.sinks)",
    )
}

/// The most minutes a histogram spans (one day).
pub const MAX_BUCKETS: u64 = 1440;

/// How far back a histogram reaches when `since` is not given.
const DEFAULT_SPAN: std::time::Duration = std::time::Duration::from_secs(3600);

/// A minute's counts: `[allow, deny, error]`.
type Counts = [u64; 3];

fn decision_index(decision: &str) -> Option<usize> {
    match decision {
        "allow" => Some(0),
        "deny" => Some(1),
        "error" => Some(2),
        _ => None,
    }
}

fn minute_of(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

fn at_minute(minute: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(minute * 60)
}

/// The histogram's filters and its range in whole minutes `[first, end)`: `since` is
/// rounded down to its minute, `until` (default: now) up.
fn parse_histogram_query(
    org: u64,
    query: &web::Query<Vec<(String, String)>>,
) -> Result<(AuditQuery, u64, u64), ApiError> {
    if let Some((key, _)) = query.iter().find(|(k, _)| k == "limit" || k == "cursor") {
        return Err(bad(format!(
            "unknown filter \"{key}\" (a histogram is not paged); use since, until, user, cluster, verb, resource, status, decision"
        )));
    }
    let (mut q, _) = parse_query(org, query)?;
    let until = q.until.unwrap_or_else(std::time::SystemTime::now);
    let since = q.since.unwrap_or_else(|| until - DEFAULT_SPAN);
    let first = minute_of(since);
    let end = minute_of(until) + u64::from(at_minute(minute_of(until)) < until);
    if end <= first {
        return Err(bad(
            "since: the range is empty: since must be before until".into()
        ));
    }
    if end - first > MAX_BUCKETS {
        return Err(bad(format!(
            "the range from since to until spans {} minutes; a histogram has at most {MAX_BUCKETS} (one day): narrow since and until",
            end - first
        )));
    }
    q.since = Some(at_minute(first));
    q.until = Some(at_minute(end));
    q.limit = 0;
    Ok((q, first, end))
}

/// Counts the matching events of `text` per minute and decision, leaving out those whose
/// key is in `skip`, and remembering the keys of those counted in `seen` (when given).
fn count_events(
    text: &str,
    q: &AuditQuery,
    skip: &std::collections::HashSet<FileKey>,
    mut seen: Option<&mut std::collections::HashSet<FileKey>>,
    into: &mut std::collections::HashMap<u64, Counts>,
) {
    for event in text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| matches(event, q))
    {
        let key = file_key(&event);
        if skip.contains(&key) {
            continue;
        }
        let (Some(time), Some(decision)) = (
            event["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
            event["decision"].as_str().and_then(decision_index),
        ) else {
            continue;
        };
        // a summary of repeated 401s stands for that many requests
        into.entry(minute_of(time)).or_default()[decision] +=
            event["aggregated"].as_u64().unwrap_or(1);
        if let Some(seen) = seen.as_mut() {
            seen.insert(key);
        }
    }
}

/// Counts per minute from the file and its rotated files (plain or gzip), newest first,
/// down to the first file older than the range. An event read twice (the file rotated
/// between being read and the rotated files being listed) is counted once: the keys of
/// the active file's events are kept (a file's worth at most) and skipped later.
fn histogram_from_file(
    file: PathBuf,
    q: &AuditQuery,
) -> std::io::Result<std::collections::HashMap<u64, Counts>> {
    use kubegate_actors::auditor::rotation::{read_rotated, rotated_files};
    let mut counts = std::collections::HashMap::new();
    let mut active = std::collections::HashSet::new();
    match std::fs::read_to_string(&file) {
        Ok(text) => count_events(
            &text,
            q,
            &Default::default(),
            Some(&mut active),
            &mut counts,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for rotated in rotated_files(&file)? {
        if q.since
            .is_some_and(|since| rotated.modified + MTIME_MARGIN < since)
        {
            break; // this file and the older ones hold only events before the range
        }
        match read_rotated(&rotated) {
            Ok(text) => count_events(&text, q, &active, None, &mut counts),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(counts)
}

/// The audit trail counted per minute.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)] // what `histogram` writes
struct AuditHistogram {
    /// The start of the first minute (RFC 3339).
    since: String,
    /// The end of the last minute (RFC 3339).
    until: String,
    /// The width of a bucket: 60.
    bucketSeconds: u64,
    /// Every minute of the range, oldest first, empty ones too.
    buckets: Vec<AuditBucket>,
}

/// The requests of one minute, by decision.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `histogram` writes
struct AuditBucket {
    /// The minute's start (RFC 3339).
    time: String,
    /// Allowed requests.
    allow: u64,
    /// Denied requests.
    deny: u64,
    /// Requests that failed in kubegate (the policy or the cluster could not answer).
    error: u64,
}

/// The org's audit trail counted per minute and decision, for a chart (those the policy
/// lets `list` `kubegate:audit`; admins by default). The same filters as the audit
/// query; at most one day of minutes.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs/{org}/audit/histogram",
    tag = "audit",
    operation_id = "getAuditHistogram",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("since" = Option<String>, Query, description = "From this time (RFC 3339), rounded down to its minute; default: an hour before `until`"),
        ("until" = Option<String>, Query, description = "To this time (RFC 3339), rounded up to a minute; default: now. At most 1440 minutes after `since`"),
        ("user" = Option<String>, Query, description = "Events of this user"),
        ("cluster" = Option<u64>, Query, description = "Events of this cluster id"),
        ("verb" = Option<String>, Query, description = "Events of this verb"),
        ("resource" = Option<String>, Query, description = "Events on this resource"),
        ("status" = Option<u16>, Query, description = "Events answered with this HTTP status"),
        ("decision" = Option<String>, Query, description = "`allow`, `deny` or `error`"),
    ),
    responses(
        (status = 200, description = "Counts per minute", body = AuditHistogram),
        (status = 400, description = "A filter is not valid, or the range is empty or longer than a day: the message says which", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it", body = ApiErrorBody),
        (status = 404, description = "No audit sink that can be read is configured", body = ApiErrorBody),
        (status = 503, description = "The audit trail cannot be read", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn histogram(
    req: HttpRequest,
    query: web::Query<Vec<(String, String)>>,
    gate: web::Data<Gate>,
    state: web::Data<AuditSource>,
) -> HttpResponse {
    let st = state.clone();
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "list",
            object: "kubegate:audit",
        },
        |org, _| async move {
            let (q, first, end) = parse_histogram_query(org, &query)?;
            let counts: std::collections::HashMap<u64, Counts> = match st.as_ref().clone() {
                AuditSource::Postgres(url) => {
                    let mut counts = std::collections::HashMap::<u64, Counts>::new();
                    for (minute, decision, n) in
                        audit_histogram(&url, &q).await.map_err(unreadable)?
                    {
                        if let Some(d) = decision_index(&decision) {
                            counts.entry(minute_of(minute)).or_default()[d] += n;
                        }
                    }
                    counts
                }
                AuditSource::File(file) => web::block(move || histogram_from_file(file, &q))
                    .await
                    .map_err(unreadable)?
                    .map_err(unreadable)?,
                AuditSource::None => return Err(no_readable_sink()),
            };
            let time = |minute| humantime::format_rfc3339_seconds(at_minute(minute)).to_string();
            let buckets: Vec<Value> = (first..end)
                .map(|minute| {
                    let [allow, deny, error] = counts.get(&minute).copied().unwrap_or_default();
                    json!({"time": time(minute), "allow": allow, "deny": deny, "error": error})
                })
                .collect();
            Ok(HttpResponse::Ok().json(json!({
                "since": time(first),
                "until": time(end),
                "bucketSeconds": 60,
                "buckets": buckets,
            })))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// A JSON line of org 1 at `time` (seconds after 2026-01-01), with the request id `id`.
    fn line(time: u64, id: &str) -> String {
        let at =
            humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap() + Duration::from_secs(time);
        format!(
            "{{\"time\":\"{}\",\"request_id\":\"{id}\",\"org\":1}}\n",
            humantime::format_rfc3339_millis(at)
        )
    }

    fn at(time: u64) -> SystemTime {
        humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap() + Duration::from_secs(time)
    }

    /// A page of recent events reads the newest files only: an old rotated file (here
    /// unreadable, so reading it would fail the query) is never opened; a page that
    /// reaches back into it does read it.
    #[test]
    fn a_page_of_recent_events_leaves_older_files_unread() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("audit.jsonl");
        let recent = dir.path().join("audit.jsonl.2026-01-01T01-00-00.000000Z");
        let old = dir
            .path()
            .join("audit.jsonl.2026-01-01T00-00-00.000000Z.gz");
        std::fs::write(
            &active,
            (7200..7210)
                .map(|t| line(t, &format!("a{t}")))
                .collect::<String>(),
        )
        .unwrap();
        std::fs::write(
            &recent,
            (3600..3610)
                .map(|t| line(t, &format!("r{t}")))
                .collect::<String>(),
        )
        .unwrap();
        std::fs::write(&old, b"not gzip").unwrap();
        for (path, time) in [(&recent, 3610), (&old, 100)] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(at(time))
                .unwrap();
        }
        let q = |limit| AuditQuery {
            org: 1,
            limit,
            ..Default::default()
        };
        let (events, next) = from_file(active.clone(), &q(15), None).unwrap();
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e["request_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 15);
        assert_eq!((ids[0], ids[14]), ("a7209", "r3605"));
        assert!(next.is_some());
        // the next page needs what may be in the old file: it is read (and fails)
        let after = decode_file_cursor(&next.unwrap()).unwrap();
        assert!(from_file(active, &q(15), Some(&after)).is_err());
    }

    /// The histogram counts the file and its rotated files (gzip too) in the range, each
    /// event once (one read twice across a rotation is not counted twice), a summary of
    /// 401s as the requests it stands for, and leaves files older than the range unread.
    #[test]
    fn the_histogram_counts_rotated_files_once_each_event() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("audit.jsonl");
        let recent = dir.path().join("audit.jsonl.2026-01-01T01-00-00.000000Z");
        let old = dir
            .path()
            .join("audit.jsonl.2026-01-01T00-00-00.000000Z.gz");
        let event = |time: u64, id: &str, decision: &str, extra: &str| {
            let at = humantime::format_rfc3339_millis(at(time));
            format!("{{\"time\":\"{at}\",\"request_id\":\"{id}\",\"org\":1,\"decision\":\"{decision}\"{extra}}}\n")
        };
        std::fs::write(
            &active,
            [
                event(7200, "a1", "allow", ""),
                event(7201, "a2", "deny", ""),
                event(7265, "a3", "error", ""),
                event(7270, "a4", "deny", ",\"aggregated\":40"),
                event(7275, "other-org", "allow", "").replace("\"org\":1", "\"org\":2"),
            ]
            .concat(),
        )
        .unwrap();
        // the rotated file holds a1 again (rotated after the active file was read)
        std::fs::write(
            &recent,
            [
                event(7200, "a1", "allow", ""),
                event(7150, "r1", "allow", ""),
            ]
            .concat(),
        )
        .unwrap();
        std::fs::write(&old, b"not gzip").unwrap();
        for (path, time) in [(&recent, 7201), (&old, 100)] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(at(time))
                .unwrap();
        }
        let q = AuditQuery {
            org: 1,
            since: Some(at(7140)),
            until: Some(at(7320)),
            ..Default::default()
        };
        let counts = histogram_from_file(active.clone(), &q).unwrap();
        let minute = |t: u64| minute_of(at(t));
        assert_eq!(counts[&minute(7150)], [1, 0, 0]);
        assert_eq!(counts[&minute(7200)], [1, 1, 0], "a1 once");
        assert_eq!(counts[&minute(7265)], [0, 40, 1]);
        assert_eq!(counts.len(), 3);
        // a range reaching back into the old file reads it (and fails)
        let q = AuditQuery {
            since: Some(at(0)),
            ..q
        };
        assert!(histogram_from_file(active, &q).is_err());
    }
}
