//! A real OpenLDAP server for login tests: Debian's `/usr/sbin/slapd` (packages `slapd`
//! and `ldap-utils`) with a throw-away `slapd.conf`, an mdb database and the `memberof`
//! overlay in a temporary directory, on a free port of 127.0.0.1, as the current user.
//!
//! The directory (`dc=example,dc=org`):
//!
//! - `uid=alice,ou=people` (password `alice-secret`), in `kube-admins` and `developers`;
//! - `uid=bob,ou=people` (password `bob-secret`), in `kube-viewers`;
//! - `cn=reader,dc=example,dc=org` (password `reader-secret`), a service account;
//! - the groups are `groupOfNames` under `ou=groups`; `memberOf` on the users is kept by
//!   the overlay.
//!
//! Anonymous clients may search and read everything but passwords. [`Slapd::start_tls`]
//! adds a certificate from [`TestPki`] for StartTLS on the same port and an `ldaps://`
//! port.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubegate::config::ldap::LdapSettings;

use super::certs::TestPki;

/// The base DN of the test directory.
pub const BASE_DN: &str = "dc=example,dc=org";
/// Where the users are.
pub const PEOPLE_DN: &str = "ou=people,dc=example,dc=org";
/// Where the groups are.
pub const GROUPS_DN: &str = "ou=groups,dc=example,dc=org";
/// The service account that may search.
pub const READER_DN: &str = "cn=reader,dc=example,dc=org";
/// Its password.
pub const READER_PASSWORD: &str = "reader-secret";

const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PASSWORD: &str = "admin-secret";

/// A running slapd, killed on drop.
pub struct Slapd {
    /// `ldap://127.0.0.1:PORT`
    url: String,
    /// `ldaps://127.0.0.1:PORT` when started with TLS.
    ldaps_url: Option<String>,
    /// The base DN (`dc=example,dc=org`).
    pub base: String,
    /// The CA of the server's certificate (PEM), when started with TLS.
    pub ca_file: Option<PathBuf>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn slapd_binary() -> PathBuf {
    std::env::var_os("SLAPD")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/sbin/slapd".into())
}

fn config(dir: &Path, tls: bool) -> String {
    let d = dir.display();
    let mut conf = format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
"
    );
    if tls {
        conf.push_str(&format!(
            "TLSCACertificateFile {d}/ca.crt
TLSCertificateFile {d}/server.crt
TLSCertificateKeyFile {d}/server.key
"
        ));
    }
    conf.push_str(&format!(
        "database mdb
maxsize 10485760
suffix \"{BASE_DN}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PASSWORD}
directory {d}/db
overlay memberof
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"
    ));
    conf
}

const DATA: &str = "dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: cn=reader,dc=example,dc=org
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
userPassword: reader-secret

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice Example
sn: Example
mail: alice@example.org
userPassword: alice-secret

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob Example
sn: Example
mail: bob@example.org
userPassword: bob-secret

dn: cn=kube-admins,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: kube-admins
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=developers,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: developers
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=kube-viewers,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: kube-viewers
member: uid=bob,ou=people,dc=example,dc=org
";

impl Slapd {
    /// A plain `ldap://` server.
    pub fn start() -> Slapd {
        Slapd::launch(false)
    }

    /// A server with a certificate for `127.0.0.1` and `localhost` from a fresh
    /// [`TestPki`]: StartTLS on [`url`](Self::url), and [`ldaps_url`](Self::ldaps_url).
    /// The CA is in [`ca_file`](Self::ca_file).
    pub fn start_tls() -> Slapd {
        Slapd::launch(true)
    }

    /// Starts slapd and loads the data, on fresh ports each try: a port found free can be
    /// taken by another test before slapd binds it (then slapd exits, or a connection
    /// reaches the other test's listener and `ldapadd` fails), so a failed start is
    /// tried again, up to three times, and the last failure is the panic.
    fn launch(tls: bool) -> Slapd {
        let mut tries = 0;
        loop {
            tries += 1;
            match Slapd::try_launch(tls) {
                Ok(slapd) => return slapd,
                Err(e) if tries >= 3 => panic!("{e}"),
                Err(e) => eprintln!("slapd start {tries} failed, trying other ports: {e}"),
            }
        }
    }

