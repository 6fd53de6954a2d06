//! What `kubegate login` and `kubegate credential` do, step by step: the login and its
//! kubeconfig, and the exec plugin's choice between the cached token, a refresh and a
//! new login.

use std::io::IsTerminal as _;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use super::cache::{cache_dir, CacheLock, CachedTokens, TokenCache};
use super::client::{
    normalize_server, now_epoch, SessionCheck, SsoClient, TokenAnswer, TokenResult, Trust,
    TrustFlags,
};
use super::kubeconfig::{
    adjust, check_file, context_names, kubeconfig_path, merge_into_file, plugin_servers,
    Adjustments,
};
use super::{flow, CredentialOptions, LoginOptions, SsoError};

/// The ExecCredential version used when kubectl did not say which it speaks.
pub const EXEC_CREDENTIAL_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// A cached access token that expires sooner than this is refreshed first.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Logs in with the browser, or with the device flow when `no_browser`.
async fn log_in(
    client: &SsoClient,
    no_browser: bool,
    provider: Option<&str>,
) -> Result<TokenAnswer, SsoError> {
    if no_browser {
        flow::device_login(client, provider).await
    } else {
        flow::browser_login(client, provider).await
    }
}

/// The cache entry for a token answer; the refresh token and the user of `previous`
/// are kept when the answer has none.
fn cached(
    server: &str,
    answer: &TokenAnswer,
    previous: Option<&CachedTokens>,
) -> Result<CachedTokens, SsoError> {
    Ok(CachedTokens {
        server: server.to_string(),
        user: answer
            .user
            .clone()
            .or_else(|| previous.map(|p| p.user.clone()))
            .unwrap_or_default(),
        access_token: answer.access_token.clone(),
        expires_at: answer.expires_at_epoch()?,
        refresh_token: answer
            .refresh_token
            .clone()
            .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
    })
}

