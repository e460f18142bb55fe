//! Resolution of the server URL, the token and the namespace from flags, environment and
//! defaults. Clap already merges each flag with its env twin; this module adds the token-file
//! default and the checks, with the environment passed in so it can be tested.

use std::path::{Path, PathBuf};

use crate::cli::GlobalOpts;
use crate::error::Error;

/// Everything a command needs to talk to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Gateway base URL, with a scheme.
    pub server: String,
    pub token: String,
    pub namespace: String,
    /// Extra certificate authority to trust (PEM file).
    pub ca_cert: Option<PathBuf>,
}

/// Where the token file is looked for when `--token-file` is not given:
/// `$DEPOSITO_DATA_DIR/token`, else `$HOME/.local/share/deposito/token`.
pub fn default_token_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("DEPOSITO_DATA_DIR") {
        return Some(PathBuf::from(dir).join("token"));
    }
    non_empty("HOME").map(|home| {
        PathBuf::from(home)
            .join(".local")
            .join("share")
            .join("deposito")
            .join("token")
    })
}

/// The replicas' internal token variable: never the client's, but a shell that starts
/// replicas may have it set, so a missing client token says so.
const REPLICA_TOKEN_ENV: &str = "DEPOSITO_REPLICA_TOKEN";

/// Finds the token: `--token`/`DEPOSITO_TOKEN`, else the token file (`--token-file`,
/// `DEPOSITO_TOKEN_FILE`, or the default path). The error names where it looked, and the
/// replicas' variable when only that one is set.
pub fn resolve_token(
    token: Option<&str>,
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    find_token(token, token_file, env).map_err(|err| match err {
        Error::Config(message) if env(REPLICA_TOKEN_ENV).is_some_and(|t| !t.trim().is_empty()) => {
            Error::Config(format!(
                "{message} ({REPLICA_TOKEN_ENV} is set, but that is the replicas' internal \
                 token: the client reads DEPOSITO_TOKEN or a token file)"
            ))
        }
        other => other,
    })
}

fn find_token(
    token: Option<&str>,
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let (path, explicit) = match token_file {
        Some(p) => (p.to_path_buf(), true),
        None => match default_token_file(env) {
            Some(p) => (p, false),
            None => {
                return Err(Error::Config(
                    "no token: --token/DEPOSITO_TOKEN are unset, and neither \
                     DEPOSITO_DATA_DIR nor HOME is set to find a token file"
                        .into(),
                ))
            }
        },
    };
    let how = if explicit {
        "--token-file/DEPOSITO_TOKEN_FILE"
    } else {
        "default token file"
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let t = s.trim();
            if t.is_empty() {
                Err(Error::Config(format!(
                    "no token: {how} {} is empty",
                    path.display()
                )))
            } else {
                Ok(t.to_string())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Config(format!(
            "no token: --token/DEPOSITO_TOKEN are unset and {how} {} does not exist",
            path.display()
        ))),
        Err(e) => Err(Error::Config(format!(
            "no token: cannot read {how} {}: {}",
            path.display(),
            crate::error::io_reason(&e)
        ))),
    }
}

