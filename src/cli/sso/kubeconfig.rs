//! The kubeconfig the server hands out, adjusted for this machine (the plugin's path,
//! the trust of the login) and merged into the user's kubeconfig file. The user's file
//! is handled as generic YAML so that fields kubegate does not know survive.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::cache::write_atomically;
use super::SsoError;

/// The named lists of a kubeconfig that the merge replaces entries of, by name.
const LISTS: [&str; 3] = ["clusters", "contexts", "users"];

/// The kubeconfig to write to: `explicit`, else the first path of `$KUBECONFIG`, else
/// `~/.kube/config`.
pub fn kubeconfig_path(explicit: Option<&Path>) -> Result<PathBuf, SsoError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        if let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty()) {
            return Ok(first);
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            SsoError::Input(
                "HOME is not set; pass the kubeconfig to write with --kubeconfig".into(),
            )
        })?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

/// How the served kubeconfig is adjusted for this machine.
#[derive(Debug, Clone, Default)]
pub struct Adjustments {
    /// The plugin's command (the running kubegate's absolute path).
    pub command: Option<String>,
    /// `--no-browser` is appended to the plugin's arguments.
    pub no_browser: bool,
    /// The CA certificates (PEM) to put in every cluster.
    pub certificate_authority_pem: Option<Vec<u8>>,
    /// `insecure-skip-tls-verify: true` in every cluster.
    pub insecure_skip_tls_verify: bool,
}

/// Parses the served kubeconfig (YAML) and adjusts it.
pub fn adjust(served: &str, adjustments: &Adjustments) -> Result<Value, SsoError> {
    let mut config: Value = serde_saphyr::from_str(served).map_err(|e| {
        SsoError::Login(format!(
            "the kubeconfig the kubegate server sent is not YAML: {e}"
        ))
    })?;
    check_shape(&config).map_err(|reason| {
        SsoError::Login(format!(
            "the kubeconfig the kubegate server sent is not a kubeconfig: {reason}"
        ))
    })?;
    for entry in entries_mut(&mut config, "users") {
        if let Some(exec) = entry
            .get_mut("user")
            .and_then(|u| u.get_mut("exec"))
            .and_then(Value::as_object_mut)
        {
            if let Some(command) = &adjustments.command {
                exec.insert("command".into(), Value::String(command.clone()));
            }
            if adjustments.no_browser {
                let args = exec
                    .entry("args")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Some(args) = args.as_array_mut() {
                    if !args.iter().any(|a| a == "--no-browser") {
                        args.push(Value::String("--no-browser".into()));
                    }
                }
            }
        }
    }
    for entry in entries_mut(&mut config, "clusters") {
        if let Some(cluster) = entry.get_mut("cluster").and_then(Value::as_object_mut) {
            if adjustments.insecure_skip_tls_verify {
                cluster.remove("certificate-authority-data");
                cluster.remove("certificate-authority");
                cluster.insert("insecure-skip-tls-verify".into(), Value::Bool(true));
            } else if let Some(pem) = &adjustments.certificate_authority_pem {
                cluster.remove("certificate-authority");
                cluster.remove("insecure-skip-tls-verify");
                cluster.insert(
                    "certificate-authority-data".into(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(pem)),
                );
            }
        }
    }
    Ok(config)
}

/// The names of the contexts of a kubeconfig.
pub fn context_names(config: &Value) -> Vec<String> {
    config
        .get("contexts")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The servers the exec plugin is told to ask (`--server URL` in its arguments).
pub fn plugin_servers(config: &Value) -> Vec<String> {
    let mut servers: Vec<String> = Vec::new();
    for user in config
        .get("users")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(args) = user["user"]["exec"]["args"].as_array() else {
            continue;
        };
        for pair in args.windows(2) {
            if pair[0] == "--server" {
                if let Some(server) = pair[1].as_str() {
                    if !servers.iter().any(|s| s == server) {
                        servers.push(server.to_string());
                    }
                }
            }
        }
    }
    servers
}

