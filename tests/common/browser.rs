//! A real headless Chromium for end-to-end tests, driven over the W3C WebDriver protocol
//! through `chromedriver` (Debian `chromium` + `chromium-driver`).
//!
//! The client is a few blocking HTTP/1.1 calls over a `TcpStream` with serde_json: no
//! WebDriver crate. Each [`Browser`] has its own chromedriver on a free port and its own
//! throw-away profile, so tests may run in parallel; both go away on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key WebDriver uses for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::wait_until`] waits.
pub const WAIT: Duration = Duration::from_secs(10);

/// An error answered by chromedriver: the WebDriver `error` code and its message.
#[derive(Debug, Clone)]
pub struct WebDriverError {
    /// `unknown error`, `no such element`, `javascript error`, `timeout`...
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// A cookie as the browser keeps it (HttpOnly cookies included).
#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: String,
    pub domain: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Lax`, `Strict` or `None`, as the browser reports it.
    pub same_site: Option<String>,
    /// Seconds since the epoch; `None` for a session cookie.
    pub expiry: Option<u64>,
}

/// What a `fetch` made from the current page got.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub status: u16,
    pub body: String,
    /// The response's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The URL after redirects.
    pub url: String,
}

impl FetchResponse {
    /// The body parsed as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A headless Chromium session. Quits the session and kills chromedriver on drop.
pub struct Browser {
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| default.into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One blocking HTTP/1.1 exchange with `Connection: close`: `(status, JSON body)`; the
/// body is `null` when it is not JSON. `Err` when the connection fails.
pub fn http_json(
    method: &str,
    url: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, Value)> {
    let rest = url
        .strip_prefix("http://")
        .expect("an http:// URL (no TLS here)");
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if body.is_some() {
        request.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    request.push_str(&payload);
    stream.write_all(request.as_bytes())?;
    // chromedriver says `Connection: close` but keeps the socket open: read by length
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "connection closed before the headers ended",
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < length {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        body.truncate(length);
    } else {
        // no length: the body ends with the connection
        stream.read_to_end(&mut body)?;
        if chunked {
            body = dechunk(&body);
        }
    }
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session
    /// (`/usr/bin/chromium` or `$CHROMIUM`; chromedriver from `/usr/bin/chromedriver` or
    /// `$CHROMEDRIVER`).
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(binary("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (Debian: apt-get install chromium chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut browser = Browser {
            base,
            session: String::new(),
            driver,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http_json(
                "GET",
                &format!("{}/status", browser.base),
                None,
                Duration::from_secs(5),
            )
            .is_ok_and(|(_, v)| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    // kubegate's self-signed certificate (tests that serve HTTPS)
                    "acceptInsecureCerts": true,
                    "timeouts": {"script": 30_000, "pageLoad": 30_000, "implicit": 0},
                    "goog:chromeOptions": {
                        "binary": binary("CHROMIUM", "/usr/bin/chromium"),
                        "args": args,
                        // downloads land in the profile, without asking
                        "prefs": {
                            "download.default_directory": browser._profile.path().join("downloads"),
                            "download.prompt_for_download": false,
                        },
                    }
                }
            }
        });
        let value = browser
            .command("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| panic!("a Chromium session: {e}"));
        browser.session = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    /// Sends one WebDriver command; `path` starts with `/`. Returns the answer's `value`.
    fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        // POST needs a body, even an empty one
        let body = match (method, body) {
            ("POST", None) => Some(json!({})),
            (_, body) => body,
        };
        let (status, mut answer) = http_json(
            method,
            &format!("{}{path}", self.base),
            body.as_ref(),
            Duration::from_secs(120),
        )
        .map_err(|e| WebDriverError {
            error: "chromedriver unreachable".into(),
            message: e.to_string(),
        })?;
        let value = answer["value"].take();
        if status == 200 {
            Ok(value)
        } else {
            Err(WebDriverError {
                error: value["error"].as_str().unwrap_or("unknown").to_string(),
                message: value["message"].as_str().unwrap_or("").to_string(),
            })
        }
    }

    fn session_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url` and waits for the page to load (redirects followed). Panics when the
    /// browser cannot reach it; see [`try_goto`](Self::try_goto).
    pub fn goto(&self, url: &str) {
        if let Err(e) = self.try_goto(url) {
            panic!("the browser could not open {url}: {e}");
        }
    }

    /// Opens `url`; `Err` when navigation fails (for example `net::ERR_CONNECTION_REFUSED`).
    pub fn try_goto(&self, url: &str) -> Result<(), WebDriverError> {
        self.session_command("POST", "/url", Some(json!({ "url": url })))
            .map(|_| ())
    }

