//! Reads a cluster's kubeconfig with kube's own types and keeps only what a proxy may use.
//!
//! kubegate holds kubeconfigs for many users, so anything that would make it read its own
//! files (`certificate-authority`, `client-certificate`, `tokenFile`...) or run programs
//! (`exec`, `auth-provider`) is refused when the cluster is added, naming the field.

use base64::Engine as _;
use kube::config::{AuthInfo, Cluster, Kubeconfig};
use secrecy::{ExposeSecret, SecretString};

/// Why a kubeconfig was refused. Each message names the field to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KubeconfigError {
    /// The text is not a kubeconfig at all.
    #[error("kubeconfig is not valid YAML: {0}")]
    Parse(String),
    /// No context was asked for and `current-context` is empty.
    #[error("current-context: is empty; name a context")]
    NoContext,
    /// A name refers to an entry that is not in the list.
    #[error("{list}: no entry named \"{name}\"")]
    Missing {
        /// The list that was searched (`contexts`, `clusters`, `users`).
        list: &'static str,
        /// The name looked for.
        name: String,
    },
    /// A field is present but cannot be used, or is required and absent.
    #[error("{field}: {reason}")]
    Field {
        /// Path of the field, as in the kubeconfig (`clusters[dev].cluster.server`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Rules applied to every kubeconfig kubegate accepts.
#[derive(Debug, Clone, Default)]
pub struct KubeconfigRules {
    /// Accept `http://` API servers (credentials then travel in clear text).
    pub allow_insecure_http: bool,
    /// API servers may not be in these ranges (checked here for addresses, and at every
    /// connection for host names).
    pub denied_networks: std::sync::Arc<Vec<crate::network::Network>>,
    /// Exec credential plugins that may run, by their `command` exactly as written in
    /// the kubeconfig. Empty: none.
    pub allowed_exec: std::sync::Arc<Vec<String>>,
}

/// How kubegate authenticates to the API server, besides a client certificate.
#[derive(Clone, Default)]
pub enum UpstreamAuth {
    /// No header (client certificate only, or anonymous).
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// `Authorization: Basic`, from `username`/`password`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: SecretString,
    },
    /// An allowed exec credential plugin, run when the proxy is built and again when the
    /// credential it gave expires.
    Exec(ExecPlugin),
}

/// An exec credential plugin (`users[].user.exec`), admitted by the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlugin {
    /// The command, as written.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// `client.authentication.k8s.io/v1` or `v1beta1`.
    pub api_version: String,
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAuth::None => f.write_str("None"),
            UpstreamAuth::Bearer(_) => f.write_str("Bearer([redacted])"),
            UpstreamAuth::Basic { username, .. } => write!(f, "Basic({username}, [redacted])"),
            UpstreamAuth::Exec(plugin) => write!(f, "Exec({})", plugin.command),
        }
    }
}

impl UpstreamAuth {
    /// The `Authorization` header value, if any.
    pub fn header_value(&self) -> Option<String> {
        match self {
            UpstreamAuth::None | UpstreamAuth::Exec(_) => None,
            UpstreamAuth::Bearer(token) => Some(format!("Bearer {}", token.expose_secret())),
            UpstreamAuth::Basic { username, password } => {
                let raw = format!("{username}:{}", password.expose_secret());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
        }
    }
}

/// The parts of a kubeconfig that a cluster proxy is built from, checked.
#[derive(Clone)]
pub struct ClusterSpec {
    /// API server URL without a trailing slash, e.g. `https://10.0.0.1:6443` or
    /// `https://rancher.example/k8s/clusters/c-1`.
    pub server: String,
    /// PEM bundle of the certificate authorities to trust; `None` means the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and private key.
    pub client_cert: Option<(Vec<u8>, SecretString)>,
    /// The name to verify the server certificate against, when not the URL's host.
    pub tls_server_name: Option<String>,
    /// Skip server certificate verification (honoured, with a warning).
    pub insecure_skip_tls_verify: bool,
    /// Header credentials.
    pub auth: UpstreamAuth,
}

impl std::fmt::Debug for ClusterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSpec")
            .field("server", &self.server)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "..."))
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|_| "[redacted]"),
            )
            .field("tls_server_name", &self.tls_server_name)
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("auth", &self.auth)
            .finish()
    }
}

