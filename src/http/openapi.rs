//! The routes of the router and the OpenAPI 3.1 document that describes them, from one
//! table ([`route_table!`]): each entry names a handler whose `#[utoipa::path]` says its
//! method, path, parameters, bodies and answers; the handler is registered at that
//! method and path, and the same attribute goes into the document. A route cannot be
//! served without being described, nor described without being served.
//!
//! - `GET /pipeline/api/v1/openapi.json`: the document (public, `Cache-Control:
//!   no-cache`).
//! - `GET /pipeline/api/v1/docs/`: a reference page rendered from it (Swagger UI, its
//!   files embedded in the binary; `/pipeline/api/v1/docs` redirects there).
//!
//! The proxy route is served by the `front` middleware, before the router: it is in the
//! document ([`proxy_route!`]) but not in the table.

use std::sync::{Arc, LazyLock};

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use utoipa::openapi::path::PathItem;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

use crate::api::ApiErrorBody;
use crate::status::KubernetesStatus;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/pipeline/api/v1/openapi.json";

/// Where the reference page is served (its files below it).
pub const DOCS_PATH: &str = "/pipeline/api/v1/docs/";

/// The Content-Security-Policy of the reference page: Swagger UI's own files and the
/// document, from kubegate's origin only (its icons are inline `data:` SVGs).
pub const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'none'";

/// The one table of the router's routes, in the order they are registered: each entry
/// is a handler with a `#[utoipa::path]`. Expands to [`table`], which gives each entry's
/// document (one path, one method) with a function that registers the handler.
macro_rules! route_table {
    ($($($segment:ident)::+),* $(,)?) => {
        /// Every route of the router: its document (one path, one method) and what
        /// registers its handler at a path and method.
        pub fn table() -> Vec<(Document, Register)> {
            vec![$({
                #[derive(OpenApi)]
                #[openapi(paths($($segment)::+))]
                struct One;
                let register: Register = |cfg, path, method| {
                    cfg.route(path, web::method(method).to($($segment)::+));
                };
                (One::openapi(), register)
            }),*]
        }
    };
}

/// Registers a handler at a path and method.
pub type Register = fn(&mut web::ServiceConfig, &str, Method);

route_table![
    crate::http::health::healthz,
    crate::http::health::readyz,
    crate::http::health::metrics,
    crate::http::openapi::document,
    crate::http::openapi::docs_redirect,
    crate::http::openapi::docs_page,
    crate::http::openapi::docs_file,
    crate::api::clusters::create,
    crate::api::clusters::list,
    crate::api::clusters::get,
    crate::api::clusters::update,
    crate::api::clusters::delete,
    crate::api::clusters::kubeconfig_for_caller,
    crate::api::cluster_status::status,
    crate::api::members::list_members,
    crate::api::members::set_member,
    crate::api::members::remove_member,
    crate::api::orgs::my_orgs,
    crate::api::policy::current,
    crate::api::policy::reload,
    crate::api::audit::list,
    crate::api::audit::histogram,
    crate::api::sessions::get,
    crate::api::kubeconfig::for_caller,
    crate::api::tokens::create,
    crate::api::tokens::list,
    crate::api::tokens::revoke,
    crate::api::tokens::revoke_all,
    crate::api::tokens::create_for_session,
    crate::http::console::landing,
    crate::http::console::file,
    crate::login::providers,
    crate::login::whoami,
    crate::login::logout,
    crate::login::kubectl::authorize,
    crate::login::kubectl::token,
    crate::login::kubectl::device_start,
    crate::login::kubectl::device_page,
    crate::login::kubectl::device_confirm,
    crate::login::start,
    crate::login::ldap_form,
    crate::login::callback,
];

/// The one path and method of a table entry's document.
fn path_and_method(document: &Document) -> (String, Method) {
    let mut paths = document.paths.paths.iter();
    let (Some((path, item)), None) = (paths.next(), paths.next()) else {
        panic!("a route of the table must document exactly one path");
    };
    let methods = methods(item);
    let [method] = methods.as_slice() else {
        panic!("the route {path} of the table must document exactly one method, not {methods:?}");
    };
    (path.clone(), method.clone())
}

