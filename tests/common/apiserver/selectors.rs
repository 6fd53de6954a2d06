//! Selectors: the `labelSelector` and `fieldSelector` of a list, a watch or a
//! deletecollection.
//!
//! Faithful: label selectors with `=`, `==`, `!=`, `in`, `notin`, existence and `!`; field
//! selectors with `=`, `==` and `!=` on `metadata.name`, `metadata.namespace` and the
//! fields kube-apiserver lets each resource select by (for pods: `spec.nodeName`,
//! `status.phase` and the others), any other field being refused as kube-apiserver refuses
//! it (`field label not supported`). Not faithful: label keys and values are not validated
//! as kube-apiserver validates them.

use std::collections::HashMap;

use serde_json::Value;

use super::catalog::ResourceType;
use super::responses::ApiError;

#[derive(Debug)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    let mut requirements = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let requirement = if let Some(key) = term.strip_prefix('!') {
            LabelRequirement::DoesNotExist(key.trim().to_string())
        } else if let Some(open) = term.find('(') {
            let close = term
                .rfind(')')
                .ok_or_else(|| format!("unable to parse requirement: {term}"))?;
            let values: Vec<String> = term[open + 1..close]
                .split(',')
                .map(|value| value.trim().to_string())
                .collect();
            let mut words = term[..open].split_whitespace();
            let key = words.next().unwrap_or("").to_string();
            match words.next() {
                Some("in") => LabelRequirement::In(key, values),
                Some("notin") => LabelRequirement::NotIn(key, values),
                _ => return Err(format!("unable to parse requirement: {term}")),
            }
        } else if let Some((key, value)) = term.split_once("!=") {
            LabelRequirement::NotEquals(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = term.split_once("==") {
            LabelRequirement::Equals(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = term.split_once('=') {
            LabelRequirement::Equals(key.trim().to_string(), value.trim().to_string())
        } else {
            LabelRequirement::Exists(term.to_string())
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

impl LabelRequirement {
    pub(super) fn matches(&self, labels: &Value) -> bool {
        let label = |key: &str| labels[key].as_str();
        match self {
            LabelRequirement::Equals(key, value) => label(key) == Some(value),
            LabelRequirement::NotEquals(key, value) => label(key) != Some(value),
            LabelRequirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|value| value == v))
            }
            LabelRequirement::NotIn(key, values) => {
                label(key).is_none_or(|v| !values.iter().any(|value| value == v))
            }
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::DoesNotExist(key) => label(key).is_none(),
        }
    }
}

#[derive(Debug)]
struct FieldRequirement {
    path: String,
    value: String,
    equal: bool,
}

/// The fields kube-apiserver lets a field selector use, beyond `metadata.name` and
/// `metadata.namespace`.
fn selectable_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "secrets" => &["type"],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "namespaces" => &["status.phase"],
        "nodes" => &["spec.unschedulable"],
        "replicasets.apps" => &["status.replicas"],
        _ => &[],
    }
}

fn parse_field_selector(resource: &str, selector: &str) -> Result<Vec<FieldRequirement>, String> {
    let mut requirements = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, equal) = if let Some((path, value)) = term.split_once("!=") {
            (path, value, false)
        } else if let Some((path, value)) = term.split_once("==") {
            (path, value, true)
        } else if let Some((path, value)) = term.split_once('=') {
            (path, value, true)
        } else {
            return Err(format!(
                "invalid selector: '{selector}'; can't understand '{term}'"
            ));
        };
        let path = path.trim();
        if !matches!(path, "metadata.name" | "metadata.namespace")
            && !selectable_fields(resource).contains(&path)
        {
            return Err(format!("field label not supported: {path}"));
        }
        requirements.push(FieldRequirement {
            path: path.to_string(),
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(requirements)
}

impl FieldRequirement {
    pub(super) fn matches(&self, object: &Value) -> bool {
        let mut current = object;
        for part in self.path.split('.') {
            current = &current[part];
        }
        let actual = match current {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (actual == self.value) == self.equal
    }
}

/// The `labelSelector` and `fieldSelector` of a list, watch or deletecollection.
pub(super) struct Selection {
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

impl Selection {
    pub(super) fn from_query(
        rt: &ResourceType,
        query: &HashMap<String, String>,
    ) -> Result<Selection, ApiError> {
        let bad_request = |message: String| ApiError::new(400, "BadRequest", message, None);
        let labels = parse_label_selector(query.get("labelSelector").map_or("", String::as_str))
            .map_err(bad_request)?;
        let fields = parse_field_selector(
            &rt.key(),
            query.get("fieldSelector").map_or("", String::as_str),
        )
        .map_err(bad_request)?;
        Ok(Selection { labels, fields })
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels
            .iter()
            .all(|requirement| requirement.matches(labels))
            && self
                .fields
                .iter()
                .all(|requirement| requirement.matches(object))
    }
}