/// Normalizes the server URL: adds `http://` when no scheme is given, drops a trailing `/`,
/// and refuses anything that is not http(s).
pub fn normalize_server(server: &str) -> Result<String, Error> {
    let s = server.trim();
    if s.is_empty() {
        return Err(Error::Config("--server/DEPOSITO_SERVER is empty".into()));
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| Error::Config(format!("invalid server URL '{s}': {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(Error::Config(format!(
            "invalid server URL '{s}': scheme must be http or https"
        )));
    }
    if url.host_str().is_none() {
        return Err(Error::Config(format!("invalid server URL '{s}': no host")));
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

impl Config {
    /// Resolves the global options, reading the environment for the token-file default.
    pub fn from_opts(opts: &GlobalOpts) -> Result<Self, Error> {
        Self::resolve(opts, &|k| std::env::var(k).ok())
    }

    /// Resolves the global options with an explicit environment.
    pub fn resolve(opts: &GlobalOpts, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let server = normalize_server(&opts.server)?;
        deposito_api::names::validate_namespace(&opts.namespace)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let token = resolve_token(opts.token.as_deref(), opts.token_file.as_deref(), env)?;
        Ok(Self {
            server,
            token,
            namespace: opts.namespace.clone(),
            ca_cert: opts.ca_cert.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn opts(token: Option<&str>, token_file: Option<&Path>) -> GlobalOpts {
        GlobalOpts {
            server: "http://127.0.0.1:7800".into(),
            token: token.map(Into::into),
            token_file: token_file.map(Into::into),
            namespace: "default".into(),
            ca_cert: None,
        }
    }

    #[test]
    fn default_token_file_prefers_data_dir_then_home() {
        let env = env_of(&[("DEPOSITO_DATA_DIR", "/data"), ("HOME", "/home/u")]);
        assert_eq!(default_token_file(&env), Some(PathBuf::from("/data/token")));
        let env = env_of(&[("HOME", "/home/u")]);
        assert_eq!(
            default_token_file(&env),
            Some(PathBuf::from("/home/u/.local/share/deposito/token"))
        );
        let env = env_of(&[("DEPOSITO_DATA_DIR", ""), ("HOME", "/h")]);
        assert_eq!(
            default_token_file(&env),
            Some(PathBuf::from("/h/.local/share/deposito/token"))
        );
        assert_eq!(default_token_file(&env_of(&[])), None);
    }

    #[test]
    fn token_flag_wins_over_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-file\n").unwrap();
        let env = env_of(&[("DEPOSITO_DATA_DIR", dir.path().to_str().unwrap())]);
        let c = Config::resolve(&opts(Some("flag"), None), &env).unwrap();
        assert_eq!(c.token, "flag");
        // An empty --token/DEPOSITO_TOKEN counts as unset.
        let c = Config::resolve(&opts(Some(""), None), &env).unwrap();
        assert_eq!(c.token, "from-file");
    }

    #[test]
    fn token_file_flag_wins_over_default_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "default-token").unwrap();
        let explicit = dir.path().join("other");
        std::fs::write(&explicit, "  explicit-token \n").unwrap();
        let env = env_of(&[("DEPOSITO_DATA_DIR", dir.path().to_str().unwrap())]);
        let c = Config::resolve(&opts(None, Some(&explicit)), &env).unwrap();
        assert_eq!(c.token, "explicit-token");
        let c = Config::resolve(&opts(None, None), &env).unwrap();
        assert_eq!(c.token, "default-token");
    }

    #[test]
    fn home_default_token_path_is_used() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(".local/share/deposito");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "home-token\n").unwrap();
        let env = env_of(&[("HOME", home.path().to_str().unwrap())]);
        assert_eq!(
            Config::resolve(&opts(None, None), &env).unwrap().token,
            "home-token"
        );
    }

    #[test]
    fn missing_token_names_where_it_looked() {
        let home = tempfile::tempdir().unwrap();
        let env = env_of(&[("HOME", home.path().to_str().unwrap())]);
        let err = Config::resolve(&opts(None, None), &env)
            .unwrap_err()
            .to_string();
        let want = home.path().join(".local/share/deposito/token");
        assert!(err.contains(&want.display().to_string()), "{err}");
        assert!(err.contains("DEPOSITO_TOKEN"), "{err}");
        assert!(!err.contains('\n'));

        let missing = home.path().join("nope");
        let err = Config::resolve(&opts(None, Some(&missing)), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("--token-file"), "{err}");

        let empty = home.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = Config::resolve(&opts(None, Some(&empty)), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn only_the_replica_variable_set_is_named_in_the_error() {
        let home = tempfile::tempdir().unwrap();
        let env = env_of(&[
            ("HOME", home.path().to_str().unwrap()),
            ("DEPOSITO_REPLICA_TOKEN", "internal"),
        ]);
        let err = Config::resolve(&opts(None, None), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DEPOSITO_REPLICA_TOKEN is set"), "{err}");
        assert!(err.contains("the client reads DEPOSITO_TOKEN"), "{err}");
        assert!(!err.contains('\n'));
        // The client never uses it as its token.
        let with_flag = Config::resolve(&opts(Some("client"), None), &env).unwrap();
        assert_eq!(with_flag.token, "client");
    }

    #[test]
    fn server_urls_are_normalized() {
        assert_eq!(normalize_server("http://h:7800/").unwrap(), "http://h:7800");
        assert_eq!(
            normalize_server("127.0.0.1:7800").unwrap(),
            "http://127.0.0.1:7800"
        );
        assert_eq!(
            normalize_server("https://gw.example/prefix").unwrap(),
            "https://gw.example/prefix"
        );
        assert!(normalize_server("ftp://h").is_err());
        assert!(normalize_server("").is_err());
        assert!(normalize_server("http://").is_err());
    }

    #[test]
    fn bad_namespace_is_refused_before_anything_else() {
        let mut o = opts(Some("t"), None);
        o.namespace = "Team_A".into();
        let err = Config::resolve(&o, &env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("namespace 'Team_A'"), "{err}");
    }
}