/// The methods a path item documents.
pub fn methods(item: &PathItem) -> Vec<Method> {
    [
        (&item.get, Method::GET),
        (&item.put, Method::PUT),
        (&item.post, Method::POST),
        (&item.delete, Method::DELETE),
        (&item.options, Method::OPTIONS),
        (&item.head, Method::HEAD),
        (&item.patch, Method::PATCH),
        (&item.trace, Method::TRACE),
    ]
    .into_iter()
    .filter(|(operation, _)| operation.is_some())
    .map(|(_, method)| method)
    .collect()
}

/// The routes of the router, registered from the table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for (document, register) in table() {
        let (path, method) = path_and_method(&document);
        register(cfg, &path, method);
    }
}

/// The document's frame: what it is, its security schemes, the proxy route; the table's
/// routes are merged into it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kubegate",
        description = "kubegate's REST API (Pipeline's where it fits) and the Kubernetes \
            proxy route. Generated from the code: each route of the server is registered \
            from the same table this document is built from.\n\n\
            Errors of the REST API are `{code, message, error}` (`ApiError`); those of \
            `/auth/cli/token` and `/auth/cli/device` are OAuth's `{error, \
            error_description, code, message}` (`OAuthError`); those of the proxy route \
            and of authentication in `/auth/session` and `/auth/logout` are a Kubernetes \
            `Status`.\n\n\
            Browser pages are listed with a short description and marked as HTML: `/` (the \
            console, its files under `/console/`), \
            `/auth/{provider}/login` and `/auth/{provider}/callback`, \
            `/auth/cli/authorize` and `/auth/cli/device/verify`, and this document's \
            reference page `/pipeline/api/v1/docs/`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(proxy_get, proxy_post, proxy_put, proxy_patch, proxy_delete),
    components(schemas(ApiErrorBody, KubernetesStatus)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "clusters", description = "The clusters of an org, registered from a kubeconfig"),
        (name = "members", description = "Who belongs to an org, and as what"),
        (name = "tokens", description = "Bearer tokens of the caller"),
        (name = "audit", description = "The audit trail of an org and its session recordings"),
        (name = "admin", description = "Global administrators"),
        (name = "login", description = "Browser login and the session"),
        (name = "kubectl", description = "kubectl single sign-on (`kubegate login`)"),
        (name = "proxy", description = "The Kubernetes API of a cluster, through kubegate"),
        (name = "server", description = "Health, metrics and this document"),
    )
)]
struct Frame;

/// The security schemes: a bearer token, or the browser session's cookie.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A kubegate token (POST /pipeline/api/v1/tokens, a kubeconfig's \
                         token, or kubectl single sign-on's access token): \
                         `Authorization: Bearer TOKEN`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "kubegate_session",
                "The browser session after a login at /auth/{provider}/login. Unsafe \
                 methods (POST, PUT, PATCH, DELETE) and GET /pipeline/api/v1/token (it \
                 mints a token) with this cookie also need the header `X-CSRF-Token` with \
                 the `csrfToken` of GET /auth/session; without it they are refused with \
                 403.",
            ))),
        );
    }
}

/// The document: the frame with every route of the table (served from [`DOCUMENT`]).
pub fn openapi() -> Document {
    let mut document = Frame::openapi();
    for (route, _) in table() {
        document.merge(route);
    }
    document
}

/// The document as served.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

/// The proxy route's operations, one per method (each needs its own operation id).
macro_rules! proxy_route {
    ($($method:ident $name:ident $id:tt),* $(,)?) => {$(
        /// The Kubernetes API of a cluster, through kubegate (a pass-through).
        ///
        /// Any Kubernetes API path follows the prefix, e.g.
        /// `/pipeline/api/v1/orgs/1/clusters/2/proxy/api/v1/namespaces/default/pods`: a
        /// path parameter cannot hold `/`, so only the prefix is described here. Every
        /// method Kubernetes has is passed on (GET, POST, PUT, PATCH, DELETE, and the
        /// upgrades of exec, attach and port-forward), authenticated, authorized by the
        /// org's policy and audited. kubegate refuses encoded slashes (`%2F`) in the path.
        /// Answers are the API server's; kubegate's own refusals are a Kubernetes `Status`.
        #[utoipa::path(
            $method,
            path = "/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy/",
            tag = "proxy",
            operation_id = $id,
            params(
                ("org" = u64, Path, description = "The org's id"),
                ("cluster" = u64, Path, description = "The cluster's id in the org"),
            ),
            responses(
                (status = 200, description = "The API server's answer, passed on"),
                (status = 401, description = "No valid credential", body = KubernetesStatus),
                (status = 403, description = "The policy does not allow it", body = KubernetesStatus),
                (status = 404, description = "No such cluster in the org", body = KubernetesStatus),
                (status = 502, description = "The API server cannot be reached", body = KubernetesStatus),
            ),
            security(("bearer" = []), ("cookie" = [])),
        )]
        #[allow(dead_code)] // served by the `front` middleware, described here
        fn $name() {}
    )*};
}

