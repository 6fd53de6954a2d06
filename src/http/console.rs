//! The console at `/`: pages for people over the documented REST API (clusters, members,
//! tokens, the audit trail, the policy), written in plain HTML, CSS and JavaScript
//! modules embedded in the binary (`src/http/console/`; no build step) and served with a
//! strict Content-Security-Policy: scripts and styles from kubegate's origin only,
//! nothing inline, no `eval`, no other origin.
//!
//! The console holds no privilege of its own: it calls the same routes as curl with the
//! session cookie, and its writes carry the session's CSRF token (`csrfToken` of
//! `GET /auth/session`) in `X-CSRF-Token`. Someone not logged in gets the login links.

use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::{ApiError, ApiErrorBody};
use crate::gate::Gate;
use crate::login::pages::{escape, login_links};
use crate::login::LoginState;

/// The Content-Security-Policy of the console's page and files.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Where the console's files are served.
pub const FILES_PATH: &str = "/console/";

const INDEX: &str = include_str!("console/index.html");

/// The console's files: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
];

fn hardened(status: StatusCode) -> actix_web::HttpResponseBuilder {
    let mut answer = HttpResponse::build(status);
    answer
        .insert_header(("Content-Security-Policy", CONSOLE_CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "same-origin"));
    answer
}

/// `GET /`: the console for someone logged in (a browser page), else the login links.
#[utoipa::path(
    get,
    path = "/",
    tag = "login",
    operation_id = "landing",
    responses((status = 200, description = "The console, or the login links", content_type = "text/html", body = String)),
    security(()),
)]
pub(crate) async fn landing(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let user = gate
        .authenticate(&req)
        .ok()
        .and_then(|identity| identity.session);
    match user {
        Some(user) => hardened(StatusCode::OK)
            .content_type(ContentType::html())
            .insert_header(("Cache-Control", "no-store"))
            .body(INDEX.replace("{{user}}", &escape(&user.user))),
        None => login_links(&state),
    }
}

/// A script or style of the console (a file of the page `/`).
#[utoipa::path(
    get,
    path = "/console/{file}",
    tag = "login",
    operation_id = "consoleFile",
    params(("file" = String, Path, description = "A file of the console (`console.js`, `console.css`)")),
    responses(
        (status = 200, description = "The file (JavaScript or CSS)", content_type = "text/javascript", body = String),
        (status = 404, description = "No such file", body = ApiErrorBody),
    ),
    security(()),
)]
pub(crate) async fn file(req: HttpRequest) -> HttpResponse {
    let name = req.match_info().get("file").unwrap_or_default();
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, content)) => hardened(StatusCode::OK)
            .content_type(*content_type)
            .insert_header(("Cache-Control", "no-cache"))
            .body(*content),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the console has no file \"{name}\"; the console is at /"),
        )
        .response(),
    }
}
