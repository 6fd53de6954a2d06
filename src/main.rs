//! The `kubegate` command: `serve`, and the tools that manage what it serves.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kubegate::config::{Config, Scheduling, DEFAULT_PATH};
use kubegate::http::services::Stores;
use kubegate::http::{Gateway, Listeners};

#[derive(Parser)]
#[command(
    name = "kubegate",
    version,
    about = "An authenticating, authorizing and auditing gateway in front of Kubernetes API servers"
)]
struct Cli {
    /// Configuration file (the embedded defaults when the default path does not exist).
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway.
    Serve {
        /// Address to serve plain HTTP on (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address to serve HTTPS on (overrides server.listen_tls).
        #[arg(long)]
        listen_tls: Option<SocketAddr>,
    },
    /// Issue API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage clusters.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Manage org members and their roles.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Check the configuration and the policy, then exit.
    CheckConfig,
    /// Log in to a kubegate server (in the browser, or on any device with --no-browser)
    /// and write its clusters to your kubeconfig, with `kubegate credential` as their
    /// credential plugin. Needs no kubegate configuration.
    Login {
        /// The kubegate server, e.g. https://kubegate.example.com.
        #[arg(long)]
        server: String,
        /// Write only this org's clusters (default: all those you may reach).
        #[arg(long)]
        org: Option<u64>,
        /// The kubeconfig to write (default: the first path of $KUBECONFIG, else
        /// ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Log in on any device with a code instead of opening a browser here.
        #[arg(long)]
        no_browser: bool,
        /// The identity provider to log in with, when the server has several.
        #[arg(long)]
        provider: Option<String>,
    },
    /// The kubectl credential plugin (client.authentication.k8s.io exec): prints an
    /// ExecCredential with a kubegate access token, refreshing or logging in again when
    /// needed. `kubegate login` writes it into the kubeconfig.
    Credential {
        /// The kubegate server, e.g. https://kubegate.example.com.
        #[arg(long)]
        server: String,
        #[command(flatten)]
        trust: TrustArgs,
        /// Log in again on any device with a code instead of opening a browser here.
        #[arg(long)]
        no_browser: bool,
    },
}

/// How `login` and `credential` trust the kubegate server (as kubectl's flags do).
#[derive(clap::Args)]
struct TrustArgs {
    /// Trust the CA certificates of this PEM file instead of the system's.
    #[arg(long)]
    certificate_authority: Option<PathBuf>,
    /// Do not verify the server's certificate (insecure: anyone on the way can read your
    /// tokens).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
}