/// `kubegate login`: logs in, keeps the tokens for the plugin, and merges the server's
/// kubeconfig into the user's. Returns the summary for standard error.
pub async fn login(options: &LoginOptions) -> Result<String, SsoError> {
    let server = normalize_server(&options.server)?;
    // a kubeconfig that cannot take the result is refused before the user logs in
    let path = kubeconfig_path(options.kubeconfig.as_deref())?;
    check_file(&path)?;
    options.trust.warn_if_insecure(&server);
    let client = SsoClient::new(&server, &options.trust.trust_or(Trust::System))?;
    let providers = client.providers().await?;
    if providers.is_empty() {
        return Err(SsoError::Input(format!(
            "{server} has no login provider configured (login.providers), so nobody can log \
             in to it; ask its administrators for a token instead"
        )));
    }
    if let Some(asked) = options.provider.as_deref() {
        if !providers.iter().any(|p| p == asked) {
            return Err(SsoError::Input(format!(
                "{server} has no login provider named \"{asked}\"; its providers: {}",
                providers.join(", ")
            )));
        }
    }
    let answer = log_in(&client, options.no_browser, options.provider.as_deref()).await?;
    let tokens = cached(&server, &answer, None)?;
    let cache = TokenCache::new(&cache_dir()?, &server);
    {
        let lock = cache.lock()?;
        cache.write(&lock, &tokens)?;
    }

    let served = client.kubeconfig(&tokens.access_token, options.org).await?;
    let certificate_authority_pem = match &options.trust.certificate_authority {
        Some(path) => Some(std::fs::read(path).map_err(|source| SsoError::File {
            action: "read the certificate authority file",
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let command = std::env::current_exe().map_err(|e| {
        SsoError::Input(format!("cannot find the path of the running kubegate: {e}"))
    })?;
    let new = adjust(
        &served,
        &Adjustments {
            command: Some(command.display().to_string()),
            no_browser: options.no_browser,
            certificate_authority_pem,
            insecure_skip_tls_verify: options.trust.insecure_skip_tls_verify,
        },
    )?;
    // the plugin finds the tokens under the URL the server wrote into its arguments
    // (server.public_url), which may name the server otherwise than --server did
    for other in plugin_servers(&new) {
        let Ok(other) = normalize_server(&other) else {
            continue;
        };
        if other != server {
            let cache = TokenCache::new(&cache_dir()?, &other);
            let lock = cache.lock()?;
            let copy = CachedTokens {
                server: other.clone(),
                ..tokens.clone()
            };
            cache.write(&lock, &copy)?;
        }
    }
    merge_into_file(&path, &new)?;
    let contexts = context_names(&new);
    let user = if tokens.user.is_empty() {
        "(unnamed user)"
    } else {
        &tokens.user
    };
    Ok(format!(
        "logged in as {user}; wrote {} context{} to {}: {}",
        contexts.len(),
        if contexts.len() == 1 { "" } else { "s" },
        path.display(),
        contexts.join(", ")
    ))
}

/// What kubectl tells the plugin in `KUBERNETES_EXEC_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    /// The ExecCredential version to answer in.
    pub api_version: String,
    /// Whether the plugin may ask the user (log in again).
    pub interactive: bool,
    /// The cluster's CA certificates (PEM), from `certificate-authority-data`.
    pub certificate_authority_pem: Option<Vec<u8>>,
    /// The cluster's `insecure-skip-tls-verify`.
    pub insecure_skip_tls_verify: bool,
}

impl ExecInfo {
    /// Reads `KUBERNETES_EXEC_INFO` (`None`: not set; then the plugin is interactive
    /// when standard input is a terminal).
    pub fn parse(env: Option<&str>, stdin_is_terminal: bool) -> Result<Self, SsoError> {
        let Some(text) = env.filter(|t| !t.trim().is_empty()) else {
            return Ok(Self {
                api_version: EXEC_CREDENTIAL_API_VERSION.into(),
                interactive: stdin_is_terminal,
                certificate_authority_pem: None,
                insecure_skip_tls_verify: false,
            });
        };
        let info: Value = serde_json::from_str(text).map_err(|e| {
            SsoError::Input(format!("KUBERNETES_EXEC_INFO is not JSON ({e}); kubegate credential is meant to be run by kubectl"))
        })?;
        let cluster = &info["spec"]["cluster"];
        let certificate_authority_pem = match cluster["certificate-authority-data"].as_str() {
            Some(data) if !data.is_empty() => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| {
                        SsoError::Input(format!(
                            "the cluster's certificate-authority-data is not base64: {e}"
                        ))
                    })?,
            ),
            _ => None,
        };
        Ok(Self {
            api_version: info["apiVersion"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or(EXEC_CREDENTIAL_API_VERSION)
                .to_string(),
            interactive: info["spec"]["interactive"]
                .as_bool()
                .unwrap_or(stdin_is_terminal),
            certificate_authority_pem,
            insecure_skip_tls_verify: cluster["insecure-skip-tls-verify"]
                .as_bool()
                .unwrap_or(false),
        })
    }

    /// The trust the cluster entry asks for (the cluster is served by the same kubegate).
    pub fn trust(&self) -> Trust {
        if self.insecure_skip_tls_verify {
            Trust::Insecure
        } else if let Some(pem) = &self.certificate_authority_pem {
            Trust::CaPem(pem.clone())
        } else {
            Trust::System
        }
    }
}

/// The ExecCredential JSON for kubectl.
pub fn exec_credential(api_version: &str, token: &str, expires_at: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(expires_at);
    json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {
            "token": token,
            "expirationTimestamp": humantime::format_rfc3339_seconds(at).to_string(),
        }
    })
    .to_string()
}

