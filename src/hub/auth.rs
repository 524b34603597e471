//! Who is calling: JWTs (ES256, the key made on first start and kept in
//! `key_dir`) and client keys (`prefix.secret`, the secret stored as its
//! BLAKE3 hash), as the seed's hub issues them; passwords hashed with
//! argon2id.
//!
//! Client keys are checked on every request, so they are hashed with a
//! fast hash: the secret is 32 random characters (190 bits), which no
//! dictionary reaches, and argon2 would cost tens of milliseconds a call.

use crate::config::defaults;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use std::path::{Path, PathBuf};

/// Why a key, token or password could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The key directory or a key file cannot be used.
    #[error("{path}: {source}")]
    KeyFile {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file holds no usable key.
    #[error("{path}: not an ES256 key in PEM: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A token is expired, forged, malformed or of the other type.
    #[error("{0}")]
    Token(String),
    /// The system's random source failed.
    #[error("no randomness: {0}")]
    Random(String),
}

/// What a token says.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// `access` or `refresh` (as djangorestframework-simplejwt writes it).
    pub token_type: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Token id.
    pub jti: String,
    /// The user's id.
    pub user_id: i64,
}

/// A pair of tokens.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tokens {
    /// Access token (1 h).
    pub access: String,
    /// Refresh token (1 day).
    pub refresh: String,
}

/// The hub's signing key.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public key, PEM (served at `/api/auth/token/publickey/`).
    pub public_pem: String,
    /// The key of the web page's CSRF tokens, derived from the signing
    /// key: tokens stay valid across restarts and die with the key.
    csrf_key: [u8; 32],
}

/// Fills `buf` from the system's random source.
pub fn random(buf: &mut [u8]) -> Result<(), AuthError> {
    getrandom::fill(buf).map_err(|e| AuthError::Random(e.to_string()))
}

impl Keys {
    /// Reads the key in `dir`, or makes one (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Keys, AuthError> {
        let private = dir.join("jwt-private.pem");
        let public = dir.join("jwt-public.pem");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuthError::KeyFile { path, source }
        };
        if !private.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let key = loop {
                let mut b = [0u8; 32];
                random(&mut b)?;
                if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&b) {
                    break k;
                }
            };
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| AuthError::BadKey {
                path: private.clone(),
                reason: e.to_string(),
            })?;
            let public_pem = key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| AuthError::BadKey {
                    path: public.clone(),
                    reason: e.to_string(),
                })?;
            // Written aside and renamed: a crash never leaves half a key.
            let tmp = dir.join(".jwt-private.pem.tmp");
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io(&tmp))?;
                f.write_all(pem.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io(&tmp))?;
            }
            std::fs::write(&public, public_pem).map_err(io(&public))?;
            std::fs::rename(&tmp, &private).map_err(io(&private))?;
            tracing::info!(key = %private.display(), "made the hub's JWT signing key");
        }
        let pem = std::fs::read(&private).map_err(io(&private))?;
        let bad = |path: &Path| {
            let path = path.to_path_buf();
            move |e: jsonwebtoken::errors::Error| AuthError::BadKey {
                path,
                reason: e.to_string(),
            }
        };
        let encoding = EncodingKey::from_ec_pem(&pem).map_err(bad(&private))?;
        let public_pem = std::fs::read_to_string(&public).map_err(io(&public))?;
        let decoding = DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(bad(&public))?;
        let csrf_key = blake3::derive_key("ferry hub 2026 web page CSRF token", &pem);
        Ok(Keys {
            encoding,
            decoding,
            public_pem,
            csrf_key,
        })
    }

    fn token(&self, user_id: i64, token_type: &str, life: std::time::Duration) -> Result<String, AuthError> {
        let now = jiff::Timestamp::now().as_second() as u64;
        let claims = Claims {
            token_type: token_type.into(),
            exp: now + life.as_secs(),
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            user_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| AuthError::Token(e.to_string()))
    }

    /// An access and a refresh token for `user_id`.
    pub fn issue(&self, user_id: i64) -> Result<Tokens, AuthError> {
        Ok(Tokens {
            access: self.token(user_id, "access", defaults::HUB_ACCESS_TOKEN_LIFETIME)?,
            refresh: self.token(user_id, "refresh", defaults::HUB_REFRESH_TOKEN_LIFETIME)?,
        })
    }

    /// A new access token from a valid refresh token.
    pub fn refresh(&self, refresh: &str) -> Result<String, AuthError> {
        let c = self.verify(refresh, "refresh")?;
        self.token(c.user_id, "access", defaults::HUB_ACCESS_TOKEN_LIFETIME)
    }

    /// The web page's CSRF token of a session (the `jti` of its refresh
    /// token): a keyed hash, so only the hub can make it, the same for
    /// every form of the session, and useless for another session.
    pub fn csrf_token(&self, session: &str) -> String {
        blake3::keyed_hash(&self.csrf_key, session.as_bytes())
            .to_hex()
            .to_string()
    }

    /// Whether `given` is the CSRF token of `session` (constant time).
    pub fn csrf_matches(&self, session: &str, given: &str) -> bool {
        blake3::Hash::from_hex(given).is_ok_and(|h| h == blake3::keyed_hash(&self.csrf_key, session.as_bytes()))
    }

    /// The claims of a valid, unexpired token of `token_type`.
    pub fn verify(&self, token: &str, token_type: &str) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| AuthError::Token(format!("Token is invalid or expired ({e})")))?;
        if data.claims.token_type != token_type {
            return Err(AuthError::Token(format!(
                "Token has wrong type (expected {token_type}, got {})",
                data.claims.token_type
            )));
        }
        Ok(data.claims)
    }
}