/// The entries of the list `key`, to change in place.
fn entries_mut<'a>(config: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    config
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Why `config` is not a kubeconfig, if it is not.
fn check_shape(config: &Value) -> Result<(), String> {
    let Some(map) = config.as_object() else {
        return Err("its top level is not a mapping".into());
    };
    if let Some(kind) = map.get("kind").filter(|k| !k.is_null()) {
        if kind != "Config" {
            return Err(format!("its kind is {kind}, not Config"));
        }
    }
    for key in LISTS {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                if let Some(i) = list
                    .iter()
                    .position(|e| e.get("name").and_then(Value::as_str).is_none())
                {
                    return Err(format!("entry {i} of {key} has no name"));
                }
            }
            Some(_) => return Err(format!("its {key} is not a list")),
        }
    }
    if let Some(current) = map.get("current-context") {
        if !current.is_null() && !current.is_string() {
            return Err("its current-context is not a string".into());
        }
    }
    Ok(())
}

/// An empty kubeconfig.
fn empty_config() -> Value {
    let mut map = Map::new();
    map.insert("apiVersion".into(), "v1".into());
    map.insert("kind".into(), "Config".into());
    for key in LISTS {
        map.insert(key.into(), Value::Array(Vec::new()));
    }
    map.insert("preferences".into(), Value::Object(Map::new()));
    Value::Object(map)
}

/// Parses the user's kubeconfig text (`path` for messages): an empty file, or one of
/// only comments, is an empty kubeconfig.
pub fn parse_existing(path: &Path, text: &str) -> Result<Value, SsoError> {
    let invalid = |reason: String| SsoError::Kubeconfig {
        path: path.to_path_buf(),
        reason,
    };
    if text.trim().is_empty() {
        return Ok(empty_config());
    }
    let config: Value =
        serde_saphyr::from_str(text).map_err(|e| invalid(format!("not YAML: {e}")))?;
    if config.is_null() {
        return Ok(empty_config());
    }
    check_shape(&config).map_err(invalid)?;
    Ok(config)
}

/// Merges `new` into `existing`: entries of `clusters`, `contexts` and `users` with the
/// same name are replaced, the others added; `current-context` is set only when
/// `existing` has none.
pub fn merge(existing: &mut Value, new: &Value) {
    let Some(target) = existing.as_object_mut() else {
        return;
    };
    for key in LISTS {
        let incoming = new
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let list = target
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()));
        if list.is_null() {
            *list = Value::Array(Vec::new());
        }
        let Some(list) = list.as_array_mut() else {
            continue;
        };
        for entry in incoming {
            let name = entry.get("name").cloned();
            match list.iter_mut().find(|e| e.get("name") == name.as_ref()) {
                Some(old) => *old = entry,
                None => list.push(entry),
            }
        }
    }
    let has_current = target
        .get("current-context")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if !has_current {
        if let Some(current) = new.get("current-context").filter(|c| c.is_string()) {
            target.insert("current-context".into(), current.clone());
        }
    }
}

