//! The object store and its change history: objects by resource, namespace and name, one
//! resourceVersion counter for all of them, the last changes kept for watches to replay,
//! and a broadcast channel that tells open watches of each change. It starts with the
//! namespaces and the `kubernetes` service of a new cluster.
//!
//! Faithful: resourceVersions are one increasing number across all resources (as etcd's
//! revision), lists are in namespace/name order, and a watch from a resourceVersion older
//! than the kept history is told `410 Expired` (compaction). Not faithful: nothing is
//! persisted, nothing runs on the objects (no controllers, no garbage collector, no
//! scheduler, no kubelet: pods stay as written), and pod logs are whatever the test puts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::catalog::{known_resource, ResourceType};
use super::object_helpers::{fill_in_metadata, name_of, namespace_of, prepare_new};

/// How many changes are kept to replay to watches that start from an old resourceVersion;
/// older ones are "compacted" (a watch from before them gets `410 Expired`).
const HISTORY_LIMIT: usize = 10_000;
/// The first resourceVersion; real ones are large numbers too.
const FIRST_REVISION: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One change to the store, kept for replay and sent to open watches.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) revision: u64,
    pub(super) resource: String,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) change: ChangeType,
    /// The object after the change; for a deletion, its last state with the deletion's
    /// resourceVersion.
    pub(super) object: Arc<Value>,
    /// The object before the change, if it existed.
    pub(super) previous: Option<Arc<Value>>,
}

/// Objects by resource key, then by (namespace, name): iteration is in that order, which is
/// also the order of lists and of `continue` tokens.
pub(super) struct Store {
    pub(super) revision: u64,
    pub(super) objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    pub(super) history: VecDeque<Arc<Change>>,
    pub(super) changes: broadcast::Sender<Arc<Change>>,
    pub(super) pod_logs: HashMap<(String, String), String>,
}

impl Store {
    pub(super) fn new() -> Store {
        let mut store = Store {
            revision: FIRST_REVISION,
            objects: HashMap::new(),
            history: VecDeque::new(),
            changes: broadcast::channel(HISTORY_LIMIT).0,
            pod_logs: HashMap::new(),
        };
        for name in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            let rt = known_resource("namespaces");
            let mut namespace = json!({"metadata": {"name": name}});
            prepare_new(&rt, &mut namespace);
            fill_in_metadata(&rt, &mut namespace, "");
            store.write(&rt, namespace);
        }
        let rt = known_resource("services");
        let mut kubernetes = json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "clusterIP": "10.96.0.1",
                "clusterIPs": ["10.96.0.1"],
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                "sessionAffinity": "None",
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        });
        fill_in_metadata(&rt, &mut kubernetes, "default");
        store.write(&rt, kubernetes);
        store
    }

    pub(super) fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(resource)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of one resource, in one namespace or all.
    pub(super) fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(objects) = self.objects.get(resource) else {
            return Vec::new();
        };
        objects
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| ns == wanted))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Stores `object` (whose metadata is complete) with a new resourceVersion.
    pub(super) fn write(&mut self, rt: &ResourceType, mut object: Value) -> Arc<Value> {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.revision.to_string());
        let namespace = namespace_of(&object).to_string();
        let name = name_of(&object).to_string();
        let object = Arc::new(object);
        let previous = self
            .objects
            .entry(rt.key())
            .or_default()
            .insert((namespace.clone(), name.clone()), object.clone());
        let change = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(Change {
            revision: self.revision,
            resource: rt.key(),
            namespace,
            name,
            change,
            object: object.clone(),
            previous,
        });
        object
    }

    pub(super) fn remove(
        &mut self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        let previous = self
            .objects
            .get_mut(resource)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        self.revision += 1;
        let mut last = (*previous).clone();
        last["metadata"]["resourceVersion"] = Value::String(self.revision.to_string());
        let last = Arc::new(last);
        self.record(Change {
            revision: self.revision,
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            change: ChangeType::Deleted,
            object: last.clone(),
            previous: Some(previous),
        });
        Some(last)
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.changes.send(change);
    }

    /// The oldest resourceVersion a watch can start from and still see every change.
    pub(super) fn oldest_replayable(&self) -> u64 {
        self.history
            .front()
            .map_or(self.revision, |change| change.revision - 1)
    }
}
