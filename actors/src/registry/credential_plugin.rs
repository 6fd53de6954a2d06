//! Running an allowed exec credential plugin, as client-go does: the plugin gets
//! `KUBERNETES_EXEC_INFO`, prints an `ExecCredential`, and its token or client
//! certificate is used until `expirationTimestamp`.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde::Deserialize;

use crate::kubeconfig::ExecPlugin;

/// Why a plugin gave no credential. Each message names the plugin's command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialPluginError {
    /// The plugin ran past its time limit and was killed.
    #[error("the exec plugin {command} did not answer within {}s", .timeout.as_secs())]
    Timeout {
        /// The plugin's command.
        command: String,
        /// Its time limit.
        timeout: Duration,
    },
    /// The plugin could not be started.
    #[error("cannot run the exec plugin {command}: {source}")]
    Run {
        /// The plugin's command.
        command: String,
        /// Why it could not be started.
        #[source]
        source: Arc<io::Error>,
    },
    /// The plugin exited with an error.
    #[error("the exec plugin {command} failed ({status}): {stderr}")]
    Failed {
        /// The plugin's command.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The start of what it wrote to standard error.
        stderr: String,
    },
    /// The plugin's output is not JSON of the right shape.
    #[error("the exec plugin {command} did not print an ExecCredential: {source}")]
    Output {
        /// The plugin's command.
        command: String,
        /// What is wrong with the output.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// The plugin printed an object of another kind.
    #[error("the exec plugin {command} printed a {kind:?}, not an ExecCredential")]
    Kind {
        /// The plugin's command.
        command: String,
        /// The kind it printed.
        kind: Option<String>,
    },
    /// The plugin's ExecCredential has no status.
    #[error("the exec plugin {command} printed no status")]
    NoStatus {
        /// The plugin's command.
        command: String,
    },
    /// The credential's expiry is not an RFC 3339 time.
    #[error("the exec plugin {command} gave a bad expirationTimestamp: {source}")]
    Expiration {
        /// The plugin's command.
        command: String,
        /// What is wrong with the time.
        #[source]
        source: humantime::TimestampError,
    },
    /// The credential holds neither a token nor a client certificate.
    #[error("the exec plugin {command} gave neither a token nor a client certificate")]
    Empty {
        /// The plugin's command.
        command: String,
    },
}

/// What a plugin gave.
pub struct ExecCredential {
    /// A bearer token.
    pub token: Option<SecretString>,
    /// A client certificate chain and key, PEM.
    pub client_cert: Option<(Vec<u8>, SecretString)>,
    /// When the credential stops being valid.
    pub expires_at: Option<SystemTime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
    expiration_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct Output {
    kind: Option<String>,
    status: Option<Status>,
}

/// Runs the plugin (with `timeout`) and reads its credential.
pub async fn run(
    plugin: &ExecPlugin,
    timeout: Duration,
) -> Result<ExecCredential, CredentialPluginError> {
    let info = serde_json::json!({
        "apiVersion": plugin.api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": false},
    });
    let mut command = tokio::process::Command::new(&plugin.command);
    command
        .args(&plugin.args)
        .envs(plugin.env.iter().cloned())
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let name = || plugin.command.clone();
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| CredentialPluginError::Timeout {
            command: name(),
            timeout,
        })?
        .map_err(|e| CredentialPluginError::Run {
            command: name(),
            source: Arc::new(e),
        })?;
    if !output.status.success() {
        let stderr: String = String::from_utf8_lossy(&output.stderr)
            .chars()
            .take(300)
            .collect();
        return Err(CredentialPluginError::Failed {
            command: name(),
            status: output.status,
            stderr: stderr.trim().to_string(),
        });
    }
    let parsed: Output =
        serde_json::from_slice(&output.stdout).map_err(|e| CredentialPluginError::Output {
            command: name(),
            source: Arc::new(e),
        })?;
    if parsed.kind.as_deref() != Some("ExecCredential") {
        return Err(CredentialPluginError::Kind {
            command: name(),
            kind: parsed.kind,
        });
    }
    let status = parsed
        .status
        .ok_or_else(|| CredentialPluginError::NoStatus { command: name() })?;
    let expires_at = status
        .expiration_timestamp
        .as_deref()
        .map(|t| {
            humantime::parse_rfc3339_weak(t).map_err(|source| CredentialPluginError::Expiration {
                command: name(),
                source,
            })
        })
        .transpose()?;
    let client_cert = match (status.client_certificate_data, status.client_key_data) {
        (Some(cert), Some(key)) => Some((cert.into_bytes(), SecretString::from(key))),
        _ => None,
    };
    let token = status
        .token
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    if token.is_none() && client_cert.is_none() {
        return Err(CredentialPluginError::Empty { command: name() });
    }
    Ok(ExecCredential {
        token,
        client_cert,
        expires_at,
    })
}
