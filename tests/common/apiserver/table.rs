//! Server-side printing (Table): what `kubectl get` shows, computed by the server as
//! kube-apiserver's printers compute it.
//!
//! Faithful to kube-apiserver v1.32 for pods, configmaps, secrets, services, namespaces and
//! deployments: the same columns (names, types, formats, descriptions, priorities) and
//! cells, pod status reasons included, and ages printed as `kubectl get` prints them; every
//! other resource gets kube-apiserver's default `Name`, `Created At`. Not faithful: the
//! printers of the other built-in types (nodes, events, replicasets and the rest) are not
//! there; they get the default columns.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::catalog::ResourceType;
use super::media_types::IncludeObject;
use super::object_helpers::{name_of, partial_metadata, str_at, strings_at};

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const fn column(
    name: &'static str,
    kind: &'static str,
    description: &'static str,
    priority: u8,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: NAME_DESCRIPTION,
    priority: 0,
};
const AGE: Column = column("Age", "string", AGE_DESCRIPTION, 0);

/// The columns kube-apiserver's printers use for the resources they know, and the default
/// `Name`, `Created At` for the rest.
fn columns(rt: &ResourceType) -> Vec<Column> {
    match rt.key().as_str() {
        "pods" => vec![
            NAME,
            column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", 0),
            column("Status", "string", "The aggregate status of the containers in this pod.", 0),
            column("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
            AGE,
            column("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
            column("Node", "string", "NodeName is a request to schedule this pod onto a specific node. If it is non-empty, the scheduler simply schedules this pod onto that node, assuming that it fits resource requirements.", 1),
            column("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.", 1),
            column("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates", 1),
        ],
        "configmaps" => vec![
            NAME,
            column("Data", "integer", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.", 0),
            AGE,
        ],
        "secrets" => vec![
            NAME,
            column("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types", 0),
            column("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4", 0),
            AGE,
        ],
        "services" => vec![
            NAME,
            column("Type", "string", "type determines how the Service is exposed. Defaults to ClusterIP.", 0),
            column("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly.", 0),
            column("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", 0),
            column("Port(s)", "string", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies", 0),
            AGE,
            column("Selector", "string", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/", 1),
        ],
        "namespaces" => vec![
            NAME,
            column("Status", "string", "The status of the namespace", 0),
            AGE,
        ],
        "deployments.apps" => vec![
            NAME,
            column("Ready", "string", "Number of the pod with ready state", 0),
            column("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
            column("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
            AGE,
            column("Containers", "string", "Names of each container in the template.", 1),
            column("Images", "string", "Images referenced by each container in the template.", 1),
            column("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1),
        ],
        _ => vec![
            NAME,
            Column {
                name: "Created At",
                kind: "date",
                format: "",
                description: AGE_DESCRIPTION,
                priority: 0,
            },
        ],
    }
}

fn cells(rt: &ResourceType, object: &Value) -> Vec<Value> {
    let name = Value::String(name_of(object).to_string());
    let created = str_at(&object["metadata"], "creationTimestamp");
    let age = Value::String(age(created));
    let or_none = |value: &Value| match value.as_str() {
        Some(text) if !text.is_empty() => text.to_string(),
        _ => "<none>".to_string(),
    };
    let spec = &object["spec"];
    let status = &object["status"];
    match rt.key().as_str() {
        "pods" => {
            let containers = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|s| s["ready"].as_bool() == Some(true))
                .count();
            let restarts: u64 = statuses
                .iter()
                .filter_map(|s| s["restartCount"].as_u64())
                .sum();
            let mut reason = status["phase"].as_str().unwrap_or_default().to_string();
            if let Some(pod_reason) = status["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = pod_reason.to_string();
            }
            for container in &statuses {
                let state = &container["state"];
                if let Some(waiting) = state["waiting"]["reason"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                {
                    reason = waiting.to_string();
                } else if let Some(terminated) = state["terminated"]["reason"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                {
                    reason = terminated.to_string();
                }
            }
            if !object["metadata"]["deletionTimestamp"].is_null() {
                reason = "Terminating".to_string();
            }
            let gates = spec["readinessGates"].as_array().map_or(0, Vec::len);
            vec![
                name,
                format!("{ready}/{containers}").into(),
                reason.into(),
                restarts.to_string().into(),
                age,
                or_none(&status["podIP"]).into(),
                or_none(&spec["nodeName"]).into(),
                or_none(&status["nominatedNodeName"]).into(),
                if gates == 0 {
                    "<none>".into()
                } else {
                    format!("0/{gates}").into()
                },
            ]
        }
        "configmaps" => {
            let count = object["data"].as_object().map_or(0, Map::len)
                + object["binaryData"].as_object().map_or(0, Map::len);
            vec![name, count.into(), age]
        }
        "secrets" => {
            let count = object["data"].as_object().map_or(0, Map::len);
            vec![
                name,
                str_at(object, "type").to_string().into(),
                count.into(),
                age,
            ]
        }
        "services" => {
            let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
            let ports = spec["ports"]
                .as_array()
                .map(|ports| {
                    ports
                        .iter()
                        .map(|port| {
                            let protocol = port["protocol"].as_str().unwrap_or("TCP");
                            match port["nodePort"].as_u64() {
                                Some(node) => format!("{}:{node}/{protocol}", port["port"]),
                                None => format!("{}/{protocol}", port["port"]),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|ports| !ports.is_empty())
                .unwrap_or_else(|| "<none>".to_string());
            let external = strings_at(spec, "externalIPs").join(",");
            let selector = spec["selector"]
                .as_object()
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|selector| !selector.is_empty())
                .unwrap_or_else(|| "<none>".to_string());
            vec![
                name,
                kind.into(),
                or_none(&spec["clusterIP"]).into(),
                if external.is_empty() {
                    "<none>".into()
                } else {
                    external.into()
                },
                ports.into(),
                age,
                selector.into(),
            ]
        }
        "namespaces" => vec![name, str_at(status, "phase").to_string().into(), age],
        "deployments.apps" => {
            let replicas = spec["replicas"].as_u64().unwrap_or(0);
            let count = |field: &str| status[field].as_u64().unwrap_or(0);
            let template = spec["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let join = |field: &str| {
                template
                    .iter()
                    .map(|c| str_at(c, field).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let selector = spec["selector"]["matchLabels"]
                .as_object()
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                format!("{}/{replicas}", count("readyReplicas")).into(),
                count("updatedReplicas").into(),
                count("availableReplicas").into(),
                age,
                join("name").into(),
                join("image").into(),
                selector.into(),
            ]
        }
        _ => vec![name, created.to_string().into()],
    }
}

pub(super) fn table(
    rt: &ResourceType,
    objects: &[Arc<Value>],
    include: IncludeObject,
    with_columns: bool,
    metadata: Value,
    version: &str,
) -> Value {
    let column_definitions = if with_columns {
        Value::Array(
            columns(rt)
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "type": c.kind,
                        "format": c.format,
                        "description": c.description,
                        "priority": c.priority,
                    })
                })
                .collect(),
        )
    } else {
        Value::Null
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let embedded = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => partial_metadata(object, version),
                IncludeObject::Object => (**object).clone(),
            };
            json!({"cells": cells(rt, object), "object": embedded})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

/// How old something created at `created` (RFC 3339) is, as `kubectl get` prints it
/// (k8s.io/apimachinery/pkg/util/duration.HumanDuration).
fn age(created: &str) -> String {
    let Ok(created) = humantime::parse_rfc3339_weak(created) else {
        return "<unknown>".to_string();
    };
    let seconds = match SystemTime::now().duration_since(created) {
        Ok(elapsed) => elapsed.as_secs(),
        Err(ahead) if ahead.duration().as_secs() < 2 => 0,
        Err(_) => return "<invalid>".to_string(),
    };
    human_duration(seconds)
}

fn human_duration(seconds: u64) -> String {
    let minutes = seconds / 60;
    let hours = seconds / 3600;
    let days = hours / 24;
    if seconds < 60 * 2 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 60 * 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}
