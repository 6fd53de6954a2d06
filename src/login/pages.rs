//! The pages of browser login: the login links of `/`, the LDAP form, and how both are
//! written (escaped, never framed, no script).

use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::LoginState;

pub fn escape(text: &str) -> String {
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

/// The page of `/` for someone not logged in: the login links (those logged in get the
/// console, which the server assembly serves).
pub fn login_links(state: &LoginState) -> HttpResponse {
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
