//! The requests log: every request the stand-in receives is recorded as it arrives, before
//! it is authenticated, and completed later with its body (once read) and its status code
//! (once known; for a watch, when it starts). [`super::ApiServer::requests`] reads it.
//!
//! kube-apiserver keeps no such log (its audit log is the nearest thing); this is for tests
//! to assert on what reached the API server, headers and identity included.

use super::RecordedRequest;

/// The requests received, in order of arrival.
#[derive(Default)]
pub(super) struct Recorder {
    next_sequence: u64,
    pub(super) requests: Vec<RecordedRequest>,
}

impl Recorder {
    pub(super) fn record(&mut self, mut request: RecordedRequest) -> u64 {
        self.next_sequence += 1;
        request.sequence = self.next_sequence;
        self.requests.push(request);
        self.next_sequence
    }

    /// Completes a recorded request, unless it has been cleared away since.
    pub(super) fn complete(&mut self, sequence: u64, complete: impl FnOnce(&mut RecordedRequest)) {
        if let Some(request) = self
            .requests
            .iter_mut()
            .rev()
            .find(|r| r.sequence == sequence)
        {
            complete(request);
        }
    }
}
