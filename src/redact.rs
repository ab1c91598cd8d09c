//! Keeping secrets out of everything the bridge shows: which names hold a secret, a URL without
//! its credentials, and a configuration tree with every secret replaced by `***`. The one place
//! redaction is decided; pure, touches nothing.

/// Whether a name (configuration key or URL query key) holds a credential: passwords, client
/// secrets, tokens, API keys, private keys.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // A `…_file` key holds a path; a `…_url` key a URL, shown through [`redact_url`].
    if k.ends_with("_file") || k.ends_with("_url") {
        return false;
    }
    const PARTS: [&str; 7] = [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "credential",
    ];
    PARTS.iter().any(|p| k.contains(p)) || matches!(k.as_str(), "key_pem" | "pass" | "pwd")
}

/// A URL safe to show: the user-info password and the value of every credential query key
/// (`password=`, `sslpassword=`, `token=`, … see [`is_secret_key`]) replaced by `***`. The one
/// function used wherever a URL is logged, printed or published. A URL that does not parse is
/// redacted textually, erring on the side of hiding: everything between `://` and the last `@`
/// after the user name.
pub fn redact_url(url: &str) -> String {
    let secret_value = |k: &str| is_secret_key(k);
    match url::Url::parse(url) {
        Ok(mut u) => {
            let mut changed = false;
            if u.password().is_some() {
                // Cannot fail for URLs that already carry a password.
                let _ = u.set_password(Some("***"));
                changed = true;
            }
            if u.query_pairs().any(|(k, _)| secret_value(&k)) {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if secret_value(&k) {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
                changed = true;
            }
            if changed {
                u.to_string()
            } else {
                url.to_string()
            }
        }
        Err(_) => {
            let mut out = match (url.find("://"), url.rfind('@')) {
                (Some(s), Some(at)) if at > s + 3 => {
                    let user = url[s + 3..at].split(':').next().unwrap_or("");
                    format!("{}://{}:***{}", &url[..s], user, &url[at..])
                }
                _ => url.to_string(),
            };
            if let Some(q) = out.find('?') {
                let query: Vec<String> = out[q + 1..]
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((k, _)) if secret_value(k) => format!("{k}=***"),
                        _ => pair.to_string(),
                    })
                    .collect();
                out = format!("{}?{}", &out[..q], query.join("&"));
            }
            out
        }
    }
}

/// Replaces every secret in a configuration tree by `***`, and shows every URL redacted.
pub(crate) fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                if is_secret_key(k) {
                    if !matches!(v, toml::Value::String(s) if s.is_empty()) {
                        *v = toml::Value::String("***".into());
                    }
                } else if let toml::Value::String(s) = v {
                    if s.contains("://") {
                        *s = redact_url(s);
                    }
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_every_credential() {
        for (url, shown) in [
            (
                "postgres://bridge:s3cr%40t@db.local:5432/marstek",
                "postgres://bridge:***@db.local:5432/marstek",
            ),
            (
                "postgres://u@h/db?password=S3CRET&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
            ("postgres://db/marstek", "postgres://db/marstek"),
            ("sqlite://data/x.db", "sqlite://data/x.db"),
            (
                "https://api.example/token?client_secret=S3CRET",
                "https://api.example/token?client_secret=***",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        for bad in [
            "postgres://u:p@ss@[bad/x",
            "postgres://u:S3CRET@h:notaport/db?password=S3CRET",
            "postgres://h:notaport/db?sslpassword=S3CRET&x=1",
        ] {
            let shown = redact_url(bad);
            assert!(
                !shown.contains("S3CRET") && !shown.contains("p@ss"),
                "{shown}"
            );
        }
    }

    #[test]
    fn secret_names() {
        for k in [
            "password",
            "rte_client_secret",
            "token",
            "sslpassword",
            "pwd",
            "apikey",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "password_file",
            "rte_token_url",
            "username",
            "sslmode",
            "host",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
