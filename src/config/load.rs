//! Reading the configuration: defaults, then the TOML file, then the environment (plain
//! overrides and `…_FILE` secrets), extracted into [`Settings`] and validated; every problem is
//! located in the file when it comes from there. Reads the config file and the environment.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use super::{ConfigError, DEFAULT_CONFIG_PATH, ENV_PREFIX, Issue, Settings, is_secret_key};

/// Loads and validates the configuration: defaults, then `path` (which must exist unless it is
/// the default path), then the environment.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    load_from(path, std::env::vars())
}

/// Same as [`load`]; `env` supplies the `…_FILE` secret variables (the process environment in
/// [`load`]), plain overrides always come from the process environment.
pub fn load_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let source = read_source(path)?;
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some((_, text)) = &source {
        figment = figment.merge(Toml::string(text));
    }
    let figment = merge_env(figment, env)?;
    let mut settings = extract(&figment, source.as_ref())?;
    settings.database.site_id = settings.site_id();
    settings.database.forward = settings.central.enabled();
    let mut issues = settings.validate();
    if !issues.is_empty() {
        if let Some((f, t)) = &source {
            for i in &mut issues {
                let path: Vec<String> = i.key.split('.').map(str::to_string).collect();
                i.location = locate(f, t, &path);
            }
        }
        return Err(ConfigError { issues });
    }
    Ok(settings)
}

/// The configuration file and its text, checked to be TOML: `path`, which must exist, or the
/// default path when it exists (None when it does not).
fn read_source(path: Option<&Path>) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let (file, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    if !file.exists() {
        if explicit {
            return Err(single(
                "config",
                format!("file {} does not exist", file.display()),
            ));
        }
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| single("config", format!("cannot read {}: {e}", file.display())))?;
    if let Err(e) = toml::de::DeTable::parse(&text) {
        let line = e.span().map(|s| line_of(&text, s.start));
        return Err(ConfigError {
            issues: vec![Issue {
                key: "(syntax)".into(),
                reason: format!("not valid TOML: {}", e.message()),
                location: Some(format!("{}:{}", file.display(), line.unwrap_or(1))),
            }],
        });
    }
    Ok(Some((file, text)))
}

/// Merges the environment overrides: plain values (parsed: `8080` becomes a number), secrets
/// as the text they are (a password is a string whatever it looks like), then the `…_FILE`
/// secret variables of `env`, read from their files.
fn merge_env(
    mut figment: Figment,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Figment, ConfigError> {
    figment = figment.merge(
        Env::prefixed(ENV_PREFIX)
            .filter(|k| env_kind(k.as_str()) == Some(false))
            .split("__"),
    );
    for (key, value) in Env::prefixed(ENV_PREFIX)
        .filter(|k| env_kind(k.as_str()) == Some(true))
        .split("__")
        .iter()
    {
        figment = figment.merge(Serialized::global(key.as_str(), value));
    }
    for (name, file_path) in env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)) {
        let Some(base) = name.strip_suffix("_FILE") else {
            continue;
        };
        let key = base[ENV_PREFIX.len()..]
            .to_ascii_lowercase()
            .replace("__", ".");
        let value = std::fs::read_to_string(&file_path)
            .map_err(|e| single(&key, format!("cannot read {name}={file_path}: {e}")))?;
        figment = figment.merge(Serialized::global(
            &key,
            value.trim_end_matches(['\n', '\r']),
        ));
    }
    Ok(figment)
}

/// The typed settings, or every key that does not fit, located in the file when it has one
/// (a secret's value is never repeated in the reason).
fn extract(figment: &Figment, source: Option<&(PathBuf, String)>) -> Result<Settings, ConfigError> {
    figment.extract().map_err(|errors| ConfigError {
        issues: errors
            .into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let location = source.map(|(f, t)| locate(f, t, &e.path));
                let secret = e.path.last().is_some_and(|k| is_secret_key(k));
                Issue {
                    key: if key.is_empty() { "(root)".into() } else { key },
                    reason: if secret {
                        secret_reason(&e.kind)
                    } else {
                        e.kind.to_string()
                    },
                    location: location.flatten(),
                }
            })
            .collect(),
    })
}

/// For an override name without the prefix (`MQTT__PASSWORD`): `None` for a `…_FILE` variable,
/// else whether it holds a secret.
fn env_kind(name: &str) -> Option<bool> {
    let k = name.to_ascii_lowercase();
    if k.ends_with("_file") {
        return None;
    }
    Some(is_secret_key(k.rsplit("__").next().unwrap_or_default()))
}

/// What is wrong with a secret's value, without the value itself.
fn secret_reason(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(_, expected) => {
            format!("invalid type (value not shown: it is a secret), expected {expected}")
        }
        Kind::InvalidValue(_, expected) => {
            format!("invalid value (not shown: it is a secret), expected {expected}")
        }
        _ => "invalid value (not shown: it is a secret)".into(),
    }
}

fn single(key: &str, reason: String) -> ConfigError {
    ConfigError {
        issues: vec![Issue {
            key: key.into(),
            reason,
            location: None,
        }],
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// `file:line` of the deepest key of `path` present in the TOML text.
fn locate(file: &Path, text: &str, path: &[String]) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut line = None;
    let mut table = Some(doc.get_ref());
    let mut array: Option<&toml::de::DeArray> = None;
    for seg in path {
        let value = if let Some(t) = table.take() {
            let (k, v) = t
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == seg.as_str())?;
            line = Some(line_of(text, k.span().start));
            v
        } else if let Some(a) = array.take() {
            let v = a.get(seg.parse::<usize>().ok()?)?;
            line = Some(line_of(text, v.span().start));
            v
        } else {
            break;
        };
        match value.get_ref() {
            toml::de::DeValue::Table(t) => table = Some(t),
            toml::de::DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    line.map(|l| format!("{}:{l}", file.display()))
}
