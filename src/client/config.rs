//! The client's configuration: the `[settings]` section of
//! `/etc/ferry/client.conf` (for every user of the machine), then of
//! `~/.config/ferry/client.conf` (the user's own, whose keys win), or of
//! one file named on the command line alone — the shape of the seed's
//! `ngenea-client.conf`. Flags override both.
//!
//! The files are read with the crate's INI reader; a key the client does
//! not know, or a value that does not parse, is an error naming the file
//! and line, as in every ferry configuration file. Other sections are
//! ignored (the seed's rule), so one file may serve other tools too.

use crate::config::ini::{self, BadValue, ConfigError, Section};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file every user of the machine reads.
pub const GLOBAL_FILE: &str = "/etc/ferry/client.conf";

/// The keys of `[settings]`, for the unknown-key message.
const KNOWN: &str = "base_url, client_key, site, queue, wait, timeout, hydrate, api_secure_verify";

/// The client's settings, each unset unless a file set it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientConfig {
    /// `base_url`: the API's base URL.
    pub base_url: Option<String>,
    /// `client_key`: the client key sent with every request.
    pub client_key: Option<String>,
    /// `site`: the site workflows run on (send's source).
    pub site: Option<String>,
    /// `queue`: the queue workflows run on.
    pub queue: Option<String>,
    /// `wait`: wait for submitted jobs to end (default true).
    pub wait: Option<bool>,
    /// `timeout`: how long to wait, in seconds (`0`: as long as it takes).
    pub timeout: Option<Option<Duration>>,
    /// `hydrate`: send hydrates the files on the target.
    pub hydrate: Option<bool>,
    /// `api_secure_verify`: check the hub's TLS certificate (default true).
    pub verify_tls: Option<bool>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Parses a wait timeout in seconds: a number of 0 or more, 0 meaning
/// no limit.
pub fn parse_timeout(s: &str) -> Result<Option<Duration>, BadValue> {
    match s.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(x) if x.is_finite() && x > 0.0 && x < 1e10 => Ok(Some(Duration::from_secs_f64(x))),
        _ => Err(BadValue::expected("seconds (0 for no limit)", s)),
    }
}

fn text(v: &str) -> Result<String, BadValue> {
    match v {
        "" => Err(BadValue(
            "an empty value (remove the line to leave the key unset)".into(),
        )),
        v => Ok(v.to_string()),
    }
}

