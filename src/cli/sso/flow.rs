//! The two ways to log in: in a browser (authorization code with PKCE and a loopback
//! redirect, RFC 7636 and RFC 8252), and, with `--no-browser`, on any device (the device
//! authorization grant, RFC 8628).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::client::{encode, SsoClient, TokenAnswer, TokenResult};
use super::SsoError;

/// How long the browser login waits for the browser to come back.
pub const BROWSER_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The largest request head the loopback server reads.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// 32 random bytes, base64url without padding (43 characters).
pub fn random_token() -> Result<String, SsoError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SsoError::Login("the system's random number generator failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The PKCE S256 challenge of `verifier`: BASE64URL-NOPAD(SHA256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// The name the login is known by on the server: `kubegate on {hostname}`.
pub fn client_name() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "an unnamed computer".into());
    format!("kubegate on {host}")
}

/// One program to open a URL with, and its arguments (the URL among them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserCommand {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The commands to try, in order, to open `url`: those of `$BROWSER` (a colon-separated
/// list; in each, `%s` stands for the URL, else the URL comes last), else `xdg-open`,
/// then `open`.
pub fn browser_commands(browser_env: Option<&str>, url: &str) -> Vec<BrowserCommand> {
    let entries: Vec<&str> = match browser_env.map(str::trim).filter(|b| !b.is_empty()) {
        Some(list) => list.split(':').collect(),
        None => vec!["xdg-open", "open"],
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let mut words = entry.split_whitespace();
            let program = words.next()?.to_string();
            let mut args: Vec<String> = words.map(str::to_string).collect();
            let has_placeholder = args.iter().any(|a| a.contains("%s"));
            if has_placeholder {
                for a in &mut args {
                    *a = a.replace("%s", url);
                }
            } else {
                args.push(url.to_string());
            }
            Some(BrowserCommand { program, args })
        })
        .collect()
}

/// Opens `url` in a browser (not waiting for it); says so on standard error, with the
/// URL to open by hand.
pub fn open_browser(url: &str) {
    eprintln!("Opening the browser to log in; if it does not open, visit: {url}");
    let browser = std::env::var("BROWSER").ok();
    for command in browser_commands(browser.as_deref(), url) {
        let started = std::process::Command::new(&command.program)
            .args(&command.args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if started.is_ok() {
            // not waited for: the browser may outlive kubegate
            return;
        }
    }
}

/// The small local HTTP server the browser is sent back to.
pub struct LoopbackServer {
    listener: TcpListener,
    port: u16,
}

impl LoopbackServer {
    /// Listens on `127.0.0.1` on a port the system picks.
    pub async fn bind() -> Result<Self, SsoError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
            SsoError::Login(format!(
                "cannot listen on 127.0.0.1 for the browser's answer: {e}"
            ))
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| SsoError::Login(format!("cannot read the loopback port: {e}")))?
            .port();
        Ok(Self { listener, port })
    }

    /// The redirect URI: `http://127.0.0.1:PORT/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Waits up to `timeout` for `GET /callback?code=...&state=...` with this `state`
    /// and returns the code. Other paths get a 404 and the wait goes on; an answer with
    /// another state, or an error answer, ends the login with an error.
    pub async fn wait_for_code(&self, state: &str, timeout: Duration) -> Result<String, SsoError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let accepted = tokio::time::timeout_at(deadline, self.listener.accept()).await;
            let (stream, _) = match accepted {
                Err(_) => {
                    return Err(SsoError::Login(format!(
                        "no answer from the browser within {}; run the login again (or use --no-browser)",
                        humantime::format_duration(timeout)
                    )))
                }
                Ok(Err(e)) => {
                    return Err(SsoError::Login(format!("the loopback server failed: {e}")))
                }
                Ok(Ok(accepted)) => accepted,
            };
            if let Some(outcome) = handle_callback(stream, state).await {
                return outcome;
            }
        }
    }
}

