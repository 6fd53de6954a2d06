//! Protobuf request bodies.
//!
//! Decodes Kubernetes protobuf bodies (`k8s\0` + `runtime.Unknown`) of the few types
//! kubectl's typed clients send, field numbers as in k8s.io/api `generated.proto`. Fields
//! not listed here are dropped.
//!
//! Faithful: the `k8s\0` magic and `runtime.Unknown` envelope, and the field numbers and
//! wire types of ConfigMap, Secret, Namespace, Pod, Deployment, SelfSubjectReview and
//! TokenReview, zero fields left out of JSON as Go leaves them out. Not faithful: any other
//! type (and so any body the stand-in cannot read) is refused with `415`, and the stand-in
//! never answers in protobuf.

use base64::Engine as _;
use serde_json::{Map, Value};

/// How one field is written.
enum Kind {
    Text,
    Bytes,
    Int,
    Bool,
    Time,
    Quantity,
    Message(&'static [Field]),
    TextMap,
    BytesMap,
    QuantityMap,
}

struct Field(u64, &'static str, Kind, bool);

const fn one(number: u64, name: &'static str, kind: Kind) -> Field {
    Field(number, name, kind, false)
}

const fn many(number: u64, name: &'static str, kind: Kind) -> Field {
    Field(number, name, kind, true)
}

const OBJECT_META: &[Field] = &[
    one(1, "name", Kind::Text),
    one(2, "generateName", Kind::Text),
    one(3, "namespace", Kind::Text),
    one(5, "uid", Kind::Text),
    one(6, "resourceVersion", Kind::Text),
    one(7, "generation", Kind::Int),
    one(8, "creationTimestamp", Kind::Time),
    one(11, "labels", Kind::TextMap),
    one(12, "annotations", Kind::TextMap),
    many(14, "finalizers", Kind::Text),
];
const CONFIG_MAP: &[Field] = &[
    one(1, "metadata", Kind::Message(OBJECT_META)),
    one(2, "data", Kind::TextMap),
    one(3, "binaryData", Kind::BytesMap),
    one(4, "immutable", Kind::Bool),
];
const SECRET: &[Field] = &[
    one(1, "metadata", Kind::Message(OBJECT_META)),
    one(2, "data", Kind::BytesMap),
    one(3, "type", Kind::Text),
    one(4, "stringData", Kind::TextMap),
    one(5, "immutable", Kind::Bool),
];
const NAMESPACE: &[Field] = &[
    one(1, "metadata", Kind::Message(OBJECT_META)),
    one(
        2,
        "spec",
        Kind::Message(&[many(1, "finalizers", Kind::Text)]),
    ),
];
const CONTAINER_PORT: &[Field] = &[
    one(1, "name", Kind::Text),
    one(2, "hostPort", Kind::Int),
    one(3, "containerPort", Kind::Int),
    one(4, "protocol", Kind::Text),
    one(5, "hostIP", Kind::Text),
];
const ENV_VAR: &[Field] = &[one(1, "name", Kind::Text), one(2, "value", Kind::Text)];
const RESOURCES: &[Field] = &[
    one(1, "limits", Kind::QuantityMap),
    one(2, "requests", Kind::QuantityMap),
];
const CONTAINER: &[Field] = &[
    one(1, "name", Kind::Text),
    one(2, "image", Kind::Text),
    many(3, "command", Kind::Text),
    many(4, "args", Kind::Text),
    one(5, "workingDir", Kind::Text),
    many(6, "ports", Kind::Message(CONTAINER_PORT)),
    many(7, "env", Kind::Message(ENV_VAR)),
    one(8, "resources", Kind::Message(RESOURCES)),
    one(13, "terminationMessagePath", Kind::Text),
    one(14, "imagePullPolicy", Kind::Text),
    one(16, "stdin", Kind::Bool),
    one(17, "stdinOnce", Kind::Bool),
    one(18, "tty", Kind::Bool),
    one(20, "terminationMessagePolicy", Kind::Text),
];
const POD_SPEC: &[Field] = &[
    many(2, "containers", Kind::Message(CONTAINER)),
    one(3, "restartPolicy", Kind::Text),
    one(4, "terminationGracePeriodSeconds", Kind::Int),
    one(6, "dnsPolicy", Kind::Text),
    one(7, "nodeSelector", Kind::TextMap),
    one(8, "serviceAccountName", Kind::Text),
    one(10, "nodeName", Kind::Text),
    one(19, "schedulerName", Kind::Text),
    many(20, "initContainers", Kind::Message(CONTAINER)),
];
const POD: &[Field] = &[
    one(1, "metadata", Kind::Message(OBJECT_META)),
    one(2, "spec", Kind::Message(POD_SPEC)),
];
const LABEL_SELECTOR: &[Field] = &[one(1, "matchLabels", Kind::TextMap)];
const DEPLOYMENT_SPEC: &[Field] = &[
    one(1, "replicas", Kind::Int),
    one(2, "selector", Kind::Message(LABEL_SELECTOR)),
    one(3, "template", Kind::Message(POD)),
    one(4, "strategy", Kind::Message(&[one(1, "type", Kind::Text)])),
    one(5, "minReadySeconds", Kind::Int),
    one(6, "revisionHistoryLimit", Kind::Int),
    one(7, "paused", Kind::Bool),
    one(9, "progressDeadlineSeconds", Kind::Int),
];
const DEPLOYMENT: &[Field] = &[
    one(1, "metadata", Kind::Message(OBJECT_META)),
    one(2, "spec", Kind::Message(DEPLOYMENT_SPEC)),
];
const METADATA_ONLY: &[Field] = &[one(1, "metadata", Kind::Message(OBJECT_META))];
const TOKEN_REVIEW: &[Field] = &[
    one(1, "metadata", Kind::Message(OBJECT_META)),
    one(
        2,
        "spec",
        Kind::Message(&[
            one(1, "token", Kind::Text),
            many(2, "audiences", Kind::Text),
        ]),
    ),
];
const TYPE_META: &[Field] = &[one(1, "apiVersion", Kind::Text), one(2, "kind", Kind::Text)];

/// The JSON form of a protobuf body, or `None` for a type the stand-in cannot read.
pub(super) fn decode(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(b"k8s\0")?;
    let fields = parse(unknown)?;
    let type_meta = message(&fields, 1, TYPE_META)?;
    let raw = fields
        .iter()
        .find(|(n, _)| *n == 2)
        .and_then(|(_, v)| v.bytes())?;
    let schema = match type_meta["kind"].as_str()? {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "Pod" => POD,
        "Deployment" => DEPLOYMENT,
        "SelfSubjectReview" => METADATA_ONLY,
        "TokenReview" => TOKEN_REVIEW,
        _ => return None,
    };
    let mut object = to_json(&parse(raw)?, schema)?;
    object["kind"] = type_meta["kind"].clone();
    object["apiVersion"] = type_meta["apiVersion"].clone();
    Some(object)
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Wire<'a> {
    fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Wire::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }
}

fn varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn parse(mut input: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut fields = Vec::new();
    while !input.is_empty() {
        let key = varint(&mut input)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut input)?),
            1 => {
                input = input.get(8..)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut input)?).ok()?;
                let (bytes, rest) = (input.get(..len)?, input.get(len..)?);
                input = rest;
                Wire::Bytes(bytes)
            }
            5 => {
                input = input.get(4..)?;
                Wire::Fixed
            }
            _ => return None,
        };
        fields.push((key >> 3, value));
    }
    Some(fields)
}