/// The command that logs in to `server` again with these flags.
pub fn login_command(server: &str, no_browser: bool, trust: &TrustFlags) -> String {
    let mut words = vec![
        "kubegate".to_string(),
        "login".into(),
        "--server".into(),
        server.to_string(),
    ];
    if no_browser {
        words.push("--no-browser".into());
    }
    words.extend(trust.to_args());
    words.join(" ")
}

/// Refreshes with the cached refresh token: `Ok(None)` when the server refused it
/// (ended, revoked or reused), so that only a new login helps.
async fn refresh(client: &SsoClient, refresh_token: &str) -> Result<Option<TokenAnswer>, SsoError> {
    let name = flow::client_name();
    let answer = client
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client", &name),
        ])
        .await?;
    match answer {
        TokenResult::Issued(answer) => Ok(Some(answer)),
        TokenResult::Refused { status, error }
            if status == 401 || error.error == "invalid_grant" =>
        {
            Ok(None)
        }
        TokenResult::Refused { error, .. } => Err(SsoError::Refused {
            error: error.error,
            description: error.error_description,
        }),
        TokenResult::RateLimited(wait) => Err(SsoError::Login(format!(
            "the kubegate server is rate-limiting token refreshes; try again in {} s",
            wait.as_secs()
        ))),
    }
}

/// `kubegate credential`: the ExecCredential JSON with a good access token, from the
/// cache, a refresh, or (when interactive) a new login. `exec_info` is
/// `KUBERNETES_EXEC_INFO`.
pub async fn credential(
    options: &CredentialOptions,
    exec_info: Option<&str>,
) -> Result<String, SsoError> {
    let info = ExecInfo::parse(exec_info, std::io::stdin().is_terminal())?;
    let server = normalize_server(&options.server)?;
    options.trust.warn_if_insecure(&server);
    let client = SsoClient::new(&server, &options.trust.trust_or(info.trust()))?;
    let cache = TokenCache::new(&cache_dir()?, &server);
    // held until the answer is printed: a parallel kubectl waits, then finds the
    // refreshed tokens in the cache
    let lock = cache.lock()?;
    let tokens = token(&client, &cache, &lock, options, info.interactive).await?;
    Ok(exec_credential(
        &info.api_version,
        &tokens.access_token,
        tokens.expires_at,
    ))
}

