//! A stand-in for the kubegate server's SSO endpoints (the client's side of issue 14):
//! `/auth/cli/authorize` (answers the redirect at once, as if the user had logged in),
//! `/auth/cli/token` (the code with PKCE, the device code, refresh tokens that rotate),
//! `/auth/cli/device`, `/auth/session` and `/pipeline/api/v1/kubeconfig`; and a counting
//! HTTP forward proxy. Both run on port 0 in their own threads.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;

/// What the stand-in knows and has seen.
#[derive(Default)]
pub struct SsoState {
    /// Valid access tokens.
    pub access: HashSet<String>,
    /// Valid refresh tokens (each good once).
    pub refresh: HashSet<String>,
    /// Codes handed out by authorize: code -> (challenge, redirect_uri).
    pub codes: HashMap<String, (String, String)>,
    /// The device flow's answers before it succeeds (`authorization_pending`, ...).
    pub device_script: VecDeque<String>,
    /// When each device-code poll came.
    pub device_polls: Vec<Instant>,
    /// Every form the token endpoint got.
    pub token_forms: Vec<HashMap<String, String>>,
    /// Every query the authorize endpoint got.
    pub authorize_queries: Vec<HashMap<String, String>>,
    /// Session checks seen.
    pub session_checks: usize,
    /// Queries of the kubeconfig endpoint.
    pub kubeconfig_queries: Vec<String>,
    /// The bearer tokens the API server proxy's stand-in got.
    pub proxied_tokens: Vec<String>,
    /// The base URL the kubeconfig's plugin is told (`server.public_url`), else the
    /// request's scheme and host.
    pub public_url: Option<String>,
    /// Lifetime of new access tokens, seconds.
    pub expires_in: u64,
    issued: usize,
}

/// The running stand-in.
pub struct SsoServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Its state, to look at and change.
    pub state: Arc<Mutex<SsoState>>,
}

/// The user every login gives.
pub const USER: &str = "ldap:alice";

fn issue(state: &mut SsoState) -> HttpResponse {
    state.issued += 1;
    let access = format!("access-{}", state.issued);
    let refresh = format!("refresh-{}", state.issued);
    state.access.insert(access.clone());
    state.refresh.insert(refresh.clone());
    HttpResponse::Ok().json(serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": state.expires_in,
        "expires_at": "2026-12-05T23:15:00Z",
        "refresh_token": refresh,
        "refresh_expires_at": "2026-12-06T11:00:00Z",
        "user": USER,
        "session": "SID",
    }))
}

fn oauth_error(error: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({
        "error": error,
        "error_description": format!("the stand-in says {error}"),
        "code": 400,
        "message": error,
    }))
}

fn bearer(req: &HttpRequest) -> String {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string()
}

type Shared = web::Data<Arc<Mutex<SsoState>>>;

async fn authorize(state: Shared, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    let mut s = state.lock().unwrap();
    s.authorize_queries.push(query.0.clone());
    let code = format!("code-{}", s.codes.len() + 1);
    let redirect = query.get("redirect_uri").cloned().unwrap_or_default();
    s.codes.insert(
        code.clone(),
        (
            query.get("code_challenge").cloned().unwrap_or_default(),
            redirect.clone(),
        ),
    );
    let location = format!(
        "{redirect}?code={code}&state={}",
        query.get("state").cloned().unwrap_or_default()
    );
    HttpResponse::Found()
        .insert_header(("location", location))
        .finish()
}

async fn token(state: Shared, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let mut s = state.lock().unwrap();
    let form = form.0;
    s.token_forms.push(form.clone());
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    match field("grant_type").as_str() {
        "authorization_code" => {
            let Some((challenge, redirect)) = s.codes.remove(&field("code")) else {
                return oauth_error("invalid_grant");
            };
            let digest =
                ring::digest::digest(&ring::digest::SHA256, field("code_verifier").as_bytes());
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
            if computed != challenge || redirect != field("redirect_uri") {
                return oauth_error("invalid_grant");
            }
            issue(&mut s)
        }
        "urn:ietf:params:oauth:grant-type:device_code" => {
            s.device_polls.push(Instant::now());
            if field("device_code") != "DEVICE" {
                return oauth_error("invalid_grant");
            }
            match s.device_script.pop_front() {
                Some(error) => oauth_error(&error),
                None => issue(&mut s),
            }
        }
        "refresh_token" => {
            if !s.refresh.remove(&field("refresh_token")) {
                return oauth_error("invalid_grant");
            }
            issue(&mut s)
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}

async fn device(req: HttpRequest) -> HttpResponse {
    let info = req.connection_info();
    let base = format!("{}://{}", info.scheme(), info.host());
    HttpResponse::Ok().json(serde_json::json!({
        "device_code": "DEVICE",
        "user_code": "BCDF-GHJK",
        "verification_uri": format!("{base}/auth/cli/device/verify"),
        "verification_uri_complete": format!("{base}/auth/cli/device/verify?user_code=BCDF-GHJK"),
        "expires_in": 60,
        "interval": 1,
    }))
}

async fn session(state: Shared, req: HttpRequest) -> HttpResponse {
    let mut s = state.lock().unwrap();
    s.session_checks += 1;
    if s.access.contains(&bearer(&req)) {
        HttpResponse::Ok().json(serde_json::json!({ "user": USER }))
    } else {
        HttpResponse::Unauthorized()
            .json(serde_json::json!({ "code": 401, "message": "no session" }))
    }
}

/// One provider, as kubegate lists them.
async fn providers() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!([
        {"name": "dex", "kind": "oidc", "login": "/auth/dex/login"}
    ]))
}