fn message(fields: &[(u64, Wire<'_>)], number: u64, schema: &[Field]) -> Option<Value> {
    let bytes = fields.iter().find(|(n, _)| *n == number)?.1.bytes()?;
    to_json(&parse(bytes)?, schema)
}

fn text(bytes: &[u8]) -> Option<Value> {
    Some(Value::String(String::from_utf8(bytes.to_vec()).ok()?))
}

fn to_json(fields: &[(u64, Wire<'_>)], schema: &[Field]) -> Option<Value> {
    let mut object = Map::new();
    for Field(number, name, kind, repeated) in schema {
        let mut values = Vec::new();
        let mut map = Map::new();
        for (_, wire) in fields.iter().filter(|(n, _)| n == number) {
            let value = match (kind, wire) {
                (Kind::Int, Wire::Varint(v)) => Value::from(*v as i64),
                (Kind::Bool, Wire::Varint(v)) => Value::Bool(*v != 0),
                (Kind::Text, Wire::Bytes(b)) => text(b)?,
                (Kind::Bytes, Wire::Bytes(b)) => {
                    base64::engine::general_purpose::STANDARD.encode(b).into()
                }
                (Kind::Message(inner), Wire::Bytes(b)) => to_json(&parse(b)?, inner)?,
                (Kind::Quantity, Wire::Bytes(b)) => quantity(b)?,
                (Kind::Time, Wire::Bytes(b)) => {
                    let time = parse(b)?;
                    let seconds = time.iter().find_map(|(n, w)| match (n, w) {
                        (1, Wire::Varint(v)) => Some(*v),
                        _ => None,
                    });
                    match seconds {
                        Some(seconds) => {
                            let at =
                                std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
                            humantime::format_rfc3339_seconds(at).to_string().into()
                        }
                        None => continue,
                    }
                }
                (Kind::TextMap | Kind::BytesMap | Kind::QuantityMap, Wire::Bytes(b)) => {
                    let entry = parse(b)?;
                    let key = entry
                        .iter()
                        .find(|(n, _)| *n == 1)
                        .and_then(|(_, w)| w.bytes());
                    let value = entry
                        .iter()
                        .find(|(n, _)| *n == 2)
                        .and_then(|(_, w)| w.bytes());
                    let key = String::from_utf8(key.unwrap_or_default().to_vec()).ok()?;
                    let value = value.unwrap_or_default();
                    let value = match kind {
                        Kind::TextMap => text(value)?,
                        Kind::BytesMap => base64::engine::general_purpose::STANDARD
                            .encode(value)
                            .into(),
                        _ => quantity(value)?,
                    };
                    map.insert(key, value);
                    continue;
                }
                _ => return None,
            };
            values.push(value);
        }
        if !map.is_empty() {
            object.insert(name.to_string(), Value::Object(map));
        } else if *repeated && !values.is_empty() {
            object.insert(name.to_string(), Value::Array(values));
        } else if let Some(value) = values.pop() {
            if !is_omitted_zero(name, &value) {
                object.insert(name.to_string(), value);
            }
        }
    }
    Some(Value::Object(object))
}

/// Go writes every non-pointer field to protobuf, zero or not, but leaves zero
/// `omitempty` fields out of JSON: so do the same, except for the pointer or required
/// fields whose zero means something.
fn is_omitted_zero(name: &str, value: &Value) -> bool {
    const MEANINGFUL_ZEROS: &[&str] = &[
        "replicas",
        "containerPort",
        "terminationGracePeriodSeconds",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
        "immutable",
    ];
    let zero = match value {
        Value::String(text) => text.is_empty(),
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_i64() == Some(0),
        _ => false,
    };
    zero && !MEANINGFUL_ZEROS.contains(&name)
}

/// `resource.Quantity` is a message with one string field.
fn quantity(bytes: &[u8]) -> Option<Value> {
    let fields = parse(bytes)?;
    let text_bytes = fields
        .iter()
        .find(|(n, _)| *n == 1)
        .and_then(|(_, w)| w.bytes());
    text(text_bytes.unwrap_or_default())
}