/// Answers one connection to the loopback server; `Some` when the login is decided.
async fn handle_callback(mut stream: TcpStream, state: &str) -> Option<Result<String, SsoError>> {
    let head = match tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return None,
    };
    let target = head.split("\r\n").next().and_then(|line| {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next()) {
            (Some("GET"), Some(target)) => Some(target.to_string()),
            _ => None,
        }
    });
    let Some(target) = target else {
        respond(
            &mut stream,
            400,
            "Bad request",
            "kubegate expected a GET request here.",
        )
        .await;
        return None;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path != "/callback" {
        respond(
            &mut stream,
            404,
            "Not found",
            "This is not the page kubegate waits for.",
        )
        .await;
        return None;
    }
    let params = parse_query(query);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if param("state") != Some(state) {
        respond(
            &mut stream,
            400,
            "Login failed",
            "The login answer does not belong to this login. Run kubegate login again.",
        )
        .await;
        return Some(Err(SsoError::Login(
            "the login answer does not belong to this login (state mismatch)".into(),
        )));
    }
    if let Some(error) = param("error") {
        let description = param("error_description").unwrap_or("");
        respond(
            &mut stream,
            403,
            "Login failed",
            &format!("The login failed: {error}. {description}"),
        )
        .await;
        return Some(Err(SsoError::Refused {
            error: error.to_string(),
            description: description.to_string(),
        }));
    }
    match param("code").filter(|c| !c.is_empty()) {
        Some(code) => {
            respond(
                &mut stream,
                200,
                "Logged in",
                "Logged in to kubegate; you can close this tab.",
            )
            .await;
            Some(Ok(code.to_string()))
        }
        None => {
            respond(&mut stream, 400, "Login failed", "The answer has no code.").await;
            None
        }
    }
}

/// Reads a request head (up to the blank line, at most [`MAX_REQUEST_HEAD`] bytes).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() >= MAX_REQUEST_HEAD {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n.min(MAX_REQUEST_HEAD - buf.len())]);
    }
    String::from_utf8(buf).ok()
}

/// The pairs of a query string, percent- and `+`-decoded.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Escapes text for HTML.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes a small HTML page and closes the connection.
async fn respond(stream: &mut TcpStream, status: u16, title: &str, message: &str) {
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kubegate: {}</title></head><body><p>{}</p></body></html>\n",
        html_escape(title),
        html_escape(message)
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Logs in with the browser: opens the server's authorize page, waits for the loopback
/// answer, and exchanges the code.
pub async fn browser_login(
    client: &SsoClient,
    provider: Option<&str>,
) -> Result<TokenAnswer, SsoError> {
    let loopback = LoopbackServer::bind().await?;
    let redirect_uri = loopback.redirect_uri();
    let state = random_token()?;
    let verifier = random_token()?;
    let name = client_name();
    let mut url = format!(
        "{}?redirect_uri={}&state={}&code_challenge={}&code_challenge_method=S256&client={}",
        client.url("/auth/cli/authorize"),
        encode(&redirect_uri),
        encode(&state),
        encode(&pkce_challenge(&verifier)),
        encode(&name),
    );
    if let Some(p) = provider {
        url.push_str(&format!("&provider={}", encode(p)));
    }
    open_browser(&url);
    let code = loopback
        .wait_for_code(&state, BROWSER_LOGIN_TIMEOUT)
        .await?;
    client
        .token_issued(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", &redirect_uri),
            ("client", &name),
        ])
        .await
}

