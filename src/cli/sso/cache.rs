//! The tokens kept per kubegate server: one JSON file per server under
//! `$XDG_CACHE_HOME/kubegate/` (else `~/.cache/kubegate/`), the directory 0700 and the
//! file 0600. An exclusive lock on a `.lock` file next to it is held while the tokens
//! are read, refreshed and written, so that parallel kubectl runs never spend one
//! refresh token twice (the server takes a reused refresh token for a stolen one and
//! ends the whole session).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SsoError;

/// The tokens of one server. (Its `Debug` leaves the tokens out.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedTokens {
    /// The normalized server URL.
    pub server: String,
    /// Who logged in.
    pub user: String,
    /// The access token.
    pub access_token: String,
    /// When the access token expires, in seconds since the epoch.
    pub expires_at: u64,
    /// The refresh token (the newest: the server rotates it at every refresh).
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for CachedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTokens")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// The cache directory: `$XDG_CACHE_HOME/kubegate`, else `$HOME/.cache/kubegate`.
pub fn cache_dir() -> Result<PathBuf, SsoError> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("kubegate"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            SsoError::Input(
                "neither XDG_CACHE_HOME nor HOME is set; set one so kubegate can keep its tokens"
                    .into(),
            )
        })?;
    Ok(PathBuf::from(home).join(".cache").join("kubegate"))
}

/// The cache of one server, in `dir`.
#[derive(Debug, Clone)]
pub struct TokenCache {
    path: PathBuf,
    lock_path: PathBuf,
    dir: PathBuf,
}

/// The exclusive lock of one server's cache; released when dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl TokenCache {
    /// The cache of `server` (normalized) in `dir`: the file is named after the hex
    /// SHA-256 of the URL.
    pub fn new(dir: &Path, server: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, server.as_bytes());
        let name: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Self {
            path: dir.join(format!("{name}.json")),
            lock_path: dir.join(format!("{name}.lock")),
            dir: dir.to_path_buf(),
        }
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// Creates the directory (0700) when missing.
    fn ensure_dir(&self) -> Result<(), SsoError> {
        if !self.dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|source| SsoError::File {
                    action: "create the cache directory",
                    path: self.dir.clone(),
                    source,
                })?;
            // the mode of the last directory, whatever the umask did to it
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| SsoError::File {
                    action: "restrict the cache directory",
                    path: self.dir.clone(),
                    source,
                },
            )?;
        }
        Ok(())
    }

    /// Takes the exclusive lock, waiting for another kubegate that holds it.
    pub fn lock(&self) -> Result<CacheLock, SsoError> {
        self.ensure_dir()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|source| SsoError::File {
                action: "open the lock file",
                path: self.lock_path.clone(),
                source,
            })?;
        file.lock().map_err(|source| SsoError::File {
            action: "lock",
            path: self.lock_path.clone(),
            source,
        })?;
        Ok(CacheLock { _file: file })
    }

    /// The cached tokens; `None` when there are none (or the file is unreadable JSON,
    /// which a new login replaces).
    pub fn read(&self, _lock: &CacheLock) -> Result<Option<CachedTokens>, SsoError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SsoError::File {
                action: "read the token cache",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes the tokens (0600, through a temporary file and a rename).
    pub fn write(&self, _lock: &CacheLock, tokens: &CachedTokens) -> Result<(), SsoError> {
        self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(tokens)
            .map_err(|e| SsoError::Input(format!("cannot encode the token cache: {e}")))?;
        write_atomically(&self.path, &json, "write the token cache")
    }
}

/// Writes `data` to `path` with mode 0600 through a temporary file in the same
/// directory and a rename, so that a reader sees the old file or the new one.
pub fn write_atomically(path: &Path, data: &[u8], action: &'static str) -> Result<(), SsoError> {
    let err = |source| SsoError::File {
        action,
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&temp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> CachedTokens {
        CachedTokens {
            server: "https://kg.example".into(),
            user: "ldap:alice".into(),
            access_token: "A".into(),
            expires_at: 1_796_512_500,
            refresh_token: Some("R".into()),
        }
    }

    #[test]
    fn cache_is_private_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache").join("kubegate");
        let cache = TokenCache::new(&dir, "https://kg.example");
        let lock = cache.lock().unwrap();
        assert_eq!(cache.read(&lock).unwrap(), None);
        cache.write(&lock, &tokens()).unwrap();
        assert_eq!(cache.read(&lock).unwrap(), Some(tokens()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(cache.path()), 0o600);
        assert_eq!(mode(cache.lock_path()), 0o600);
        let name = cache
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(name.len(), 64 + ".json".len());
        // nothing else is left in the directory (no temporary files)
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        let other = TokenCache::new(&dir, "https://kg.example:8443");
        assert_ne!(other.path(), cache.path());
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(tmp.path(), "https://kg.example");
        let lock = cache.lock().unwrap();
        let try_other = || {
            File::options()
                .write(true)
                .open(cache.lock_path())
                .unwrap()
                .try_lock()
        };
        assert!(matches!(
            try_other(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(lock);
        assert!(try_other().is_ok());
        // a second lock waits for the first to go
        let first = cache.lock().unwrap();
        let waiter = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let _second = cache.lock().unwrap();
                started.elapsed()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(first);
        assert!(waiter.join().unwrap() >= std::time::Duration::from_millis(150));
    }
}