impl From<TrustArgs> for kubegate::cli::sso::client::TrustFlags {
    fn from(args: TrustArgs) -> Self {
        Self {
            certificate_authority: args.certificate_authority,
            insecure_skip_tls_verify: args.insecure_skip_tls_verify,
        }
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (the token alone, on one line).
    Create {
        /// The user the token speaks for (its `sub`).
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. 1h, 24h, 30d (default: auth.default_ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// A name for the token.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Add a cluster from a kubeconfig and print its id.
    Add {
        #[arg(long)]
        org: u64,
        #[arg(long)]
        name: String,
        /// The kubeconfig file (credentials must be embedded, not file references).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The context to use (default: current-context).
        #[arg(long)]
        context: Option<String>,
        /// Send each request as the person (Impersonate-User and Impersonate-Group):
        /// the kubeconfig's credentials then need only the right to impersonate
        /// (deploy/target-cluster/impersonator-rbac.yaml).
        #[arg(long)]
        impersonate: bool,
        /// Record exec and attach sessions as asciicast files: off, tty (those with a
        /// terminal) or all.
        #[arg(long, default_value = "off")]
        record_sessions: kubegate_actors::store::RecordSessions,
    },
    /// List an org's clusters.
    List {
        #[arg(long)]
        org: u64,
    },
    /// Remove a cluster.
    Remove {
        #[arg(long)]
        org: u64,
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Give a user a role in an org (replacing their earlier role).
    Add {
        #[arg(long)]
        org: u64,
        #[arg(long)]
        user: String,
        /// A role of the policy: admin or member with the default policy.
        #[arg(long)]
        role: String,
    },
    /// Remove a user from an org.
    Remove {
        #[arg(long)]
        org: u64,
        #[arg(long)]
        user: String,
    },
    /// List memberships.
    List {
        #[arg(long)]
        org: Option<u64>,
    },
}

/// Standard error for the log, written in batches: env_logger flushes after every
/// record, which at one access line per request is a system call per request. Records
/// are kept until 32 KiB are pending or [`LOG_FLUSH`] has passed (a thread flushes what
/// waits), so a line reaches the log at most that late; an error or a warning is written
/// at once, with what waits before it.
#[derive(Clone, Default)]
struct BatchedStderr(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

/// The longest a log line waits.
const LOG_FLUSH: Duration = Duration::from_millis(100);

impl BatchedStderr {
    fn write_out(buf: &mut Vec<u8>) -> std::io::Result<()> {
        if !buf.is_empty() {
            let result = std::io::stderr().lock().write_all(buf);
            buf.clear();
            result?;
        }
        Ok(())
    }

    /// Writes what waits.
    fn flush_now(&self) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = Self::write_out(&mut buf);
    }
}

impl Write for BatchedStderr {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend_from_slice(data);
        let urgent = data
            .windows(6)
            .take(40)
            .any(|w| w == b" ERROR" || w == b" WARN ");
        if urgent || buf.len() >= 32 << 10 {
            Self::write_out(&mut buf)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // env_logger calls this after every record: the flusher thread does it instead
        Ok(())
    }
}

/// mimalloc instead of glibc's malloc: fewer cycles per allocation on the request path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let stderr = BatchedStderr::default();
    // env_logger's own format, written without styles; with styles left to it, every
    // record went through an ANSI-stripping writer (stderr is not a terminal), a cost
    // per access line
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Pipe(Box::new(stderr.clone())))
        .write_style(env_logger::WriteStyle::Always)
        .format(|buf, record| {
            // `[{time} {level:<5} {target}] {message}`, put together by hand: the
            // timestamp (env_logger's, RFC 3339 to the second) is formatted once a second
            // per thread, not for every access line
            let second = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            buf.write_all(b"[")?;
            buf.write_all(kubegate::gate::audit::second_text(second).as_bytes())?;
            buf.write_all(match record.level() {
                log::Level::Error => b"Z ERROR ",
                log::Level::Warn => b"Z WARN  ",
                log::Level::Info => b"Z INFO  ",
                log::Level::Debug => b"Z DEBUG ",
                log::Level::Trace => b"Z TRACE ",
            })?;
            buf.write_all(record.target().as_bytes())?;
            buf.write_all(b"] ")?;
            match record.args().as_str() {
                Some(message) => buf.write_all(message.as_bytes())?,
                None => buf.write_fmt(*record.args())?,
            }
            buf.write_all(b"\n")
        })
        .init();
    {
        let stderr = stderr.clone();
        // named, so that it can be told apart (it is the one thread started before
        // `server.scheduling` is applied, and keeps the policy kubegate was started with)
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(LOG_FLUSH);
                stderr.flush_now();
            })
            .expect("a thread to flush the log");
    }
    let code = run_main(&stderr);
    stderr.flush_now();
    std::process::exit(code);
}

fn run_main(log: &BatchedStderr) -> i32 {
    let cli = Cli::parse();
    // the kubectl SSO client: no configuration, no server, its own small runtime
    match cli.command {
        Command::Login {
            server,
            org,
            kubeconfig,
            trust,
            no_browser,
            provider,
        } => {
            return kubegate::cli::sso::login_main(kubegate::cli::sso::LoginOptions {
                server,
                org,
                kubeconfig,
                trust: trust.into(),
                no_browser,
                provider,
            })
        }
        Command::Credential {
            server,
            trust,
            no_browser,
        } => {
            return kubegate::cli::sso::credential_main(kubegate::cli::sso::CredentialOptions {
                server,
                trust: trust.into(),
                no_browser,
            })
        }
        _ => {}
    }
    // serve and check-config check everything the configuration names (files, secrets)
    // and report every problem at once, with the same messages; the other commands need
    // only the file to be right
    let loaded = match cli.command {
        Command::Serve { .. } | Command::CheckConfig => Config::load_checked(&cli.config),
        _ => Config::load(&cli.config),
    };
    let result = loaded.map_err(anyhow::Error::from).and_then(|config| {
        if let Command::Serve { .. } = cli.command {
            schedule(config.server.scheduling);
        }
        actix_web::rt::System::new().block_on(run(cli.command, config))
    });
    if let Err(e) = result {
        // the message and its causes, without a backtrace: this is for people
        log.flush_now();
        eprintln!("error: {e:#}");
        return 1;
    }
    0
}

/// Sets `server.scheduling` on the main thread, before the actix system, its workers
/// and the Tokio blocking threads exist: they inherit it. A refusal is logged, not fatal.
fn schedule(policy: Scheduling) {
    use kubegate::http::scheduling::{apply, Applied};
    match (policy, apply(policy)) {
        (Scheduling::Normal, _) => log::info!(
            "threads keep the scheduling policy kubegate was started with \
             (server.scheduling = \"normal\")"
        ),
        (Scheduling::Batch, Ok(Applied::Set)) => {
            log::info!("threads scheduled as SCHED_BATCH (server.scheduling = \"batch\")")
        }
        (Scheduling::Batch, Ok(Applied::Kept(started))) => log::info!(
            "threads keep {started}, which kubegate was started under, rather than \
             SCHED_BATCH (server.scheduling = \"batch\" changes SCHED_OTHER only)"
        ),
        (Scheduling::Batch, Err(e)) => log::warn!(
            "server.scheduling = \"batch\": could not switch to SCHED_BATCH ({e}); the \
             threads keep the policy kubegate was started with"
        ),
    }
}

