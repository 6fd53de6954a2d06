//! The HTTP client side of the tests: one call to kubegate, its status and JSON body.

use serde_json::Value;

/// A client without the default 5 s timeout (watches and large lists take longer).
pub fn client() -> awc::Client {
    awc::Client::builder().disable_timeout().finish()
}

/// Sends `method url` with the bearer `token` and the JSON `body`, if any; returns the
/// status and the body parsed as JSON (`null` when it is not JSON).
pub async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let mut res = match body {
        Some(body) => req.send_json(&body).await,
        None => req.send().await,
    }
    .expect("kubegate answers");
    let bytes = res.body().limit(64 << 20).await.expect("a body");
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
