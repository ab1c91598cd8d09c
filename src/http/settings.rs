//! The `[http]` settings: listen address, the bearer token (inline, `token_file`, or the
//! `MARSTEK_BRIDGE__HTTP__TOKEN_FILE` environment form), CORS origins and the body limit, with
//! their validation. Pure: reads the token file only when asked (`resolve_token`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest request body accepted by default, bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;

/// `[http]` settings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to serve on, e.g. `127.0.0.1:9480`; unset = no HTTP server.
    pub listen: Option<String>,
    /// Bearer token for writes and for any access from beyond loopback (prefer `token_file`);
    /// never logged.
    pub token: Option<String>,
    /// File holding the token (first line used); wins over `token`.
    pub token_file: Option<PathBuf>,
    /// Origins allowed by CORS (e.g. `http://ha.local:8123`); empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted, bytes (413 above).
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: None,
            token: None,
            token_file: None,
            cors_origins: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("cors_origins", &self.cors_origins)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl HttpSettings {
    /// Problems with these settings as (key, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let has_token =
            self.token_file.is_some() || self.token.as_deref().is_some_and(|t| !t.is_empty());
        if let Some(l) = &self.listen {
            match l.parse::<SocketAddr>() {
                Err(_) => out.push((
                    "listen".into(),
                    format!("'{l}' is not an address:port such as 127.0.0.1:9480"),
                )),
                Ok(a) if !a.ip().is_loopback() && !has_token => out.push((
                    "token".into(),
                    format!(
                        "http.listen = {l} is reachable beyond loopback: set http.token \
                         (or http.token_file, or MARSTEK_BRIDGE__HTTP__TOKEN_FILE)"
                    ),
                )),
                Ok(_) => {}
            }
        }
        if let Some(t) = &self.token
            && self.token_file.is_none()
            && !t.is_empty()
            && t.len() < 16
        {
            out.push((
                "token".into(),
                format!("is {} characters long: use at least 16", t.len()),
            ));
        }
        for (i, o) in self.cors_origins.iter().enumerate() {
            let ok = url::Url::parse(o)
                .ok()
                .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/");
            if !ok || o.ends_with('/') {
                out.push((
                    format!("cors_origins[{i}]"),
                    format!("'{o}' is not an origin such as http://ha.local:8123"),
                ));
            }
        }
        if !(256..=1024 * 1024).contains(&self.max_body_bytes) {
            out.push((
                "max_body_bytes".into(),
                format!("{} is out of range (256 to 1048576)", self.max_body_bytes),
            ));
        }
        out
    }

    /// The token: from `token_file` (first line) when set, else `token`; empty = none.
    pub fn resolve_token(&self) -> std::io::Result<Option<String>> {
        let token = match &self.token_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)?;
                Some(text.lines().next().unwrap_or("").trim().to_string())
            }
            None => self.token.clone(),
        };
        Ok(token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_listen(l: &str) -> HttpSettings {
        HttpSettings {
            listen: Some(l.into()),
            ..HttpSettings::default()
        }
    }

    #[test]
    fn non_loopback_listen_without_token_names_the_key() {
        let problems = with_listen("0.0.0.0:9480").validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "token");
        assert!(problems[0].1.contains("http.listen"), "{problems:?}");
        assert!(with_listen("127.0.0.1:9480").validate().is_empty());
        assert!(with_listen("[::1]:9480").validate().is_empty());
        let mut s = with_listen("0.0.0.0:9480");
        s.token = Some("0123456789abcdef".into());
        assert!(s.validate().is_empty());
        s.token = Some("short".into());
        assert_eq!(s.validate()[0].0, "token");
    }

    #[test]
    fn bad_origins_and_limits_are_refused() {
        let mut s = with_listen("127.0.0.1:1");
        s.cors_origins = vec![
            "http://ha.local:8123".into(),
            "ha.local".into(),
            "http://x/y".into(),
        ];
        s.max_body_bytes = 10;
        let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["cors_origins[1]", "cors_origins[2]", "max_body_bytes"]
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let s = HttpSettings {
            token: Some("supersecrettoken123".into()),
            ..HttpSettings::default()
        };
        assert!(!format!("{s:?}").contains("supersecret"));
    }

    #[test]
    fn token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "fromfile-0123456789\nignored\n").unwrap();
        let s = HttpSettings {
            token: Some("inline-0123456789".into()),
            token_file: Some(f),
            ..HttpSettings::default()
        };
        assert_eq!(
            s.resolve_token().unwrap().as_deref(),
            Some("fromfile-0123456789")
        );
    }
}