async fn run(command: Command, mut config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { listen, listen_tls } => {
            if listen.is_some() {
                config.server.listen = listen;
            }
            if listen_tls.is_some() {
                config.server.listen_tls = listen_tls;
            }
            let listeners = Listeners::bind(&config)?;
            let http = listeners
                .http
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?;
            let https = listeners
                .https
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?;
            let gateway = Gateway::bind(&config, listeners).await?;
            if let Some(address) = http {
                log::info!("kubegate listening on http://{address}");
            }
            if let Some(address) = https {
                log::info!(
                    "kubegate listening on https://{address} (certificate {})",
                    config.server.tls_cert_file.display()
                );
            }
            actix_rt::spawn(stop_on_signal(gateway.shutdown()));
            gateway.run().await?;
        }
        Command::Token {
            command: TokenCommand::Create { user, ttl, name },
        } => {
            let issued = kubegate::cli::create_token(&config, &user, ttl, &name).await?;
            println!("{}", issued.token);
        }
        Command::Cluster { command } => match command {
            ClusterCommand::Add {
                org,
                name,
                kubeconfig,
                context,
                impersonate,
                record_sessions,
            } => {
                let text = std::fs::read_to_string(&kubeconfig).with_context(|| {
                    format!("cannot read the kubeconfig {}", kubeconfig.display())
                })?;
                let new = kubegate::clusters::NewCluster {
                    name: &name,
                    kubeconfig: &text,
                    context: context.as_deref(),
                    impersonate,
                    record_sessions,
                };
                let record = kubegate::cli::add_cluster(&config, org, new).await?;
                println!("{}", record.id);
            }
            ClusterCommand::List { org } => {
                for record in Stores::open(&config).await?.clusters.list(org).await? {
                    let impersonates = if record.impersonate {
                        "impersonate"
                    } else {
                        "-"
                    };
                    println!(
                        "{}\t{}\t{}\t{impersonates}",
                        record.id, record.name, record.created_at
                    );
                }
            }
            ClusterCommand::Remove { org, id } => {
                if !Stores::open(&config)
                    .await?
                    .clusters
                    .delete(org, id)
                    .await?
                {
                    anyhow::bail!("org {org} has no cluster {id}");
                }
            }
        },
        Command::Member { command } => match command {
            MemberCommand::Add { org, user, role } => {
                kubegate::cli::set_member(&config, org, &user, &role).await?;
            }
            MemberCommand::Remove { org, user } => {
                if !Stores::open(&config)
                    .await?
                    .members
                    .remove(org, &user)
                    .await?
                {
                    anyhow::bail!("{user} is not a member of org {org}");
                }
            }
            MemberCommand::List { org } => {
                for m in Stores::open(&config).await?.members.all().await? {
                    if org.is_none_or(|o| o == m.org) {
                        println!("{}\t{}\t{}", m.org, m.user, m.role);
                    }
                }
            }
        },
        Command::Login { .. } | Command::Credential { .. } => {
            // run_main runs them before the configuration is loaded
            anyhow::bail!("kubegate login and credential do not run with a configuration")
        }
        Command::CheckConfig => {
            let summary = kubegate::cli::check_policy(&config).await?;
            println!("configuration OK\n{summary}");
        }
    }
    Ok(())
}

/// SIGTERM or SIGINT: stop accepting connections, let in-flight requests run for up to
/// the grace, then [`Gateway::run`] hands the workers' audit events to the auditor,
/// flushes them and returns, and the process exits 0. A second signal stops at once.
///
/// kubegate handles these signals itself rather than leaving them to actix-server,
/// which stops the whole actix system shortly after the HTTP server, racing the audit
/// flush that must come after it.
async fn stop_on_signal(shutdown: kubegate::http::Shutdown) {
    use actix_rt::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot listen for SIGTERM and SIGINT ({e}); stop kubegate with SIGKILL");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    log::info!(
        "{name}: no new connections; in-flight requests get up to {}, then the audit trail is flushed",
        humantime::format_duration(shutdown.grace())
    );
    let now = shutdown.clone();
    actix_rt::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        log::warn!("second signal: stopping at once");
        now.now();
    });
    shutdown.graceful().await;
}
