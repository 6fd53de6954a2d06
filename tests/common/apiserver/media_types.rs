//! Media types: the ranges of an Accept header and the representation they ask for, the
//! object itself, a Table (`application/json;as=Table;v=v1;g=meta.k8s.io`, with the
//! `includeObject` parameter) or PartialObjectMetadata; and the decoding of query strings.
//!
//! Faithful: the first JSON range the stand-in can serve wins, `v1` and `v1beta1` of
//! `meta.k8s.io` are both accepted, and nothing acceptable is `406 NotAcceptable`. Not
//! faithful: protobuf and YAML ranges are passed over (the stand-in answers JSON only), and
//! quality values (`q=`) are ignored.

use actix_web::web;

use super::responses::ApiError;
use super::router::Call;

/// One entry of an Accept header: `application/json;as=Table;v=v1;g=meta.k8s.io`.
pub(super) struct MediaRange {
    essence: String,
    params: Vec<(String, String)>,
}

impl MediaRange {
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn is_json(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "application/json" | "*/*" | "application/*"
        )
    }
}

pub(super) fn media_ranges(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .filter(|range| !range.trim().is_empty())
        .map(|range| {
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let params = parts
                .filter_map(|param| param.split_once('='))
                .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
                .collect();
            MediaRange { essence, params }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IncludeObject {
    None,
    Metadata,
    Object,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Representation {
    Object,
    Table {
        version: &'static str,
        include: IncludeObject,
    },
    PartialMetadata {
        version: &'static str,
    },
}

pub(super) fn query_pairs(query: &str) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(query)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

impl Call<'_> {
    /// What the Accept header asks for.
    pub(super) fn representation(&self) -> Result<Representation, ApiError> {
        let accept = self.accept();
        if accept.is_empty() {
            return Ok(Representation::Object);
        }
        let include = match self.param("includeObject") {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        };
        for range in media_ranges(accept) {
            if !range.is_json() {
                continue;
            }
            let version = match range.param("v") {
                Some("v1") => "v1",
                Some("v1beta1") => "v1beta1",
                _ => "v1",
            };
            match (range.param("as"), range.param("g")) {
                (None, _) => return Ok(Representation::Object),
                (Some("Table"), Some("meta.k8s.io")) => {
                    return Ok(Representation::Table { version, include })
                }
                (
                    Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                    Some("meta.k8s.io"),
                ) => return Ok(Representation::PartialMetadata { version }),
                _ => {}
            }
        }
        Err(ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io",
            None,
        ))
    }
}
