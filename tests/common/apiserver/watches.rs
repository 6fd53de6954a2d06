//! Watches: `?watch=true` on a list, a stream of `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`
//! and `ERROR` events, one JSON object per line.
//!
//! Faithful to kube-apiserver v1.32: a watch from `resourceVersion` unset or `0` starts with
//! the current objects as `ADDED`, one from a given resourceVersion replays the changes since
//! (or is told `410 Expired` when they are no longer kept), `sendInitialEvents=true` ends
//! the initial events with a `BOOKMARK` annotated `k8s.io/initial-events-end`; selectors
//! apply to events as kube-apiserver's watch cache applies them (an object that starts or
//! stops matching is `ADDED` or `DELETED`); `allowWatchBookmarks` gets a `BOOKMARK` every
//! bookmark interval (60 s unless [`super::ApiServerBuilder::bookmark_interval`]);
//! `timeoutSeconds` ends the watch (30 minutes without it); a watcher too slow to keep up is
//! closed; Table and PartialObjectMetadata events, only the first Table carrying its
//! columns. Not faithful: `resourceVersionMatch` is not read, and the events are never
//! protobuf.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::stream;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::catalog::ResourceType;
use super::media_types::Representation;
use super::object_helpers::{partial_metadata, resource_version_of};
use super::responses::{status_response, status_value, watch_response};
use super::router::Call;
use super::selectors::Selection;
use super::store::{Change, ChangeType};
use super::table::table;

/// A watch without `timeoutSeconds` ends after this long (kube-apiserver picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

impl Call<'_> {
    pub(super) fn watch(&self, rt: &Arc<ResourceType>, namespace: Option<&str>) -> HttpResponse {
        let selection = match Selection::from_query(rt, &self.query) {
            Ok(selection) => selection,
            Err(error) => return error.response(),
        };
        let representation = match self.representation() {
            Ok(representation) => representation,
            Err(error) => return error.response(),
        };
        let timeout = self
            .param("timeoutSeconds")
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        let bookmarks = self.flag("allowWatchBookmarks");
        let send_initial_events = self.flag("sendInitialEvents");
        let filter = WatchFilter {
            resource: rt.key(),
            namespace: namespace.map(str::to_string),
            selection,
        };
        let mut encoder = EventEncoder {
            rt: rt.clone(),
            representation,
            first: true,
        };
        let requested = self.param("resourceVersion").unwrap_or("");
        let mut pending = VecDeque::new();
        let store = self.store();
        let receiver = store.changes.subscribe();
        let after = store.revision;
        match requested {
            // "Most recent" or "any": the current state as ADDED events, then changes.
            "" | "0" => {
                for object in store.list(&rt.key(), namespace) {
                    if filter.selection.matches(&object) {
                        pending.push_back(encoder.encode("ADDED", &object));
                    }
                }
            }
            _ if send_initial_events => {
                for object in store.list(&rt.key(), namespace) {
                    if filter.selection.matches(&object) {
                        pending.push_back(encoder.encode("ADDED", &object));
                    }
                }
            }
            requested => {
                let Ok(from) = requested.parse::<u64>() else {
                    return status_response(
                        400,
                        "BadRequest",
                        format!(
                            "resourceVersion: Invalid value: \"{requested}\": must be a number"
                        ),
                        None,
                    );
                };
                if from < store.oldest_replayable() {
                    let status = status_value(
                        410,
                        "Expired",
                        &format!(
                            "too old resource version: {from} ({})",
                            store.oldest_replayable() + 1
                        ),
                        None,
                    );
                    pending.push_back(encode_event("ERROR", &status));
                    drop(store);
                    return watch_response(stream::iter(
                        pending.into_iter().map(Ok::<Bytes, Infallible>),
                    ));
                }
                for change in store.history.iter().filter(|change| change.revision > from) {
                    if let Some((event, object)) = filter.translate(change) {
                        pending.push_back(encoder.encode(event, &object));
                    }
                }
            }
        }
        if send_initial_events && bookmarks {
            let bookmark = json!({
                "kind": rt.kind,
                "apiVersion": rt.api_version(),
                "metadata": {
                    "resourceVersion": after.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            });
            pending.push_back(encode_event("BOOKMARK", &bookmark));
        }
        drop(store);
        let now = tokio::time::Instant::now();
        let state = WatchState {
            pending,
            receiver,
            after,
            last_seen: after,
            filter,
            encoder,
            deadline: now + timeout,
            bookmark_interval: bookmarks.then_some(self.shared.bookmark_interval),
            next_bookmark: now + self.shared.bookmark_interval,
        };
        watch_response(stream::unfold(state, |mut state| async move {
            let chunk = state.next_chunk().await?;
            Some((Ok::<Bytes, Infallible>(chunk), state))
        }))
    }
}

