//! kubegate's OpenAPI document, and real answers checked against its schemas: one helper
//! for every REST test, so that the document cannot drift from what handlers write.

use std::sync::LazyLock;

use serde_json::Value;

/// The document, as served (`GET /pipeline/api/v1/openapi.json` serves the same one).
pub static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    serde_json::to_value(kubegate::http::openapi::openapi()).expect("the document is JSON")
});

/// Asserts that `body`, answered with `status` to `method` on the documented `path`
/// (the template, e.g. `/pipeline/api/v1/orgs/{org}/clusters`), is what the document's
/// JSON schema for that answer allows.
pub fn assert_documented(method: &str, path: &str, status: u16, body: &Value) {
    let operation = &DOCUMENT["paths"][path][method.to_lowercase()];
    assert!(
        operation.is_object(),
        "the OpenAPI document has no {method} {path}: describe it in its handler's #[utoipa::path]"
    );
    let schema =
        &operation["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "the OpenAPI document has no JSON answer {status} for {method} {path}: add it to the \
         responses of its handler's #[utoipa::path]"
    );
    // the schema's $refs point into the document's components
    let mut root = schema.clone();
    root["components"] = DOCUMENT["components"].clone();
    let validator = jsonschema::draft202012::new(&root).unwrap_or_else(|e| {
        panic!("the schema of {status} for {method} {path} does not compile: {e}")
    });
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the answer {status} to {method} {path} is not what the OpenAPI document says:\n{}\nthe answer: {body}",
        errors.join("\n")
    );
}