proxy_route![
    get proxy_get "proxyGet",
    post proxy_post "proxyPost",
    put proxy_put "proxyPut",
    patch proxy_patch "proxyPatch",
    delete proxy_delete "proxyDelete",
];

/// The OpenAPI 3.1 document of this API (this document).
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/openapi.json",
    tag = "server",
    operation_id = "openapi",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)),
    security(()),
)]
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-cache"))
        .body(DOCUMENT.as_str())
}

/// The reference page's address without its slash: a redirect to `/pipeline/api/v1/docs/`.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/docs",
    tag = "server",
    operation_id = "docsRedirect",
    responses((status = 308, description = "To /pipeline/api/v1/docs/", headers(("Location" = String)))),
    security(()),
)]
pub(crate) async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("Location", DOCS_PATH))
        .finish()
}

/// Swagger UI's configuration: this document.
static DOCS_CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from(DOCUMENT_PATH)));

/// The reference page of this API (a browser page: Swagger UI, embedded in the binary).
/// Its scripts and styles are files beside it, so that its Content-Security-Policy
/// needs nothing inline.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/docs/",
    tag = "server",
    operation_id = "docs",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
    security(()),
)]
pub(crate) async fn docs_page() -> HttpResponse {
    docs_answer("index.html")
}

/// A script, style or image of the reference page.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/docs/{file}",
    tag = "server",
    operation_id = "docsFile",
    params(("file" = String, Path, description = "A file of the page (`swagger-ui.css`...)")),
    responses(
        (status = 200, description = "The file (JavaScript, CSS, PNG)"),
        (status = 404, description = "No such file", body = ApiErrorBody),
    ),
    security(()),
)]
pub(crate) async fn docs_file(req: HttpRequest) -> HttpResponse {
    docs_answer(req.match_info().get("file").unwrap_or_default())
}

/// A file of the reference page, with the page's Content-Security-Policy.
fn docs_answer(file: &str) -> HttpResponse {
    match utoipa_swagger_ui::serve(file, DOCS_CONFIG.clone()) {
        Ok(Some(found)) => HttpResponse::Ok()
            .content_type(found.content_type)
            .insert_header(("Content-Security-Policy", DOCS_CSP))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header(("Cache-Control", "no-cache"))
            .body(found.bytes.into_owned()),
        Ok(None) => crate::api::ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("the reference page has no file \"{file}\"; the page is {DOCS_PATH}"),
        )
        .response(),
        Err(e) => crate::api::ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("the reference page's file \"{file}\" cannot be served: {e}"),
        )
        .response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of the table documents one path and one method, and every path and
    /// method of the table is in the served document (and the other way round, but for
    /// the proxy route, which `front` serves).
    #[test]
    fn table_and_document_agree() {
        let document = openapi();
        let mut documented: Vec<(String, Method)> = document
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| methods(item).into_iter().map(move |m| (path.clone(), m)))
            .filter(|(path, _)| !path.contains("/proxy/"))
            .collect();
        let mut registered: Vec<(String, Method)> =
            table().iter().map(|(d, _)| path_and_method(d)).collect();
        let key = |(p, m): &(String, Method)| format!("{m} {p}");
        documented.sort_by_key(key);
        registered.sort_by_key(key);
        let before = registered.len();
        registered.dedup();
        assert_eq!(before, registered.len(), "a route is in the table twice");
        assert_eq!(documented, registered);
    }
}