/// Checks that the kubeconfig file `path`, if there is one, can be merged into.
pub fn check_file(path: &Path) -> Result<(), SsoError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_existing(path, &text).map(drop),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SsoError::File {
            action: "read the kubeconfig",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Merges `new` into the kubeconfig file `path`, creating it (and its directory) when
/// missing. A file that is not a kubeconfig is left alone and refused.
pub fn merge_into_file(path: &Path, new: &Value) -> Result<(), SsoError> {
    let mut config = match std::fs::read_to_string(path) {
        Ok(text) => parse_existing(path, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| SsoError::File {
                        action: "create the kubeconfig's directory",
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
            empty_config()
        }
        Err(source) => {
            return Err(SsoError::File {
                action: "read the kubeconfig",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    merge(&mut config, new);
    let yaml = serde_saphyr::to_string(&config)
        .map_err(|e| SsoError::Input(format!("cannot write the kubeconfig as YAML: {e}")))?;
    // a symbolic link is written through, not replaced by a file
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    write_atomically(&target, yaml.as_bytes(), "write the kubeconfig")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const SERVED: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: kubegate-1-dev
  cluster:
    server: https://kg.example/pipeline/api/v1/orgs/1/clusters/3/proxy
    certificate-authority-data: U0VSVkVS
contexts:
- name: kubegate-1-dev
  context: {cluster: kubegate-1-dev, user: kubegate@kg.example}
users:
- name: kubegate@kg.example
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: kubegate
      args: [credential, --server, https://kg.example]
      interactiveMode: IfAvailable
      provideClusterInfo: true
current-context: kubegate-1-dev
"#;

    const EXISTING: &str = r#"apiVersion: v1
kind: Config
preferences: {colors: true}
clusters:
- name: kubegate-1-dev
  cluster: {server: https://old.example}
- name: mine
  cluster: {server: https://mine.example, extension-field: keep}
contexts:
- name: mine
  context: {cluster: mine, user: me, namespace: work}
users:
- name: me
  user: {token: secret}
current-context: mine
x-unknown: {kept: [1, 2]}
"#;

    #[test]
    fn served_config_is_adjusted() {
        let adjusted = adjust(
            SERVED,
            &Adjustments {
                command: Some("/usr/local/bin/kubegate".into()),
                no_browser: true,
                certificate_authority_pem: Some(b"PEM".to_vec()),
                insecure_skip_tls_verify: false,
            },
        )
        .unwrap();
        let exec = &adjusted["users"][0]["user"]["exec"];
        assert_eq!(exec["command"], "/usr/local/bin/kubegate");
        assert_eq!(
            exec["args"],
            serde_json::json!([
                "credential",
                "--server",
                "https://kg.example",
                "--no-browser"
            ])
        );
        assert_eq!(
            adjusted["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(
            plugin_servers(&adjusted),
            vec!["https://kg.example".to_string()]
        );

        let insecure = adjust(
            SERVED,
            &Adjustments {
                insecure_skip_tls_verify: true,
                ..Default::default()
            },
        )
        .unwrap();
        let cluster = &insecure["clusters"][0]["cluster"];
        assert_eq!(cluster["insecure-skip-tls-verify"], true);
        assert!(cluster.get("certificate-authority-data").is_none());
        assert_eq!(insecure["users"][0]["user"]["exec"]["command"], "kubegate");
        assert_eq!(context_names(&insecure), vec!["kubegate-1-dev".to_string()]);
    }

    #[test]
    fn merge_keeps_unknown_fields_replaces_same_names_and_the_current_context() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        std::fs::write(&path, EXISTING).unwrap();
        let new = adjust(SERVED, &Adjustments::default()).unwrap();
        merge_into_file(&path, &new).unwrap();
        let merged: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(merged["x-unknown"], serde_json::json!({"kept": [1, 2]}));
        assert_eq!(merged["preferences"]["colors"], true);
        assert_eq!(merged["current-context"], "mine");
        let clusters = merged["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2);
        assert_eq!(
            clusters[0]["cluster"]["server"],
            "https://kg.example/pipeline/api/v1/orgs/1/clusters/3/proxy"
        );
        assert_eq!(clusters[1]["cluster"]["extension-field"], "keep");
        assert_eq!(merged["contexts"].as_array().unwrap().len(), 2);
        assert_eq!(merged["contexts"][0]["context"]["namespace"], "work");
        assert_eq!(merged["users"].as_array().unwrap().len(), 2);
        assert_eq!(merged["users"][0]["user"]["token"], "secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_missing_file_is_created_private_with_the_current_context() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("home").join(".kube").join("config");
        let new = adjust(SERVED, &Adjustments::default()).unwrap();
        merge_into_file(&path, &new).unwrap();
        let merged: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(merged["current-context"], "kubegate-1-dev");
        assert_eq!(merged["kind"], "Config");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn an_invalid_file_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let new = adjust(SERVED, &Adjustments::default()).unwrap();
        for text in [
            "clusters: [unclosed\n",
            "- just\n- a list\n",
            "kind: Pod\n",
            "clusters: 5\n",
        ] {
            let path = tmp.path().join("config");
            std::fs::write(&path, text).unwrap();
            let e = merge_into_file(&path, &new).unwrap_err();
            assert!(matches!(e, SsoError::Kubeconfig { .. }), "{text}: {e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
            assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        }
    }

    #[test]
    fn kubeconfig_path_prefers_the_flag() {
        assert_eq!(
            kubeconfig_path(Some(Path::new("/x/config"))).unwrap(),
            PathBuf::from("/x/config")
        );
    }
}
