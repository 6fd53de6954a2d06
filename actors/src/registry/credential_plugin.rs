//! Running an allowed exec credential plugin, as client-go does: the plugin gets
//! `KUBERNETES_EXEC_INFO`, prints an `ExecCredential`, and its token or client
//! certificate is used until `expirationTimestamp`.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde::Deserialize;

use crate::kubeconfig::ExecPlugin;

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
pub async fn run(plugin: &ExecPlugin, timeout: Duration) -> Result<ExecCredential, String> {
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
    let name = &plugin.command;
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| {
            format!(
                "the exec plugin {name} did not answer within {}s",
                timeout.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run the exec plugin {name}: {e}"))?;
    if !output.status.success() {
        let stderr: String = String::from_utf8_lossy(&output.stderr)
            .chars()
            .take(300)
            .collect();
        return Err(format!(
            "the exec plugin {name} failed ({}): {}",
            output.status,
            stderr.trim()
        ));
    }
    let parsed: Output = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("the exec plugin {name} did not print an ExecCredential: {e}"))?;
    if parsed.kind.as_deref() != Some("ExecCredential") {
        return Err(format!(
            "the exec plugin {name} printed a {:?}, not an ExecCredential",
            parsed.kind
        ));
    }
    let status = parsed
        .status
        .ok_or_else(|| format!("the exec plugin {name} printed no status"))?;
    let expires_at = status
        .expiration_timestamp
        .as_deref()
        .map(|t| {
            humantime::parse_rfc3339_weak(t)
                .map_err(|e| format!("the exec plugin {name} gave a bad expirationTimestamp: {e}"))
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
        return Err(format!(
            "the exec plugin {name} gave neither a token nor a client certificate"
        ));
    }
    Ok(ExecCredential {
        token,
        client_cert,
        expires_at,
    })
}
