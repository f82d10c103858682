//! Where settings come from: the values given in the environment (or on the command line) over
//! an optional file of `NAME=value` lines, over the defaults of `settings::SETTINGS`.

use super::settings;
use crate::error::SyncError;
use std::collections::HashMap;
use std::time::Duration;

/// The settings as given, by name.
pub struct Source {
    values: HashMap<String, String>,
}

impl Source {
    /// `given` (name and value of each setting found in the environment or on the command line)
    /// over the file named by `--config` or `PG_TENANCY_SYNC_CONFIG`, when there is one. A value
    /// given empty hides the file's.
    pub fn load(file: Option<&str>, given: Vec<(String, String)>) -> Result<Source, SyncError> {
        let mut values = match file {
            Some(path) => read_file(path)?,
            None => HashMap::new(),
        };
        values.extend(given);
        Ok(Source { values })
    }

    /// A source of exactly `pairs`, for tests.
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Source {
        Source {
            values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// A setting's value when given and not empty, else its default, if it has one.
    pub fn get(&self, name: &str) -> Option<&str> {
        let setting = settings::find(name);
        debug_assert!(setting.is_some(), "{name} is not in config::settings::SETTINGS");
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .or_else(|| setting.and_then(|s| s.default))
    }

    /// A required setting.
    pub fn required(&self, name: &str) -> Result<String, SyncError> {
        self.get(name)
            .map(str::to_string)
            .ok_or_else(|| SyncError::Config(format!("{name} is not set")))
    }

    /// A duration in seconds with a lower bound (its default from `SETTINGS`).
    pub fn seconds(&self, name: &str, min: f64) -> Result<Duration, SyncError> {
        let text = self.required(name)?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= min => Ok(Duration::from_secs_f64(v)),
            _ => Err(SyncError::Config(format!(
                "{name} must be a number of seconds ≥ {min}, not \"{text}\""
            ))),
        }
    }
}

/// Reads `NAME=value` lines (blank lines and `#` comments skipped). A file holding a secret must
/// not be readable by other users, as ssh insists for its keys.
pub fn read_file(path: &str) -> Result<HashMap<String, String>, SyncError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| SyncError::Config(format!("configuration file {path}: {e}")))?;
    let mut values = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(SyncError::Config(format!(
                "configuration file {path}, line {}: expected NAME=value",
                number + 1
            )));
        };
        let value = value.trim().trim_matches('"').to_string();
        values.insert(name.trim().to_string(), value);
    }
    let holds_secret = values.keys().any(|k| is_secret_name(k));
    if holds_secret {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| SyncError::Config(format!("{path}: {e}")))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SyncError::Config(format!(
                "configuration file {path} holds secrets but is readable by group or others (mode {:o}); chmod 600 it",
                mode & 0o777
            )));
        }
    }
    Ok(values)
}

/// Whether a setting in the file holds a secret.
fn is_secret_name(name: &str) -> bool {
    name.ends_with("_KEY") || name.ends_with("_SECRET") || name.ends_with("_URL") || name.contains("ROUTING_KEY")
}