/// The plugin's decision, under the cache lock.
async fn token(
    client: &SsoClient,
    cache: &TokenCache,
    lock: &CacheLock,
    options: &CredentialOptions,
    interactive: bool,
) -> Result<CachedTokens, SsoError> {
    let server = &client.server;
    let previous = cache.read(lock)?.filter(|t| &t.server == server);
    if let Some(tokens) = &previous {
        if tokens.expires_at > now_epoch() + REFRESH_MARGIN.as_secs() {
            match client.check_session(&tokens.access_token).await {
                SessionCheck::Good => return Ok(tokens.clone()),
                SessionCheck::Unknown(why) => {
                    log::debug!("cannot check the cached token ({why}); using it as it is");
                    return Ok(tokens.clone());
                }
                SessionCheck::Rejected => {}
            }
        }
        if let Some(refresh_token) = &tokens.refresh_token {
            if let Some(answer) = refresh(client, refresh_token).await? {
                // the old refresh token is dead now: the new one is saved before anything
                // is printed
                let refreshed = cached(server, &answer, Some(tokens))?;
                cache.write(lock, &refreshed)?;
                return Ok(refreshed);
            }
        }
    }
    if !interactive {
        return Err(SsoError::SessionEnded {
            command: login_command(server, options.no_browser, &options.trust),
        });
    }
    eprintln!("kubegate: your kubegate session has ended; logging in again to {server}");
    let answer = log_in(client, options.no_browser, None).await?;
    let tokens = cached(server, &answer, previous.as_ref())?;
    cache.write(lock, &tokens)?;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_credential_has_kubectls_shape() {
        let out: Value = serde_json::from_str(&exec_credential(
            EXEC_CREDENTIAL_API_VERSION,
            "T",
            1_796_512_500,
        ))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"token": "T", "expirationTimestamp": "2026-12-05T23:15:00Z"}
            })
        );
    }

    #[test]
    fn exec_info_gives_version_interactivity_and_trust() {
        let info = ExecInfo::parse(
            Some(r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":false,"cluster":{"server":"https://kg","certificate-authority-data":"UEVN"}}}"#),
            true,
        )
        .unwrap();
        assert_eq!(info.api_version, "client.authentication.k8s.io/v1beta1");
        assert!(!info.interactive);
        assert_eq!(info.certificate_authority_pem.as_deref(), Some(&b"PEM"[..]));
        assert!(matches!(info.trust(), Trust::CaPem(_)));
        let insecure = ExecInfo::parse(
            Some(r#"{"spec":{"interactive":true,"cluster":{"insecure-skip-tls-verify":true}}}"#),
            false,
        )
        .unwrap();
        assert!(insecure.interactive);
        assert!(matches!(insecure.trust(), Trust::Insecure));
        assert_eq!(insecure.api_version, EXEC_CREDENTIAL_API_VERSION);
        let missing = ExecInfo::parse(None, true).unwrap();
        assert!(missing.interactive);
        assert!(matches!(missing.trust(), Trust::System));
        assert!(!ExecInfo::parse(None, false).unwrap().interactive);
        assert!(ExecInfo::parse(Some("{"), false).is_err());
    }

    #[test]
    fn non_interactive_refusal_names_the_login_command() {
        let e = SsoError::SessionEnded {
            command: login_command(
                "https://kg.example",
                true,
                &TrustFlags {
                    certificate_authority: Some("/etc/kg/ca.pem".into()),
                    insecure_skip_tls_verify: false,
                },
            ),
        };
        assert_eq!(
            format!("kubegate: {e}"),
            "kubegate: your kubegate session has ended or was revoked; run: kubegate login --server https://kg.example --no-browser --certificate-authority /etc/kg/ca.pem"
        );
    }

    #[test]
    fn cached_token_is_used_when_the_server_cannot_be_asked() {
        let tmp = tempfile::tempdir().unwrap();
        // a port nobody listens on any more: connection refused
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = &format!("http://127.0.0.1:{port}");
        let cache = TokenCache::new(tmp.path(), server);
        let lock = cache.lock().unwrap();
        let tokens = CachedTokens {
            server: server.clone(),
            user: "ldap:alice".into(),
            access_token: "CACHED".into(),
            expires_at: now_epoch() + 600,
            refresh_token: Some("R".into()),
        };
        cache.write(&lock, &tokens).unwrap();
        let client = SsoClient::new(server, &Trust::System).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = CredentialOptions {
            server: server.clone(),
            ..Default::default()
        };
        let got = rt
            .block_on(token(&client, &cache, &lock, &options, false))
            .unwrap();
        assert_eq!(got, tokens);
        // near its expiry it is not used: the refresh then fails to reach the server
        let soon = CachedTokens {
            expires_at: now_epoch() + 30,
            ..tokens
        };
        cache.write(&lock, &soon).unwrap();
        let e = rt
            .block_on(token(&client, &cache, &lock, &options, false))
            .unwrap_err();
        assert!(matches!(e, SsoError::Unreachable { .. }), "{e}");
    }

    #[test]
    fn non_interactive_plugin_without_cache_refuses_without_waiting() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(tmp.path(), "http://127.0.0.1:9");
        let client = SsoClient::new("http://127.0.0.1:9", &Trust::Insecure).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let lock = cache.lock().unwrap();
        let options = CredentialOptions {
            server: "http://127.0.0.1:9".into(),
            ..Default::default()
        };
        let e = rt
            .block_on(token(&client, &cache, &lock, &options, false))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "your kubegate session has ended or was revoked; run: kubegate login --server http://127.0.0.1:9"
        );
    }
}
