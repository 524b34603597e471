//! The configuration parser never panics, and what it accepts is valid:
//! endpoint names and the site fit in queue and xattr names, the xattr
//! prefix is in the user or trusted namespace, and every endpoint's root
//! is absolute.
#![no_main]

use ferry::config::{Config, valid_name};
use ferry::endpoint::StoreConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse("fuzz.conf", text) {
        Err(e) => assert!(e.line <= text.lines().count()),
        Ok(c) => {
            assert!(c.settings.threads > 0);
            assert!(c.settings.xattr_prefix.starts_with("user.") || c.settings.xattr_prefix.starts_with("trusted."));
            if let Some(site) = &c.settings.site {
                assert!(valid_name(site).is_ok());
            }
            for (name, e) in &c.endpoints {
                assert!(valid_name(name).is_ok());
                assert!(e.root.starts_with(b"/"));
                if let StoreConfig::Directory { path } = &e.store {
                    assert!(path.is_absolute());
                }
            }
        }
    }
});