    /// The URL of the current page.
    pub fn current_url(&self) -> String {
        self.session_command("GET", "/url", None)
            .expect("the current URL")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The visible text of the page (`document.body.innerText`).
    pub fn page_text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : '';",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The page's HTML as the browser has it now.
    pub fn page_source(&self) -> String {
        self.session_command("GET", "/source", None)
            .expect("the page source")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` (a function body: `return ...`, arguments in `arguments`) in the page.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.try_execute(script, args)
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// [`execute`](Self::execute) that returns the script's error.
    pub fn try_execute(&self, script: &str, args: Vec<Value>) -> Result<Value, WebDriverError> {
        self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs an asynchronous `script`: it ends by calling the callback passed as its last
    /// argument (`arguments[arguments.length - 1]`) with the result (30 s at most).
    pub fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.session_command(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap_or_else(|e| panic!("async script failed: {e}"))
    }

    /// `fetch(url, {method, headers, body, credentials: "include"})` from the current page:
    /// the browser sends its cookies as it would for the page's own scripts. Panics when
    /// fetch itself fails (network error, CORS refusal).
    pub fn fetch(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> FetchResponse {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let result = self.execute_async(
            r#"
            const [url, method, headers, body, done] = arguments;
            const init = { method, headers, credentials: "include" };
            if (body !== null) init.body = body;
            fetch(url, init)
              .then(r => r.text().then(text => done({
                status: r.status, body: text, url: r.url,
                contentType: r.headers.get("content-type") })))
              .catch(e => done({ error: String(e) }));
            "#,
            vec![
                Value::from(url),
                Value::from(method),
                Value::Object(headers),
                body.map(Value::from).unwrap_or(Value::Null),
            ],
        );
        if let Some(error) = result["error"].as_str() {
            panic!("fetch {method} {url} failed in the browser: {error}");
        }
        FetchResponse {
            status: result["status"].as_u64().unwrap_or(0) as u16,
            body: result["body"].as_str().unwrap_or_default().to_string(),
            content_type: result["contentType"].as_str().map(str::to_string),
            url: result["url"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// The cookies of the current page's origin, HttpOnly ones included.
    pub fn cookies(&self) -> Vec<Cookie> {
        let value = self
            .session_command("GET", "/cookie", None)
            .expect("the cookies");
        value
            .as_array()
            .map(|cookies| {
                cookies
                    .iter()
                    .map(|c| Cookie {
                        name: c["name"].as_str().unwrap_or_default().to_string(),
                        value: c["value"].as_str().unwrap_or_default().to_string(),
                        path: c["path"].as_str().unwrap_or_default().to_string(),
                        domain: c["domain"].as_str().unwrap_or_default().to_string(),
                        http_only: c["httpOnly"].as_bool().unwrap_or(false),
                        secure: c["secure"].as_bool().unwrap_or(false),
                        same_site: c["sameSite"].as_str().map(str::to_string),
                        expiry: c["expiry"].as_u64(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cookie `name` of the current page's origin.
    pub fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().into_iter().find(|c| c.name == name)
    }

    /// Forgets every cookie of the current page's origin.
    pub fn delete_all_cookies(&self) {
        self.session_command("DELETE", "/cookie", None)
            .expect("cookies deleted");
    }

    /// The first element matching the CSS selector, if any.
    pub fn try_find_css(&self, selector: &str) -> Option<Element<'_>> {
        let value = self
            .session_command(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .ok()?;
        let id = value[ELEMENT_KEY].as_str()?.to_string();
        Some(Element { browser: self, id })
    }

    /// The first element matching the CSS selector; panics when there is none.
    pub fn find_css(&self, selector: &str) -> Element<'_> {
        self.try_find_css(selector).unwrap_or_else(|| {
            panic!(
                "no element {selector} on {}: {}",
                self.current_url(),
                self.page_text()
            )
        })
    }

    /// Calls `check` every 50 ms until it returns `Some`, for up to [`WAIT`]; panics with
    /// `what`, the URL and the page text when it never does.
    pub fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {WAIT:?} for {what}; the browser is at {} showing: {}",
                    self.current_url(),
                    self.page_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the browser saves downloads (a folder of its profile).
    pub fn downloads(&self) -> std::path::PathBuf {
        self._profile.path().join("downloads")
    }

    /// Saves a PNG of the visible page at `path` (its folder is made).
    pub fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let value = self
            .session_command("GET", "/screenshot", None)
            .unwrap_or_else(|e| panic!("a screenshot: {e}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("a screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot's folder");
        }
        std::fs::write(path, png).expect("the screenshot is written");
    }

    /// Ends the session and chromedriver (also done on drop).
    fn quit(&mut self) {
        if !self.session.is_empty() {
            let _ = self.command("DELETE", &format!("/session/{}", self.session), None);
            self.session.clear();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.quit();
    }
}

impl Element<'_> {
    /// Types `text` into the element.
    pub fn send_keys(&self, text: &str) -> &Self {
        self.browser
            .session_command(
                "POST",
                &format!("/element/{}/value", self.id),
                Some(json!({ "text": text })),
            )
            .unwrap_or_else(|e| panic!("typing into the element: {e}"));
        self
    }

    /// Clears an input or textarea.
    pub fn clear(&self) -> &Self {
        self.browser
            .session_command("POST", &format!("/element/{}/clear", self.id), None)
            .unwrap_or_else(|e| panic!("clearing the element: {e}"));
        self
    }

    /// Clicks the element (a submit button navigates; use [`Browser::wait_until`] after).
    pub fn click(&self) {
        self.browser
            .session_command("POST", &format!("/element/{}/click", self.id), None)
            .unwrap_or_else(|e| panic!("clicking the element: {e}"));
    }

    /// The element's visible text.
    pub fn text(&self) -> String {
        self.browser
            .session_command("GET", &format!("/element/{}/text", self.id), None)
            .expect("the element's text")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element's attribute `name` (or its property of that name).
    pub fn attribute(&self, name: &str) -> Option<String> {
        self.browser
            .session_command(
                "GET",
                &format!("/element/{}/attribute/{name}", self.id),
                None,
            )
            .ok()?
            .as_str()
            .map(str::to_string)
    }
}
