//! Password hashes, random ids and tokens.

use std::sync::OnceLock;

use argon2::{Algorithm, Argon2, Params, Version};
use argon2::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::IdentityError;

/// OWASP's argon2id parameters: m = 19456 KiB, t = 2, p = 1.
fn hasher() -> Result<Argon2<'static>, IdentityError> {
    let params = Params::new(19_456, 2, 1, None).map_err(|e| IdentityError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(b)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `password` with a fresh
/// 16-byte salt.
pub(crate) fn hash_password(password: &str) -> Result<String, IdentityError> {
    let salt: [u8; 16] = random()?;
    let h = hasher()?
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| IdentityError::Hash(e.to_string()))?;
    Ok(h.to_string())
}

/// Whether `password` matches the PHC string `phc` (false for a malformed `phc`). Slow by
/// design (tens of milliseconds): async callers run it on a blocking thread.
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(a) = hasher() else { return false };
    // The parameters come from the PHC string, so hashes made with other parameters verify too.
    a.verify_password(password.as_bytes(), phc).is_ok()
}

/// Spends the time a real verification would, so that an unknown user name cannot be told
/// from a wrong password by the answer's timing.
pub(crate) fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(phc) = DUMMY.get_or_init(|| hash_password("basalt-dummy-password").ok()) {
        let _ = verify_password(password, phc);
    }
}

/// A Keystone-style id: 32 lowercase hex characters (a UUID4's hex without dashes).
pub(crate) fn new_id() -> Result<String, IdentityError> {
    let mut b: [u8; 16] = random()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(hex(&b))
}

/// A new bearer token: 32 random bytes, URL-safe base64 without padding.
pub(crate) fn new_token() -> Result<String, IdentityError> {
    let b: [u8; 32] = random()?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// An audit id as Keystone makes them: 16 random bytes, URL-safe base64 without padding.
pub(crate) fn new_audit_id() -> Result<String, IdentityError> {
    let b: [u8; 16] = random()?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// SHA-256 of `s`: what is stored for a token, and the key of the token caches.
pub(crate) fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A stable 32-hex id derived from `s` (catalog services and endpoints).
pub(crate) fn stable_id(s: &str) -> String {
    hex(&sha256(s)[..16])
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        let phc = hash_password("s3cret wörd").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("s3cret wörd", &phc));
        assert!(!verify_password("s3cret word", &phc));
        assert!(!verify_password("", &phc));
        assert!(!verify_password("x", "not a phc string"));
        // Fresh salt every time.
        assert_ne!(phc, hash_password("s3cret wörd").expect("hash"));
    }

    #[test]
    fn ids_and_tokens_have_their_shapes() {
        let id = new_id().expect("id");
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        let t = new_token().expect("token");
        assert_eq!(t.len(), 43);
        assert!(
            t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(new_audit_id().expect("audit").len(), 22);
        assert_eq!(stable_id("x"), stable_id("x"));
        assert_eq!(stable_id("x").len(), 32);
    }
}
