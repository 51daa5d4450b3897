//! The shared secret that cluster peers must present (ractor_cluster's cookie). It comes from
//! `D2NN_CLUSTER_COOKIE` or a file (a Kubernetes Secret mounted as one), never from a command-line
//! argument, which other users of the host can read in the process list.
use std::path::Path;

/// Shorter secrets can be guessed.
pub const MIN_COOKIE_CHARS: usize = 16;
pub const COOKIE_ENV: &str = "D2NN_CLUSTER_COOKIE";

#[derive(Clone, PartialEq, Eq)]
pub struct ClusterCookie(String);

/// Never printed: logs and error reports end up in places the secret must not.
impl std::fmt::Debug for ClusterCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCookie(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    #[error("no cluster cookie: set {COOKIE_ENV} or pass --cookie-file (every peer needs the same secret)")]
    Missing,
    #[error("{source_name}: cannot read the cluster cookie: {message}")]
    Unreadable { source_name: String, message: String },
    #[error("{source_name}: the cluster cookie has {chars} characters; at least {MIN_COOKIE_CHARS} are needed")]
    TooShort { source_name: String, chars: usize },
}

impl ClusterCookie {
    /// The cookie from `file` if given, else from the environment value of [`COOKIE_ENV`]. One
    /// trailing newline of a file is dropped (editors and `echo` add it).
    pub fn resolve(env_value: Option<&str>, file: Option<&Path>) -> Result<ClusterCookie, CookieError> {
        let (source_name, text) = match (file, env_value) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| CookieError::Unreadable {
                    source_name: path.display().to_string(),
                    message: e.to_string(),
                })?;
                (path.display().to_string(), text)
            }
            (None, Some(value)) => (COOKIE_ENV.to_string(), value.to_string()),
            (None, None) => return Err(CookieError::Missing),
        };
        let secret = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        let chars = secret.chars().count();
        if chars < MIN_COOKIE_CHARS {
            return Err(CookieError::TooShort { source_name, chars });
        }
        Ok(ClusterCookie(secret.to_string()))
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_wins_and_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cookie");
        std::fs::write(&file, "0123456789abcdefXYZ\n").unwrap();
        let c = ClusterCookie::resolve(Some("from-the-environment-variable"), Some(&file)).unwrap();
        assert_eq!(c.secret(), "0123456789abcdefXYZ");
        assert!(!format!("{c:?}").contains("0123"), "the secret must not be printed");
        let c = ClusterCookie::resolve(Some("from-the-environment-variable"), None).unwrap();
        assert_eq!(c.secret(), "from-the-environment-variable");
    }

    #[test]
    fn missing_short_and_unreadable_cookies_are_clear_errors() {
        let e = ClusterCookie::resolve(None, None).unwrap_err().to_string();
        assert!(e.contains(COOKIE_ENV) && e.contains("--cookie-file"), "{e}");
        let e = ClusterCookie::resolve(Some("short"), None).unwrap_err().to_string();
        assert!(e.contains(COOKIE_ENV) && e.contains("5 characters"), "{e}");
        let e = ClusterCookie::resolve(None, Some(Path::new("/nonexistent/cookie"))).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/cookie"), "{e}");
    }
}
