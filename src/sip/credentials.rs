//! Extension credentials as the registrar sees them: per-algorithm HA1 values, never passwords.
//!
//! HA1 = H(user:realm:password) is password-equivalent for this realm, but unlike a password it
//! is useless against any other realm or service, which is why it is what we keep at rest.

use std::collections::HashMap;

use crate::sip::digest::{ha1_hex, Algorithm};

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub ha1_md5: Option<String>,
    pub ha1_sha256: Option<String>,
    pub ha1_sha512_256: Option<String>,
    /// A disabled extension can still prove who it is but is refused registration (403).
    pub enabled: bool,
}

impl Credential {
    /// Derives every algorithm's HA1 from a plaintext password, which is then dropped.
    pub fn from_password(user: &str, realm: &str, password: &str) -> Credential {
        Credential {
            ha1_md5: Some(ha1_hex(Algorithm::Md5, user, realm, password)),
            ha1_sha256: Some(ha1_hex(Algorithm::Sha256, user, realm, password)),
            ha1_sha512_256: Some(ha1_hex(Algorithm::Sha512_256, user, realm, password)),
            enabled: true,
        }
    }

    /// The stored HA1 for a base algorithm (the `-sess` variants key off the same HA1).
    pub fn ha1(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::Md5 => self.ha1_md5.as_deref(),
            Algorithm::Sha256 => self.ha1_sha256.as_deref(),
            Algorithm::Sha512_256 => self.ha1_sha512_256.as_deref(),
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Extension number → credential. Swapped whole on reload, so readers never see a half-update.
pub type CredentialTable = HashMap<String, Credential>;