/// An argon2id hash of `password` in PHC form.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    random(&mut salt)?;
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Random(e.to_string()))
}

/// Whether `password` matches a stored hash.
pub fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_text(n: usize) -> Result<String, AuthError> {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 64];
        random(&mut b)?;
        // 62 letters: take bytes below 248 (4 × 62) so each is uniform.
        out.extend(
            b.iter()
                .filter(|&&x| x < 248)
                .map(|&x| KEY_ALPHABET[(x % 62) as usize] as char)
                .take(n - out.len()),
        );
    }
    Ok(out)
}

/// A new client key in the seed's shape (`jDBh2cRk6.LswQfylT2Bt...`):
/// the whole key, its public part, and the hash to store.
pub fn new_client_key() -> Result<(String, String, String), AuthError> {
    let prefix = random_text(9)?;
    let secret = random_text(32)?;
    let hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
    Ok((format!("{prefix}.{secret}"), prefix, hash))
}

/// A client key's public part and secret.
pub fn split_client_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.').filter(|(p, s)| !p.is_empty() && !s.is_empty())
}

/// Whether `secret` is the one whose hash is `stored` (constant time).
pub fn secret_matches(secret: &str, stored: &str) -> bool {
    let Ok(stored) = blake3::Hash::from_hex(stored) else {
        return false;
    };
    // blake3::Hash's equality is constant-time.
    blake3::hash(secret.as_bytes()) == stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_by_type_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let t = keys.issue(7).unwrap();
        assert_eq!(keys.verify(&t.access, "access").unwrap().user_id, 7);
        assert!(keys.verify(&t.access, "refresh").is_err());
        let again = keys.refresh(&t.refresh).unwrap();
        assert_eq!(keys.verify(&again, "access").unwrap().user_id, 7);
        assert!(keys.refresh(&t.access).is_err());
        // The same key after a restart; another installation's is refused.
        let reloaded = Keys::load_or_create(dir.path()).unwrap();
        assert!(reloaded.verify(&t.access, "access").is_ok());
        let other = Keys::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.verify(&t.access, "access").is_err());
        let mut forged = t.access.clone();
        forged.pop();
        assert!(keys.verify(&forged, "access").is_err());
        assert!(keys.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn csrf_tokens_belong_to_one_session_and_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let t = keys.csrf_token("session-a");
        assert_eq!(t.len(), 64);
        assert!(keys.csrf_matches("session-a", &t));
        assert!(!keys.csrf_matches("session-b", &t));
        assert!(!keys.csrf_matches("session-a", ""));
        assert!(!keys.csrf_matches("session-a", &t[..63]));
        let mut tampered = t.clone();
        tampered.replace_range(0..1, if t.starts_with('0') { "1" } else { "0" });
        assert!(!keys.csrf_matches("session-a", &tampered));
        // The same after a restart; not for another installation's key.
        assert_eq!(Keys::load_or_create(dir.path()).unwrap().csrf_token("session-a"), t);
        let other = Keys::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(!other.csrf_matches("session-a", &t));
    }

    #[test]
    fn passwords_and_client_keys() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_matches("s3cret", &h));
        assert!(!password_matches("s3cret!", &h));
        let (key, prefix, hash) = new_client_key().unwrap();
        let (p, s) = split_client_key(&key).unwrap();
        assert_eq!((p, p.len(), s.len()), (prefix.as_str(), 9, 32));
        assert!(secret_matches(s, &hash));
        assert!(!secret_matches("x", &hash));
        assert!(split_client_key("nodot").is_none());
    }
}
