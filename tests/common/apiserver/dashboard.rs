//! The Kubernetes dashboard behind the stand-in's service proxy:
//! `/api/v1/namespaces/kube-system/services/{https:kubernetes-dashboard:|kubernetes-dashboard}/proxy/...`.
//!
//! It answers as kube-apiserver v1.32 does in front of the dashboard: a path that ends
//! at `/proxy` is redirected (301) to `/proxy/`; the page links its stylesheet and script
//! with relative URLs (as the dashboard does), and the script calls the dashboard's API
//! with a relative URL too. One link and one redirect are absolute paths starting with
//! the service proxy path: that is what kube-apiserver's own rewriting of a backend's
//! absolute links (`href="/#/workloads"`, `Location: /#/login`) produces, and what a
//! gateway in front of the API server has to fix. The same page also comes gzip-encoded
//! (`.../proxy/gzip/`) and padded to a given size (`.../proxy/padded/{bytes}`).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// The dashboard's page, as the service proxy at `base` sends it: relative links, and one
/// absolute path that starts with `base`.
pub fn page(base: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Kubernetes Dashboard</title>
  <link rel="stylesheet" href="styles.css">
  <script src="main.js" defer></script>
</head>
<body>
  <nav><a href="{base}/#/workloads">Workloads</a> <a href='#/login'>Log in</a> <a href="https://kubernetes.io/docs/">Docs</a></nav>
  <main id="status">loading</main>
</body>
</html>
"#
    )
}

/// [`page`], gzip-encoded (`/gzip/`).
pub fn gzipped_page(base: &str) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(page(base).as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// [`page`] padded with a comment to exactly `size` bytes (`/padded/{size}`), or
/// as it is when it is longer.
pub fn padded_page(base: &str, size: usize) -> String {
    let page = page(base);
    match size.checked_sub(page.len() + "<!---->\n".len()) {
        Some(spaces) => format!("{page}<!--{}-->\n", " ".repeat(spaces)),
        None => page,
    }
}

const NAMES: [&str; 2] = ["https:kubernetes-dashboard:", "kubernetes-dashboard"];

/// The dashboard's answer, if `path` is its service proxy path.
pub(super) fn serve(req: &HttpRequest, path: &str) -> Option<HttpResponse> {
    let rest = path.strip_prefix("/api/v1/namespaces/kube-system/services/")?;
    let (service, rest) = rest.split_once("/proxy")?;
    if !NAMES.contains(&service) || !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let base = format!("/api/v1/namespaces/kube-system/services/{service}/proxy");
    let answer = match rest {
        "" => {
            let mut location = format!("{path}/");
            if let Some(query) = req.uri().query() {
                location.push('?');
                location.push_str(query);
            }
            HttpResponse::MovedPermanently()
                .insert_header((header::LOCATION, location))
                .finish()
        }
        "/" | "/index.html" => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(page(&base)),
        // the same page, gzip-encoded, as a dashboard behind a compressing proxy sends it
        "/gzip/" => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(gzipped_page(&base)),
        // the page padded to exactly N bytes: `/padded/N`
        _ if rest.starts_with("/padded/") => {
            match rest["/padded/".len()..].parse::<usize>() {
                Ok(size) => HttpResponse::Ok()
                    .content_type("text/html; charset=utf-8")
                    .body(padded_page(&base, size)),
                Err(_) => HttpResponse::NotFound()
                    .content_type("text/plain")
                    .body("404 page not found\n"),
            }
        }
        "/styles.css" => HttpResponse::Ok()
            .content_type("text/css")
            .body("body { font-family: Roboto, sans-serif; }\n"),
        "/main.js" => HttpResponse::Ok()
            .content_type("application/javascript")
            .body(
                "fetch('api/v1/login/status').then(r => r.json()).then(s => {\n  document.getElementById('status').textContent = 'dashboard ' + s.version;\n});\n",
            ),
        "/api/v1/login/status" => HttpResponse::Ok().content_type("application/json").body(
            r#"{"tokenPresent":false,"headerPresent":false,"httpsMode":true,"impersonationPresent":false,"version":"v2.7.0"}"#,
        ),
        "/logout" => HttpResponse::Found()
            .insert_header((header::LOCATION, format!("{base}/#/login")))
            .finish(),
        _ => HttpResponse::NotFound()
            .content_type("text/plain")
            .body("404 page not found\n"),
    };
    Some(answer)
}