/// Logs in with the device flow: shows the code to confirm and polls until it is.
pub async fn device_login(
    client: &SsoClient,
    provider: Option<&str>,
) -> Result<TokenAnswer, SsoError> {
    let name = client_name();
    let device = client.device(&name, provider).await?;
    eprintln!(
        "To log in, open {} on any device and confirm the code {}",
        device.verification_uri, device.user_code
    );
    if let Some(complete) = &device.verification_uri_complete {
        // the URL alone on its line (no punctuation after it), for people and scripts
        eprintln!("or open this URL, which has the code filled in:\n{complete}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(device.expires_in);
    let mut interval = Duration::from_secs(device.interval.max(1));
    loop {
        if tokio::time::Instant::now() + interval > deadline {
            return Err(SsoError::Login(format!(
                "the code {} was not confirmed within {}; run the login again",
                device.user_code,
                humantime::format_duration(Duration::from_secs(device.expires_in))
            )));
        }
        tokio::time::sleep(interval).await;
        let answer = client
            .token(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device.device_code),
                ("client", &name),
            ])
            .await?;
        match answer {
            TokenResult::Issued(tokens) => return Ok(tokens),
            TokenResult::RateLimited(wait) => interval = interval.max(wait),
            TokenResult::Refused { error, .. } => match error.error.as_str() {
                "authorization_pending" => {}
                "slow_down" => interval += Duration::from_secs(5),
                _ => {
                    return Err(SsoError::Refused {
                        error: error.error,
                        description: error.error_description,
                    })
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 7636 appendix B, as the RFC prints it (the brief of issue 14
    /// had a verifier and a challenge that do not belong together).
    #[test]
    fn pkce_challenge_of_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn random_tokens_are_43_characters_and_differ() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn browser_variable_takes_placeholders_or_appends_the_url() {
        let url = "https://kg/auth?x=1";
        assert_eq!(
            browser_commands(Some("firefox --new-tab %s:lynx"), url),
            vec![
                BrowserCommand {
                    program: "firefox".into(),
                    args: vec!["--new-tab".into(), url.into()]
                },
                BrowserCommand {
                    program: "lynx".into(),
                    args: vec![url.into()]
                },
            ]
        );
        let defaults = browser_commands(None, url);
        assert_eq!(defaults[0].program, "xdg-open");
        assert_eq!(defaults[1].program, "open");
        assert_eq!(defaults[1].args, vec![url.to_string()]);
        assert_eq!(browser_commands(Some("  "), url).len(), 2);
    }

    #[test]
    fn queries_are_decoded() {
        assert_eq!(
            parse_query("code=a%2Fb&state=x+y&error_description=no%20way"),
            vec![
                ("code".to_string(), "a/b".to_string()),
                ("state".to_string(), "x y".to_string()),
                ("error_description".to_string(), "no way".to_string()),
            ]
        );
    }

    /// Sends `GET target` to the loopback server; the status line and the body.
    async fn get(port: u16, target: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn loopback_ignores_other_paths_then_takes_the_code() {
        rt().block_on(async {
            let server = LoopbackServer::bind().await.unwrap();
            let port = server.port;
            assert_eq!(
                server.redirect_uri(),
                format!("http://127.0.0.1:{port}/callback")
            );
            let browser = tokio::spawn(async move {
                let other = get(port, "/favicon.ico").await;
                assert!(other.starts_with("HTTP/1.1 404"), "{other}");
                let ok = get(port, "/callback?code=C0DE&state=S1").await;
                assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
                assert!(ok.contains("Logged in to kubegate; you can close this tab."));
            });
            let code = server
                .wait_for_code("S1", Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(code, "C0DE");
            browser.await.unwrap();
        });
    }

    #[test]
    fn loopback_refuses_another_state_and_reports_errors() {
        rt().block_on(async {
            let server = LoopbackServer::bind().await.unwrap();
            let port = server.port;
            let browser = tokio::spawn(async move { get(port, "/callback?code=C&state=other").await });
            let e = server.wait_for_code("S1", Duration::from_secs(10)).await.unwrap_err();
            assert_eq!(
                e.to_string(),
                "the login did not finish: the login answer does not belong to this login (state mismatch)"
            );
            assert!(browser.await.unwrap().starts_with("HTTP/1.1 400"));

            let browser = tokio::spawn(async move {
                get(port, "/callback?error=access_denied&error_description=not+allowed&state=S2").await
            });
            let e = server.wait_for_code("S2", Duration::from_secs(10)).await.unwrap_err();
            assert!(e.to_string().contains("access_denied (not allowed)"), "{e}");
            assert!(browser.await.unwrap().contains("not allowed"));

            let e = server
                .wait_for_code("S3", Duration::from_millis(50))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("no answer from the browser"), "{e}");
        });
    }
}
