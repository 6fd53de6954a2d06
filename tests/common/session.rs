//! A browser's part of a login, without a browser: a cookie jar that keeps kubegate's
//! session cookie, and the OAuth2 redirect dance through a provider that logs in without
//! a page (tests/common/oidc.rs).

use serde_json::Value;

/// What a browser keeps of kubegate: its session cookie.
#[derive(Clone, Default)]
pub struct Jar {
    /// `name=value` of the session cookie.
    pub cookie: Option<String>,
}

pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Value,
    pub text: String,
    pub set_cookie: Vec<String>,
}

impl Jar {
    /// Sends one request (no redirect followed) with the session cookie, keeps what
    /// the answer sets.
    pub async fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let client = awc::Client::builder()
            .disable_redirects()
            .disable_timeout()
            .finish();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(cookie) = &self.cookie {
            req = req.insert_header(("Cookie", cookie.clone()));
        }
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        let mut res = match body {
            Some(b) => req.send_body(b.to_string()).await,
            None => req.send().await,
        }
        .expect("an answer");
        let bytes = res.body().limit(16 << 20).await.unwrap_or_default();
        let set_cookie: Vec<String> = res
            .headers()
            .get_all("set-cookie")
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        for c in &set_cookie {
            if let Some(pair) = c.split(';').next() {
                if pair.starts_with("kubegate_session=") {
                    let removed = pair == "kubegate_session=" || c.contains("Max-Age=0");
                    self.cookie = (!removed).then(|| pair.to_string());
                }
            }
        }
        Answer {
            status: res.status().as_u16(),
            location: res
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
            set_cookie,
        }
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        self.send("GET", url, &[], None).await
    }
}

/// Logs in with `provider` through the whole redirect dance; returns the jar and where
/// kubegate sent the browser in the end.
pub async fn log_in_at(base: &str, provider: &str, redirect: &str) -> (Jar, Answer) {
    let mut jar = Jar::default();
    let start = jar
        .get(&format!(
            "{}/auth/{provider}/login?redirect={}",
            base,
            percent_encoding::utf8_percent_encode(redirect, percent_encoding::NON_ALPHANUMERIC)
        ))
        .await;
    assert_eq!(start.status, 302, "login start: {}", start.text);
    let at_provider = start.location.expect("to the provider");
    assert!(
        jar.cookie.is_some(),
        "the login state is in a session cookie"
    );
    let mut outside = Jar::default();
    let back = outside.get(&at_provider).await;
    assert_eq!(
        back.status, 302,
        "the provider redirects back: {}",
        back.text
    );
    let callback = back.location.expect("back to kubegate");
    let end = jar.get(&callback).await;
    (jar, end)
}
