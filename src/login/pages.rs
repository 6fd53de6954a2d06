//! The pages of browser login: the landing page, the LDAP form, and how both are
//! written (escaped, never framed, no script).

use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::LoginState;
use crate::gate::Gate;

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(super) fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(ContentType::html())
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} - kubegate</title>\
             <style>body{{font-family:sans-serif;max-width:40em;margin:3em auto}}</style></head>\
             <body><h1>{t}</h1>{body}</body></html>",
            t = escape(title)
        ))
}

pub(super) fn ldap_page(
    provider: &str,
    token: &str,
    redirect: &str,
    error: Option<&str>,
) -> HttpResponse {
    let error = error
        .map(|e| format!("<p role=\"alert\" style=\"color:#b00\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        if error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        },
        "Log in to kubegate",
        &format!(
            "{error}<form method=\"post\" action=\"/auth/{p}/login\">\
             <input type=\"hidden\" name=\"state\" value=\"{t}\">\
             <input type=\"hidden\" name=\"redirect\" value=\"{r}\">\
             <p><label>User name <input id=\"username\" name=\"username\" autocomplete=\"username\" required></label></p>\
             <p><label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
             <p><button id=\"login\" type=\"submit\">Log in</button></p></form>",
            p = escape(provider),
            t = escape(token),
            r = escape(redirect),
        ),
    )
}

/// `GET /`: who is logged in, with a token link and a logout button; or the login links
/// (a browser page).
#[utoipa::path(
    get,
    path = "/",
    tag = "login",
    operation_id = "landing",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
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
        Some(user) => page(
            StatusCode::OK,
            "kubegate",
            &format!(
                "<p>Logged in as <b id=\"user\">{u}</b> with {p}.</p>\
                 <p><a href=\"/pipeline/api/v1/token\">Create an API token</a> for kubectl and curl.</p>\
                 <form method=\"post\" action=\"/auth/logout\"><button id=\"logout\">Log out</button></form>",
                u = escape(&user.user),
                p = escape(&user.provider)
            ),
        ),
        None => {
            let links: String = state
                .login
                .names()
                .iter()
                .map(|(name, kind)| {
                    format!(
                        "<li><a href=\"/auth/{n}/login\">Log in with {n}</a> ({kind})</li>",
                        n = escape(name)
                    )
                })
                .collect();
            let body = if links.is_empty() {
                "<p>No login provider is configured; use an API token \
                 (<code>kubegate token create</code>).</p>"
                    .to_string()
            } else {
                format!("<ul>{links}</ul>")
            };
            page(StatusCode::OK, "kubegate", &body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<script>\"x\"&'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;&lt;/script&gt;"
        );
    }
}
