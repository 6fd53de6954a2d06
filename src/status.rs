//! Errors as Kubernetes `Status` objects, so that kubectl prints them well.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;

/// A `Status` error about to be sent.
#[derive(Debug, Clone)]
pub struct StatusError {
    /// HTTP status.
    pub code: StatusCode,
    /// Kubernetes reason (`Forbidden`, `NotFound`...).
    pub reason: &'static str,
    /// A message a person can act on.
    pub message: String,
    /// `details` of the Status, if any (`{"name":..,"kind":..}`).
    pub details: Option<serde_json::Value>,
}

impl StatusError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        StatusError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }
    /// 401
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }
    /// 403
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    /// 404
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
    /// 502: the API server could not be reached or broke off.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "ServiceUnavailable", message)
    }
    /// 503: a part of kubegate the request needs is not available.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }
    /// 504: the API server did not accept the connection in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }
    /// 429: a client sent more requests than its rate limit allows.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
    }
    /// 431: the request's headers are larger than `server.max_header_bytes`.
    pub fn headers_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderFieldsTooLarge",
            message,
        )
    }
    /// 500
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Adds `details`.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status.to_string()
    }

    /// The response.
    pub fn response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.code);
        builder.content_type("application/json");
        if self.code == StatusCode::UNAUTHORIZED {
            builder.insert_header(("WWW-Authenticate", "Bearer realm=\"kubegate\""));
        }
        builder.body(self.body())
    }
}

/// A Kubernetes `Status` (`kind: Status`), as the proxy route and authentication
/// answer errors.
#[derive(utoipa::ToSchema)]
#[schema(as = Status)]
#[allow(dead_code, non_snake_case)] // a description of what `StatusError::body` writes
pub struct KubernetesStatus {
    /// `Status`.
    kind: String,
    /// `v1`.
    apiVersion: String,
    /// Always empty.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    /// `Failure`.
    status: String,
    /// What went wrong, and what to do about it.
    message: String,
    /// Kubernetes' reason (`NotFound`, `Forbidden`, `Unauthorized`...).
    reason: String,
    /// The HTTP status code.
    code: u16,
    /// What the error is about, when it is about one object (`{name, kind}`).
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.code.as_u16(),
            self.reason,
            self.message
        )
    }
}

impl actix_web::ResponseError for StatusError {
    fn status_code(&self) -> StatusCode {
        self.code
    }

    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_a_kubernetes_status() {
        let e = StatusError::not_found("cluster 7 not found")
            .with_details(json!({"name": "7", "kind": "clusters"}));
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["code"], 404);
        assert_eq!(v["details"]["kind"], "clusters");
    }
}
