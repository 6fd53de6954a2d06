//! The kubectl single sign-on client: `kubegate login` (log in to a kubegate server and
//! merge its clusters into the user's kubeconfig) and `kubegate credential` (the
//! client-go exec plugin that hands kubectl a fresh kubegate access token).
//!
//! Neither needs kubegate's server configuration. Both write messages to standard
//! error; only `credential` writes to standard output, and only the ExecCredential.
//!
//! The layers: [`client`] (the HTTP client, its trust, the server's endpoints), [`flow`]
//! (the browser and the device logins), [`cache`] (the tokens kept per server, under a
//! lock), [`kubeconfig`] (the merge into the user's file), and [`credential`] (the
//! plugin's decisions), assembled here.

pub mod cache;
pub mod client;
pub mod credential;
pub mod flow;
pub mod kubeconfig;

use std::path::PathBuf;

/// An SSO client failure, with a message that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// Something about the command line or the environment.
    #[error("{0}")]
    Input(String),
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// What was being done ("read", "write", "lock", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig file is not one kubegate can merge into; it was left as it was.
    #[error("the kubeconfig {} is not a valid kubeconfig ({reason}); kubegate left it unchanged: fix it, or pass another file with --kubeconfig", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The kubegate server could not be reached.
    #[error("cannot reach the kubegate server at {url}: {detail}; check --server, the network and HTTPS_PROXY/NO_PROXY")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The cause and its causes (reqwest's own message alone says little).
        detail: String,
    },
    /// The server answered something unexpected.
    #[error("the kubegate server answered {url} with HTTP {status}: {body}")]
    Server {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer (shortened).
        body: String,
    },
    /// The server refused a token request (an OAuth error answer).
    #[error("the kubegate server refused the login: {error}{}", if description.is_empty() { String::new() } else { format!(" ({description})") })]
    Refused {
        /// The OAuth error code (`invalid_grant`, `access_denied`, ...).
        error: String,
        /// The server's description.
        description: String,
    },
    /// The login did not finish (timed out, state mismatch, browser error).
    #[error("the login did not finish: {0}")]
    Login(String),
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// The session ended and the plugin may not ask the user to log in again.
    #[error("your kubegate session has ended or was revoked; run: {command}")]
    SessionEnded {
        /// The command that logs in again.
        command: String,
    },
}

/// The options of `kubegate login`.
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    /// The kubegate server's base URL.
    pub server: String,
    /// The org whose clusters to write (all the user may see when `None`).
    pub org: Option<u64>,
    /// The kubeconfig to merge into (else `$KUBECONFIG`'s first path, else
    /// `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// How to trust the server.
    pub trust: client::TrustFlags,
    /// Use the device flow instead of the browser.
    pub no_browser: bool,
    /// The identity provider to log in with (passed to the server).
    pub provider: Option<String>,
}

/// The options of `kubegate credential`.
#[derive(Debug, Clone, Default)]
pub struct CredentialOptions {
    /// The kubegate server's base URL.
    pub server: String,
    /// How to trust the server (else the cluster's data from kubectl, else the system).
    pub trust: client::TrustFlags,
    /// Log in again with the device flow instead of the browser.
    pub no_browser: bool,
}

/// A current-thread tokio runtime for one SSO command.
fn runtime() -> Result<tokio::runtime::Runtime, SsoError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SsoError::Input(format!("cannot start the async runtime: {e}")))
}

/// Runs `kubegate login`; prints its summary or its error to standard error and
/// returns the exit code.
pub fn login_main(options: LoginOptions) -> i32 {
    let result = runtime().and_then(|rt| rt.block_on(credential::login(&options)));
    match result {
        Ok(summary) => {
            eprintln!("{summary}");
            0
        }
        Err(e) => {
            eprintln!("kubegate: {e}");
            1
        }
    }
}

/// Runs `kubegate credential`; prints the ExecCredential to standard output (and
/// nothing else), messages to standard error, and returns the exit code.
pub fn credential_main(options: CredentialOptions) -> i32 {
    let exec_info = std::env::var("KUBERNETES_EXEC_INFO").ok();
    let result = runtime()
        .and_then(|rt| rt.block_on(credential::credential(&options, exec_info.as_deref())));
    match result {
        Ok(json) => {
            // not println!: it panics when kubectl has closed the pipe
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{json}").and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("kubegate: cannot write the credential to standard output: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("kubegate: {e}");
            1
        }
    }
}