fn field(field: String, reason: &str) -> KubeconfigError {
    KubeconfigError::Field {
        field,
        reason: reason.to_string(),
    }
}

fn decode_b64(value: &str, name: String) -> Result<Vec<u8>, KubeconfigError> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| field(name, "is not valid base64"))
}

/// Parses `yaml` and resolves `context` (or `current-context`) into a [`ClusterSpec`].
pub fn parse(
    yaml: &str,
    context: Option<&str>,
    rules: &KubeconfigRules,
) -> Result<ClusterSpec, KubeconfigError> {
    let config = Kubeconfig::from_yaml(yaml).map_err(|e| KubeconfigError::Parse(e.to_string()))?;
    resolve(&config, context, rules)
}

/// Resolves a parsed kubeconfig; see [`parse`].
pub fn resolve(
    config: &Kubeconfig,
    context: Option<&str>,
    rules: &KubeconfigRules,
) -> Result<ClusterSpec, KubeconfigError> {
    let context_name = match context {
        Some(name) => name.to_string(),
        None => config
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| (config.contexts.len() == 1).then(|| config.contexts[0].name.clone()))
            .ok_or(KubeconfigError::NoContext)?,
    };
    let named = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .ok_or_else(|| KubeconfigError::Missing {
            list: "contexts",
            name: context_name.clone(),
        })?;
    let ctx = named
        .context
        .as_ref()
        .ok_or_else(|| field(format!("contexts[{context_name}].context"), "is empty"))?;
    let cluster_entry = config
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .ok_or_else(|| KubeconfigError::Missing {
            list: "clusters",
            name: ctx.cluster.clone(),
        })?;
    let prefix = format!("clusters[{}].cluster", cluster_entry.name);
    let cluster = cluster_entry
        .cluster
        .as_ref()
        .ok_or_else(|| field(prefix.clone(), "is empty"))?;
    let mut spec = cluster_spec(cluster, &prefix, rules)?;

    if let Some(user) = ctx.user.as_deref().filter(|u| !u.is_empty()) {
        let entry = config
            .auth_infos
            .iter()
            .find(|u| u.name == user)
            .ok_or_else(|| KubeconfigError::Missing {
                list: "users",
                name: user.to_string(),
            })?;
        if let Some(info) = entry.auth_info.as_ref() {
            apply_user(&mut spec, info, &format!("users[{user}].user"), rules)?;
        }
    }
    Ok(spec)
}

fn cluster_spec(
    cluster: &Cluster,
    prefix: &str,
    rules: &KubeconfigRules,
) -> Result<ClusterSpec, KubeconfigError> {
    if cluster.certificate_authority.is_some() {
        return Err(field(
            format!("{prefix}.certificate-authority"),
            "file references are not accepted; embed the CA as certificate-authority-data",
        ));
    }
    if cluster.proxy_url.is_some() {
        return Err(field(
            format!("{prefix}.proxy-url"),
            "proxies between kubegate and the API server are not supported",
        ));
    }
    let server = cluster
        .server
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| field(format!("{prefix}.server"), "is required"))?;
    let server = check_server(server, rules).map_err(|r| field(format!("{prefix}.server"), &r))?;
    let ca_pem = cluster
        .certificate_authority_data
        .as_deref()
        .map(|d| decode_b64(d, format!("{prefix}.certificate-authority-data")))
        .transpose()?;
    Ok(ClusterSpec {
        server,
        ca_pem,
        client_cert: None,
        tls_server_name: cluster.tls_server_name.clone().filter(|s| !s.is_empty()),
        insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
        auth: UpstreamAuth::None,
    })
}

/// Checks an API server URL: http(s), a host, no query, user info or fragment.
/// Returns it without a trailing slash.
fn check_server(server: &str, rules: &KubeconfigRules) -> Result<String, String> {
    let rest = if let Some(rest) = server.strip_prefix("https://") {
        rest
    } else if let Some(rest) = server.strip_prefix("http://") {
        if !rules.allow_insecure_http {
            return Err("must be an https:// URL (http is refused unless clusters.allow_insecure_http is set)".into());
        }
        rest
    } else {
        return Err("must be an https:// URL".into());
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err("has no host".into());
    }
    if authority.contains('@') {
        return Err("must not carry user information".into());
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not carry a query, fragment or whitespace".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        if let Some(range) = crate::network::denied_by(&rules.denied_networks, ip) {
            return Err(format!(
                "{ip} is in the denied network {range} (clusters.denied_networks)"
            ));
        }
    }
    Ok(server.trim_end_matches('/').to_string())
}

