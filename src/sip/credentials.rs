//! Extension credentials as the registrar sees them: per-algorithm HA1 values, never passwords.
//!
//! HA1 = H(user:realm:password) is password-equivalent for this realm, but unlike a password it
//! is useless against any other realm or service, which is why it is what we keep at rest.
//! In memory the digests are raw bytes (80 bytes for all three algorithms rather than 160 hex
//! characters in three heap strings): at 100,000 extensions that is the difference between
//! about 16 MB and 40 MB.

use std::collections::HashMap;

use crate::sip::digest::{ha1_hex, Algorithm};

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    md5: Option<[u8; 16]>,
    sha256: Option<[u8; 32]>,
    sha512_256: Option<[u8; 32]>,
    /// A disabled extension can still prove who it is but is refused registration (403).
    pub enabled: bool,
}

/// A stored HA1 that is not hex of the right length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HA1 for {0} is not {1} hex digits")]
pub struct BadHa1(pub &'static str, pub usize);

fn decode<const N: usize>(
    alg: Algorithm,
    hex_text: Option<&str>,
) -> Result<Option<[u8; N]>, BadHa1> {
    let Some(text) = hex_text else {
        return Ok(None);
    };
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| BadHa1(alg.token(), N * 2))?;
    Ok(Some(out))
}

impl Credential {
    /// Derives every algorithm's HA1 from a plaintext password, which is then dropped.
    pub fn from_password(user: &str, realm: &str, password: &str) -> Credential {
        let h = |alg| Some(ha1_hex(alg, user, realm, password));
        Self::from_hex(
            h(Algorithm::Md5).as_deref(),
            h(Algorithm::Sha256).as_deref(),
            h(Algorithm::Sha512_256).as_deref(),
            true,
        )
        .expect("freshly computed digests are valid hex")
    }

    /// Whether `password` is this extension's password, judged by the strongest HA1 held and
    /// compared in constant time (used where a client proves itself with the SIP password,
    /// such as an agent desktop logging in to the event stream).
    pub fn password_matches(&self, user: &str, realm: &str, password: &str) -> bool {
        use subtle::ConstantTimeEq;
        let alg = if self.sha256.is_some() {
            Algorithm::Sha256
        } else if self.sha512_256.is_some() {
            Algorithm::Sha512_256
        } else {
            Algorithm::Md5
        };
        match (self.ha1_hex(alg), Some(ha1_hex(alg, user, realm, password))) {
            (Some(have), Some(got)) => bool::from(have.as_bytes().ct_eq(got.as_bytes())),
            _ => false,
        }
    }

    /// From hex HA1 values as stored or configured (either case).
    pub fn from_hex(
        md5: Option<&str>,
        sha256: Option<&str>,
        sha512_256: Option<&str>,
        enabled: bool,
    ) -> Result<Credential, BadHa1> {
        Ok(Credential {
            md5: decode(Algorithm::Md5, md5)?,
            sha256: decode(Algorithm::Sha256, sha256)?,
            sha512_256: decode(Algorithm::Sha512_256, sha512_256)?,
            enabled,
        })
    }

    /// The stored HA1 for a base algorithm as lowercase hex (the `-sess` variants key off the
    /// same HA1).
    pub fn ha1_hex(&self, alg: Algorithm) -> Option<String> {
        match alg {
            Algorithm::Md5 => self.md5.map(hex::encode),
            Algorithm::Sha256 => self.sha256.map(hex::encode),
            Algorithm::Sha512_256 => self.sha512_256.map(hex::encode),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_case_folding() {
        let c = Credential::from_password("1001", "gridedge", "pw");
        let md5 = c.ha1_hex(Algorithm::Md5).unwrap();
        assert_eq!(md5, ha1_hex(Algorithm::Md5, "1001", "gridedge", "pw"));
        let upper =
            Credential::from_hex(Some(&md5.to_ascii_uppercase()), None, None, true).unwrap();
        assert_eq!(upper.ha1_hex(Algorithm::Md5), Some(md5));
        assert_eq!(upper.ha1_hex(Algorithm::Sha256), None);
    }

    #[test]
    fn malformed_hex_is_refused() {
        assert_eq!(
            Credential::from_hex(Some("abc"), None, None, true),
            Err(BadHa1("MD5", 32))
        );
        assert!(Credential::from_hex(None, Some(&"g".repeat(64)), None, true).is_err());
    }

    #[test]
    fn debug_shows_no_digest() {
        let c = Credential::from_password("1001", "gridedge", "pw");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(&c.ha1_hex(Algorithm::Md5).unwrap()));
    }
}