    fn try_launch(tls: bool) -> Result<Slapd, String> {
        let binary = slapd_binary();
        assert!(
            binary.exists(),
            "this test needs OpenLDAP's slapd (Debian: apt-get install slapd ldap-utils) or $SLAPD"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let mut ca_file = None;
        if tls {
            let pki = TestPki::new();
            std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).unwrap();
            std::fs::write(dir.path().join("server.crt"), &pki.server_cert_pem).unwrap();
            std::fs::write(dir.path().join("server.key"), &pki.server_key_pem).unwrap();
            ca_file = Some(dir.path().join("ca.crt"));
        }
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, config(dir.path(), tls)).unwrap();
        std::fs::write(dir.path().join("data.ldif"), DATA).unwrap();

        let port = free_port();
        let url = format!("ldap://127.0.0.1:{port}");
        let mut listeners = format!("{url}/");
        let ldaps_url = tls.then(|| format!("ldaps://127.0.0.1:{}", free_port()));
        if let Some(ldaps) = &ldaps_url {
            listeners.push_str(&format!(" {ldaps}/"));
        }
        // -d 0: stay in the foreground (no fork), so that the child is slapd itself
        let child = Command::new(&binary)
            .args(["-d", "0", "-f"])
            .arg(&conf)
            .args(["-h", &listeners])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("slapd.log")).unwrap())
            .spawn()
            .expect("slapd starts");
        let mut slapd = Slapd {
            url,
            ldaps_url,
            base: BASE_DN.into(),
            ca_file,
            child: Some(child),
            dir,
        };
        slapd.wait_listening(port)?;
        let added = Command::new("ldapadd")
            .args([
                "-x",
                "-H",
                &slapd.url,
                "-D",
                ROOT_DN,
                "-w",
                ROOT_PASSWORD,
                "-f",
            ])
            .arg(slapd.dir.path().join("data.ldif"))
            .stdout(Stdio::null())
            .output()
            .expect("ldapadd runs (Debian: apt-get install ldap-utils)");
        if !added.status.success() {
            // dropping `slapd` stops it
            return Err(format!(
                "ldapadd failed: {}",
                String::from_utf8_lossy(&added.stderr)
            ));
        }
        Ok(slapd)
    }

    /// Waits until `port` takes connections and slapd still runs.
    fn wait_listening(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listening = TcpStream::connect(("127.0.0.1", port)).is_ok();
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let err =
                    std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default();
                return Err(format!("slapd exited ({status}): {err}"));
            }
            if listening {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("slapd did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ldap://127.0.0.1:PORT` (StartTLS-capable with [`start_tls`](Self::start_tls)).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `ldaps://127.0.0.1:PORT` with [`start_tls`](Self::start_tls); panics otherwise.
    pub fn ldaps_url(&self) -> &str {
        self.ldaps_url
            .as_deref()
            .expect("the server was started with Slapd::start_tls")
    }

    /// Settings for this server with the defaults: anonymous search under `ou=people`
    /// with `(uid={username})`, groups from `memberOf`, a 5 s timeout; with TLS, the
    /// test CA as `ca_file` (StartTLS off: set `start_tls` or use the `ldaps_url`).
    pub fn settings(&self) -> LdapSettings {
        let mut settings = LdapSettings::new(self.url.clone(), PEOPLE_DN);
        settings.ca_file = self.ca_file.clone();
        settings
    }

    /// [`settings`](Self::settings) searching as the service account
    /// `cn=reader,dc=example,dc=org`, its password in a file.
    pub fn settings_with_service_account(&self) -> LdapSettings {
        let file = self.dir.path().join("reader-password");
        std::fs::write(&file, format!("{READER_PASSWORD}\n")).unwrap();
        let mut settings = self.settings();
        settings.bind_dn = Some(READER_DN.into());
        settings.bind_password_file = Some(file);
        settings
    }

    /// Stops the server: from now on its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