impl ClientConfig {
    /// The user's file: `$XDG_CONFIG_HOME/ferry/client.conf`, else
    /// `$HOME/.config/ferry/client.conf`.
    pub fn user_file() -> Option<PathBuf> {
        let base = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(x) if !x.is_empty() => PathBuf::from(x),
            _ => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".config"),
        };
        Some(base.join("ferry").join("client.conf"))
    }

    /// Reads `explicit` alone (it must exist), or else the global file then
    /// the user's, each if it exists.
    pub fn load(explicit: Option<&Path>) -> Result<ClientConfig, ConfigError> {
        match explicit {
            Some(f) => ClientConfig::read(f, true),
            None => {
                let mut files = vec![PathBuf::from(GLOBAL_FILE)];
                files.extend(ClientConfig::user_file());
                ClientConfig::load_layers(&files)
            }
        }
    }

    /// Reads `files` that exist, in order, each overriding the keys of the
    /// ones before.
    pub fn load_layers(files: &[PathBuf]) -> Result<ClientConfig, ConfigError> {
        let mut out = ClientConfig::default();
        for f in files {
            out.merge(ClientConfig::read(f, false)?);
        }
        Ok(out)
    }

    /// Reads one file; a missing file is empty unless `must_exist`.
    fn read(file: &Path, must_exist: bool) -> Result<ClientConfig, ConfigError> {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(ClientConfig::default());
            }
            Err(e) => {
                return Err(ConfigError {
                    file: name,
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
            }
        };
        let mut c = ClientConfig::parse(&name, &text)?;
        c.files.push(file.to_path_buf());
        Ok(c)
    }

    /// Parses the text of a file (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<ClientConfig, ConfigError> {
        let mut c = ClientConfig::default();
        for s in ini::sections(file, text)? {
            if s.header == "settings" {
                c.merge(ClientConfig::settings(s)?);
            }
        }
        Ok(c)
    }

    fn settings(mut s: Section<'_>) -> Result<ClientConfig, ConfigError> {
        let c = ClientConfig {
            base_url: s.take_parsed("base_url", text)?,
            client_key: s.take_parsed("client_key", text)?,
            site: s.take_parsed("site", text)?,
            queue: s.take_parsed("queue", text)?,
            wait: s.take_parsed("wait", ini::parse_bool)?,
            timeout: s.take_parsed("timeout", parse_timeout)?,
            hydrate: s.take_parsed("hydrate", ini::parse_bool)?,
            verify_tls: s.take_parsed("api_secure_verify", ini::parse_bool)?,
            files: Vec::new(),
        };
        s.finish(KNOWN)?;
        Ok(c)
    }

    /// Takes every key `other` sets.
    fn merge(&mut self, other: ClientConfig) {
        fn over<T>(mine: &mut Option<T>, theirs: Option<T>) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        over(&mut self.base_url, other.base_url);
        over(&mut self.client_key, other.client_key);
        over(&mut self.site, other.site);
        over(&mut self.queue, other.queue);
        over(&mut self.wait, other.wait);
        over(&mut self.timeout, other.timeout);
        over(&mut self.hydrate, other.hydrate);
        over(&mut self.verify_tls, other.verify_tls);
        self.files.extend(other.files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses() {
        let c = ClientConfig::parse(
            "c.conf",
            "# hub\n[settings]\nbase_url = https://hub:8000\nclient_key = ab.cd\nsite = london\nqueue = fast\n\
             wait = no\ntimeout = 180\nhydrate = True\napi_secure_verify = false\n\n[other]\nanything = 1\n",
        )
        .unwrap();
        assert_eq!(c.base_url.as_deref(), Some("https://hub:8000"));
        assert_eq!(c.client_key.as_deref(), Some("ab.cd"));
        assert_eq!(c.site.as_deref(), Some("london"));
        assert_eq!(c.queue.as_deref(), Some("fast"));
        assert_eq!(c.wait, Some(false));
        assert_eq!(c.timeout, Some(Some(Duration::from_secs(180))));
        assert_eq!(c.hydrate, Some(true));
        assert_eq!(c.verify_tls, Some(false));
        let c = ClientConfig::parse("c.conf", "[settings]\ntimeout = 0\n").unwrap();
        assert_eq!(c.timeout, Some(None));
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let e = ClientConfig::parse("c.conf", "[settings]\nsite = x\nclientkey = k\n").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("c.conf", 3));
        assert!(e.message.contains("unknown key `clientkey`"), "{e}");
        let e = ClientConfig::parse("c.conf", "[settings]\nwait = maybe\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = ClientConfig::parse("c.conf", "[settings]\ntimeout = -1\n").unwrap_err();
        assert!(e.message.contains("timeout"), "{e}");
        let e = ClientConfig::parse("c.conf", "[settings]\nsite =\n").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn the_user_file_overrides_the_global_one_and_missing_files_are_empty() {
        let d = tempfile::tempdir().unwrap();
        let (g, u) = (d.path().join("global.conf"), d.path().join("user.conf"));
        std::fs::write(&g, "[settings]\nbase_url = http://hub:8000\nsite = default\n").unwrap();
        std::fs::write(&u, "[settings]\nsite = mysite\n").unwrap();
        let c = ClientConfig::load_layers(&[g.clone(), d.path().join("absent.conf"), u.clone()]).unwrap();
        assert_eq!(c.base_url.as_deref(), Some("http://hub:8000"));
        assert_eq!(c.site.as_deref(), Some("mysite"));
        assert_eq!(c.files, vec![g, u]);
        // Named on the command line, a file must exist.
        let e = ClientConfig::load(Some(&d.path().join("absent.conf"))).unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
    }
}