async fn kubeconfig(state: Shared, req: HttpRequest) -> HttpResponse {
    let mut s = state.lock().unwrap();
    s.kubeconfig_queries.push(req.query_string().to_string());
    if !s.access.contains(&bearer(&req)) {
        return HttpResponse::Unauthorized().finish();
    }
    let host = req.connection_info().host().to_string();
    let server = s
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{}://{host}", req.connection_info().scheme()));
    let yaml = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: kubegate-1-dev
  cluster:
    server: {server}/pipeline/api/v1/orgs/1/clusters/3/proxy
- name: kubegate-1-prod
  cluster:
    server: {server}/pipeline/api/v1/orgs/1/clusters/4/proxy
contexts:
- name: kubegate-1-dev
  context: {{cluster: kubegate-1-dev, user: kubegate@{host}}}
- name: kubegate-1-prod
  context: {{cluster: kubegate-1-prod, user: kubegate@{host}}}
users:
- name: kubegate@{host}
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: kubegate
      args: [credential, --server, {server}]
      interactiveMode: IfAvailable
      provideClusterInfo: true
current-context: kubegate-1-dev
"#
    );
    HttpResponse::Ok()
        .content_type("application/yaml")
        .body(yaml)
}

/// The API server proxy's stand-in: `GET .../proxy/version` with a good access token
/// gets a version (what `kubectl version` asks); the tokens seen are kept.
async fn proxied(state: Shared, req: HttpRequest) -> HttpResponse {
    let mut s = state.lock().unwrap();
    let token = bearer(&req);
    s.proxied_tokens.push(token.clone());
    if !s.access.contains(&token) {
        return HttpResponse::Unauthorized().json(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401, "reason": "Unauthorized"
        }));
    }
    if req.match_info().get("tail") != Some("version") {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::Ok().json(serde_json::json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-kubegate-stand-in",
        "platform": "linux/amd64"
    }))
}

impl SsoServer {
    /// Starts the stand-in on 127.0.0.1, port 0, over plain HTTP.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts the stand-in on 127.0.0.1, port 0, over HTTPS with `tls`.
    pub fn start_tls(tls: rustls::ServerConfig) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(SsoState {
            expires_in: 900,
            ..Default::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(shared.clone()))
                        .route("/auth/cli/authorize", web::get().to(authorize))
                        .route("/auth/cli/token", web::post().to(token))
                        .route("/auth/cli/device", web::post().to(device))
                        .route("/auth/session", web::get().to(session))
                        .route("/auth/providers", web::get().to(providers))
                        .route("/pipeline/api/v1/kubeconfig", web::get().to(kubeconfig))
                        .route(
                            "/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy/{tail:.*}",
                            web::get().to(proxied),
                        )
                })
                .workers(1)
                .disable_signals();
                let server = match tls {
                    Some(tls) => server.listen_rustls_0_23(listener, tls),
                    None => server.listen(listener),
                };
                server
                    .expect("listen")
                    .run()
                    .await
                    .expect("the SSO stand-in stopped")
            })
        });
        Self { url, state }
    }

    /// Ends every session: no access or refresh token is good any more.
    pub fn revoke_all(&self) {
        let mut s = self.state.lock().unwrap();
        s.access.clear();
        s.refresh.clear();
    }

    /// Makes the access tokens bad (as when they expired), keeping refresh tokens.
    pub fn expire_access(&self) {
        self.state.lock().unwrap().access.clear();
    }
}

/// A plain `GET` with `std`, for the test's "browser": the status and the headers and
/// body as text.
pub fn http_get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The value of header `name` in a raw answer.
pub fn header(answer: &str, name: &str) -> Option<String> {
    answer.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// An HTTP forward proxy that records the first request line of each connection and
/// passes the bytes on to the origin named in it.
pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The first request line of each connection.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    /// Starts the proxy on 127.0.0.1, port 0.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || forward(client, &seen));
            }
        });
        Self { url, requests }
    }
}

fn forward(mut client: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let line = text.lines().next().unwrap_or("").to_string();
    seen.lock().unwrap().push(line.clone());
    // `GET http://host:port/path HTTP/1.1` (forward) or `CONNECT host:port HTTP/1.1`
    let target = line.split(' ').nth(1).unwrap_or("");
    let connect = line.starts_with("CONNECT ");
    let authority = if connect {
        target.to_string()
    } else {
        target
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
            .to_string()
    };
    let Ok(mut origin) = TcpStream::connect(&authority) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if connect {
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    } else {
        let _ = origin.write_all(&head);
    }
    let (mut c2, mut o2) = (client.try_clone().unwrap(), origin.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut o2);
        let _ = o2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut origin, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