fn apply_user(
    spec: &mut ClusterSpec,
    info: &AuthInfo,
    prefix: &str,
    rules: &KubeconfigRules,
) -> Result<(), KubeconfigError> {
    let allowed_exec = info.exec.as_ref().and_then(|exec| {
        let command = exec.command.as_deref()?;
        rules
            .allowed_exec
            .iter()
            .any(|a| a == command)
            .then(|| ExecPlugin {
                command: command.to_string(),
                args: exec.args.clone().unwrap_or_default(),
                env: exec
                    .env
                    .iter()
                    .flatten()
                    .filter_map(|pair| {
                        Some((pair.get("name")?.clone(), pair.get("value")?.clone()))
                    })
                    .collect(),
                api_version: exec
                    .api_version
                    .clone()
                    .unwrap_or_else(|| "client.authentication.k8s.io/v1".to_string()),
            })
    });
    let refused: [(&str, bool, &str); 7] = [
        (
            "client-certificate",
            info.client_certificate.is_some(),
            "file references are not accepted; embed it as client-certificate-data",
        ),
        (
            "client-key",
            info.client_key.is_some(),
            "file references are not accepted; embed it as client-key-data",
        ),
        (
            "tokenFile",
            info.token_file.is_some(),
            "file references are not accepted; put the token in token",
        ),
        (
            "exec",
            info.exec.is_some() && allowed_exec.is_none(),
            "exec credential plugins are not accepted unless their command is in clusters.allowed_exec_plugins; use a token or a client certificate",
        ),
        (
            "auth-provider",
            info.auth_provider.is_some(),
            "auth-provider plugins are not accepted; use a token or a client certificate",
        ),
        (
            "as",
            info.impersonate.is_some() || info.impersonate_groups.is_some(),
            "impersonation in the kubeconfig is not supported",
        ),
        (
            "as-uid",
            info.impersonate_uid.is_some() || info.impersonate_user_extra.is_some(),
            "impersonation in the kubeconfig is not supported",
        ),
    ];
    if let Some((name, _, reason)) = refused.iter().find(|(_, present, _)| *present) {
        return Err(field(format!("{prefix}.{name}"), reason));
    }
    match (&info.client_certificate_data, &info.client_key_data) {
        (Some(cert), Some(key)) => {
            let cert = decode_b64(cert, format!("{prefix}.client-certificate-data"))?;
            let key = decode_b64(key.expose_secret(), format!("{prefix}.client-key-data"))?;
            let key = String::from_utf8(key)
                .map_err(|_| field(format!("{prefix}.client-key-data"), "is not a PEM key"))?;
            spec.client_cert = Some((cert, SecretString::from(key)));
        }
        (Some(_), None) => {
            return Err(field(
                format!("{prefix}.client-key-data"),
                "is required with client-certificate-data",
            ))
        }
        (None, Some(_)) => {
            return Err(field(
                format!("{prefix}.client-certificate-data"),
                "is required with client-key-data",
            ))
        }
        (None, None) => {}
    }
    if let Some(plugin) = allowed_exec {
        spec.auth = UpstreamAuth::Exec(plugin);
    } else if let Some(token) = info
        .token
        .as_ref()
        .filter(|t| !t.expose_secret().is_empty())
    {
        spec.auth = UpstreamAuth::Bearer(token.clone());
    } else if let Some(username) = info.username.as_ref().filter(|u| !u.is_empty()) {
        let password = info
            .password
            .clone()
            .ok_or_else(|| field(format!("{prefix}.password"), "is required with username"))?;
        spec.auth = UpstreamAuth::Basic {
            username: username.clone(),
            password,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\ncontexts:\n- name: dev\n  context:\n    cluster: dev\n    user: admin\nclusters:\n- name: dev\n  cluster:\n{cluster}\nusers:\n- name: admin\n  user:\n{user}\n"
        )
    }

    fn err(cluster: &str, user: &str) -> String {
        parse(&config(cluster, user), None, &KubeconfigRules::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn accepts_token_and_embedded_ca() {
        let spec = parse(
            &config(
                "    server: https://10.0.0.1:6443/\n    certificate-authority-data: aGVsbG8=\n    tls-server-name: kubernetes",
                "    token: abc",
            ),
            None,
            &KubeconfigRules::default(),
        )
        .unwrap();
        assert_eq!(spec.server, "https://10.0.0.1:6443");
        assert_eq!(spec.ca_pem.as_deref(), Some(&b"hello"[..]));
        assert_eq!(spec.tls_server_name.as_deref(), Some("kubernetes"));
        assert_eq!(spec.auth.header_value().as_deref(), Some("Bearer abc"));
        assert!(
            !format!("{spec:?}").contains("abc"),
            "debug output hides the token"
        );
    }

    #[test]
    fn refuses_files_and_plugins_naming_the_field() {
        let ok = "    server: https://h:6443";
        assert!(err(
            "    server: https://h\n    certificate-authority: /etc/ca.crt",
            "    token: t"
        )
        .starts_with("clusters[dev].cluster.certificate-authority:"));
        assert!(err(ok, "    client-certificate: /c\n    client-key: /k")
            .starts_with("users[admin].user.client-certificate:"));
        assert!(err(ok, "    tokenFile: /t").starts_with("users[admin].user.tokenFile:"));
        assert!(err(
            ok,
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws"
        )
        .starts_with("users[admin].user.exec:"));
        assert!(err(ok, "    auth-provider:\n      name: gcp")
            .starts_with("users[admin].user.auth-provider:"));
        assert!(err("    server: http://h:8080", "    token: t")
            .starts_with("clusters[dev].cluster.server: must be an https"));
        assert!(err("    insecure-skip-tls-verify: true", "    token: t")
            .starts_with("clusters[dev].cluster.server: is required"));
        assert!(err(ok, "    client-certificate-data: aGVsbG8=")
            .contains("client-key-data: is required"));
        assert!(err(
            "    server: https://h\n    certificate-authority-data: '%%%'",
            "    token: t"
        )
        .contains("not valid base64"));
    }

    /// A proxy between kubegate and the API server, or impersonation written into the
    /// kubeconfig, would let a cluster's owner route or re-identify kubegate's requests:
    /// refused, naming the field.
    #[test]
    fn refuses_proxies_and_impersonation_naming_the_field() {
        let ok = "    server: https://h:6443";
        let e = err(
            "    server: https://h:6443\n    proxy-url: http://proxy.example:3128",
            "    token: t",
        );
        assert!(e.starts_with("clusters[dev].cluster.proxy-url:"), "{e}");
        for (user, field) in [
            ("    token: t\n    as: admin", "as"),
            ("    token: t\n    as-groups: [system:masters]", "as"),
            ("    token: t\n    as-uid: \"1\"", "as-uid"),
            (
                "    token: t\n    as-user-extra:\n      scopes: [all]",
                "as-uid",
            ),
        ] {
            let e = err(ok, user);
            assert!(
                e.starts_with(&format!("users[admin].user.{field}:"))
                    && e.contains("impersonation"),
                "{user}: {e}"
            );
        }
    }

    #[test]
    fn http_only_when_allowed() {
        let rules = KubeconfigRules {
            allow_insecure_http: true,
            ..Default::default()
        };
        let spec = parse(
            &config("    server: http://127.0.0.1:8080", "    token: t"),
            None,
            &rules,
        )
        .unwrap();
        assert_eq!(spec.server, "http://127.0.0.1:8080");
    }

    #[test]
    fn unknown_context_and_garbage() {
        let text = config("    server: https://h", "    token: t");
        let e = parse(&text, Some("prod"), &KubeconfigRules::default()).unwrap_err();
        assert_eq!(e.to_string(), "contexts: no entry named \"prod\"");
        let e = parse(": : :", None, &KubeconfigRules::default()).unwrap_err();
        assert!(matches!(e, KubeconfigError::Parse(_)));
    }
}
