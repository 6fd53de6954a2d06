//! A throw-away PostgreSQL server with TLS on, for the tests of `sslmode` and
//! `sslrootcert`: its own cluster (`initdb`) in a temporary directory, on a free port of
//! 127.0.0.1, with a certificate for `localhost` and `127.0.0.1` from a CA made here
//! ([`TestPki`]). It leaves the machine's shared server alone, and stops on drop.
//!
//! initdb refuses to run as root, so when the tests are root the server's commands run
//! as the `postgres` user (`runuser -u postgres --`), in a directory it owns.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::certs::TestPki;

/// A running PostgreSQL with `ssl = on`; trust authentication for the user `postgres`
/// over TLS (`hostssl`) and plain TCP (`host`, for `prefer` and `disable`) from
/// 127.0.0.1, and over its Unix socket.
pub struct TlsPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed the server's certificate, as a PEM file.
    pub ca_file: PathBuf,
    /// Another CA, which signed nothing the server holds, as a PEM file.
    pub wrong_ca_file: PathBuf,
}

fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("this test needs PostgreSQL's server programs in /usr/lib/postgresql/*/bin")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    // the newest version
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("this test needs initdb in /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TlsPostgres {
    /// Makes the certificates, the cluster, and starts the server (a few seconds).
    pub fn start() -> TlsPostgres {
        TlsPostgres::start_with(true)
    }

    /// The same server with `ssl = off`: it answers plain TCP only.
    pub fn start_without_tls() -> TlsPostgres {
        TlsPostgres::start_with(false)
    }

    fn start_with(ssl: bool) -> TlsPostgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new();
        let wrong = TestPki::new();
        let ca_file = dir.path().join("ca.pem");
        let wrong_ca_file = dir.path().join("wrong-ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        std::fs::write(&wrong_ca_file, &wrong.ca_pem).unwrap();
        let server = TlsPostgres {
            dir,
            bin,
            port: free_port(),
            ca_file,
            wrong_ca_file,
        };
        let root = server.dir.path();
        std::fs::write(root.join("server.crt"), &pki.server_cert_pem).unwrap();
        std::fs::write(root.join("server.key"), &pki.server_key_pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if is_root() {
            // the server runs as postgres: it owns its directory, key and all
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(root)
                .status()
                .unwrap();
            assert!(status.success(), "chown the server's directory to postgres");
        }
        let data = root.join("data");
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n\
             ssl = {ssl}\nssl_cert_file = '{root}/server.crt'\nssl_key_file = '{root}/server.key'\n\
             fsync = off\nmax_connections = 50\n",
            port = server.port,
            root = root.display(),
            ssl = if ssl { "on" } else { "off" }
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let log = root.join("server.log");
        server.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        server
    }

    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&exe);
            cmd
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// A key=value connection string to `host` (resolved as `hostaddr` 127.0.0.1, so
    /// that any name can be tried against the certificate), with `extra` appended.
    pub fn key_value_url(&self, host: &str, extra: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres {extra}",
            self.port
        )
    }

    /// A URL connection string to `localhost`, with the query `query`.
    pub fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?{query}",
            self.port
        )
    }

    /// Runs `sql` over the server's Unix socket and returns the first column of every row,
    /// as text.
    pub fn query(&self, sql: &str) -> Vec<String> {
        let url = format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        );
        let sql = sql.to_string();
        super::gateway::block_on(move || async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("the test's PostgreSQL answers on its socket");
            actix_rt::spawn(connection);
            client
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<_, Option<String>>(0).unwrap_or_default())
                .collect()
        })
    }

    /// Whether each TCP client connected now uses TLS (`true`/`false`, one per
    /// connection).
    pub fn tcp_connections_over_tls(&self) -> Vec<String> {
        self.query(
            "SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.client_addr IS NOT NULL AND a.backend_type = 'client backend'",
        )
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&exe);
            cmd
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .output();
    }
}