struct WatchFilter {
    resource: String,
    namespace: Option<String>,
    selection: Selection,
}

impl WatchFilter {
    /// The event a watcher sees for a change, as kube-apiserver's watch cache decides: an
    /// object that starts or stops matching the selectors is `ADDED` or `DELETED`.
    fn translate(&self, change: &Change) -> Option<(&'static str, Arc<Value>)> {
        if change.resource != self.resource
            || self
                .namespace
                .as_deref()
                .is_some_and(|namespace| namespace != change.namespace)
        {
            return None;
        }
        let now = self.selection.matches(&change.object);
        let before = change
            .previous
            .as_deref()
            .is_some_and(|previous| self.selection.matches(previous));
        let event = match (change.change, before, now) {
            (ChangeType::Added, _, true) => "ADDED",
            (ChangeType::Modified, true, true) => "MODIFIED",
            (ChangeType::Modified, false, true) => "ADDED",
            (ChangeType::Modified, true, false) => "DELETED",
            (ChangeType::Deleted, true, _) => "DELETED",
            _ => return None,
        };
        Some((event, change.object.clone()))
    }
}

/// Turns objects into watch events of the representation the client asked for.
struct EventEncoder {
    rt: Arc<ResourceType>,
    representation: Representation,
    /// Only the first Table event carries column definitions.
    first: bool,
}

impl EventEncoder {
    fn encode(&mut self, event: &str, object: &Value) -> Bytes {
        match self.representation {
            Representation::Object => encode_event(event, object),
            Representation::PartialMetadata { version } => {
                encode_event(event, &partial_metadata(object, version))
            }
            Representation::Table { version, include } => {
                let rv = resource_version_of(object).to_string();
                let table = table(
                    &self.rt,
                    &[Arc::new(object.clone())],
                    include,
                    self.first,
                    json!({"resourceVersion": rv}),
                    version,
                );
                self.first = false;
                encode_event(event, &table)
            }
        }
    }
}

fn encode_event(event: &str, object: &Value) -> Bytes {
    let mut line = format!(r#"{{"type":"{event}","object":"#).into_bytes();
    let _ = serde_json::to_writer(&mut line, object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

struct WatchState {
    pending: VecDeque<Bytes>,
    receiver: broadcast::Receiver<Arc<Change>>,
    /// Changes up to this revision were replayed (or are in `pending`) already.
    after: u64,
    last_seen: u64,
    filter: WatchFilter,
    encoder: EventEncoder,
    deadline: tokio::time::Instant,
    bookmark_interval: Option<Duration>,
    next_bookmark: tokio::time::Instant,
}

impl WatchState {
    /// The next event line; `None` ends the response (timeout, or the watch fell behind).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            let bookmarks = self.bookmark_interval.is_some();
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(change) => {
                        self.last_seen = self.last_seen.max(change.revision);
                        if change.revision <= self.after {
                            continue;
                        }
                        if let Some((event, object)) = self.filter.translate(&change) {
                            return Some(self.encoder.encode(event, &object));
                        }
                    }
                    // Too slow a watcher is closed, as kube-apiserver closes it; the client
                    // re-lists.
                    Err(_) => return None,
                },
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = tokio::time::sleep_until(self.next_bookmark), if bookmarks => {
                    self.next_bookmark += self.bookmark_interval.unwrap_or_default();
                    let rt = &self.encoder.rt;
                    let bookmark = json!({
                        "kind": rt.kind,
                        "apiVersion": rt.api_version(),
                        "metadata": {"resourceVersion": self.last_seen.to_string()},
                    });
                    return Some(encode_event("BOOKMARK", &bookmark));
                }
            }
        }
    }
}
