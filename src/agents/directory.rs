//! The directory: projects, their extensions, agents, skill groups and access numbers, as
//! validated domain types, plus the two pure pieces of policy the management API needs:
//! allocating extension numbers from configured ranges, and deriving an extension's password
//! and a project's certificate from a secret key.
//!
//! # Why derived secrets
//!
//! Seed 004's `getByCertificate` hands an agent its extension's password in plain text
//! (004:L180-L200), yet passwords must not be kept in plain text at rest. Each password is
//! therefore `HMAC-SHA-256(key, "password" ‖ number ‖ generation)`, written in an unambiguous
//! alphabet; the database keeps only the digest HA1 values and the random `generation`, and the
//! key lives in its own file (mode 0600), outside the database and its backups. A stolen
//! database yields HA1 values (which the digest protocol makes unavoidable) but no password and
//! no certificate. Reallocating a number draws a new generation, so a freed extension's old
//! password stops working. Certificates are derived the same way and looked up by their SHA-256.

use std::collections::BTreeSet;
use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest project code accepted (seed 004 gives no limit; codes are short identifiers).
pub const MAX_PROJECT_CODE: usize = 64;
/// Longest extension number (E.164 numbers have 15 digits).
pub const MAX_EXTENSION_DIGITS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "projectCode must be 1-{MAX_PROJECT_CODE} characters of A-Z, a-z, 0-9, '-', '_' or '.'"
    )]
    BadProjectCode,
    #[error("username must be 1-{MAX_EXTENSION_DIGITS} digits")]
    BadExtension,
    #[error("certificate must be 32 hexadecimal digits")]
    BadCertificate,
    #[error("invalid extension range {0:?}: expected FIRST-LAST with FIRST <= LAST, both of {MAX_EXTENSION_DIGITS} digits at most")]
    BadRange(String),
    #[error("extension ranges {0} and {1} overlap")]
    OverlappingRanges(String, String),
    #[error("not enough free extensions: {wanted} wanted, {free} free in the configured ranges")]
    RangeExhausted { wanted: usize, free: usize },
}

/// A project (项目): a customer engagement with its own temporary extension block.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProjectCode(String);

impl ProjectCode {
    pub fn parse(s: &str) -> Result<Self, DirectoryError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_PROJECT_CODE
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(DirectoryError::BadProjectCode)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An extension number: the user part of the phone's SIP address-of-record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExtensionNumber(String);

impl ExtensionNumber {
    pub fn parse(s: &str) -> Result<Self, DirectoryError> {
        if !s.is_empty() && s.len() <= MAX_EXTENSION_DIGITS && s.bytes().all(|b| b.is_ascii_digit())
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(DirectoryError::BadExtension)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExtensionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A project's certificate (坐席领取项目分机凭证): 32 upper-case hex digits, as in 004:L62.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate(String);

impl Certificate {
    pub fn parse(s: &str) -> Result<Self, DirectoryError> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_uppercase()))
        } else {
            Err(DirectoryError::BadCertificate)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps and looks certificates up by.
    pub fn lookup_hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificate(<redacted>)")
    }
}

/// Who claimed an extension with `getByCertificate` (`type`, 004:L172).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// 坐席顾问 (type 2).
    Agent,
    /// 项目经理 (type 3).
    Manager,
}

impl Role {
    pub fn from_code(code: i64) -> Option<Role> {
        match code {
            2 => Some(Role::Agent),
            3 => Some(Role::Manager),
            _ => None,
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Role::Agent => 2,
            Role::Manager => 3,
        }
    }
}

/// The grid's `telephoneType` (000:L887): 01 built-in, 02 external.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TelephoneType {
    BuiltIn,
    External,
}

impl TelephoneType {
    pub fn code(self) -> &'static str {
        match self {
            TelephoneType::BuiltIn => "01",
            TelephoneType::External => "02",
        }
    }

    pub fn from_code(s: &str) -> Option<TelephoneType> {
        match s {
            "01" => Some(TelephoneType::BuiltIn),
            "02" => Some(TelephoneType::External),
            _ => None,
        }
    }
}

/// A project as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub code: ProjectCode,
    pub seats: u32,
    /// Random; the certificate is derived from it (see the module docs).
    pub generation: u64,
    pub created_at: u64,
}

/// A directory extension as stored (config-seeded extensions have no project).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub number: ExtensionNumber,
    pub project: Option<ProjectCode>,
    /// Random; the password is derived from it (see the module docs).
    pub generation: u64,
    pub enabled: bool,
    pub claimed: Option<Role>,
    pub agent_id: Option<String>,
    pub telephone_type: TelephoneType,
}

/// An agent (坐席) as the grid knows it (000:L552-L561).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Agent {
    pub agent_id: String,
    pub name: String,
    pub department: String,
    pub org_no: String,
    pub org_name: String,
    /// The extension the agent currently uses, if any.
    pub extension: Option<String>,
    pub skill_groups: Vec<String>,
}

/// A skill group (技能组, 000:L1010-L1014).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SkillGroup {
    pub id: String,
    pub name: String,
}

/// A grid access number (网格接入号, 000:L592-L601).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AccessNumber {
    pub access_num: String,
    pub ent_id: String,
    pub org_no: String,
    pub org_name: String,
    pub city_no: String,
    pub city_name: String,
    pub remark: String,
    pub grid_no: String,
    pub skill_groups: String,
}

/// One configured block of extension numbers, e.g. `8000-8999`. Numbers keep the width of
/// the range's first number, so `0100-0199` allocates `0100`, not `100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberRange {
    first: u64,
    last: u64,
    width: usize,
}

impl NumberRange {
    pub fn parse(s: &str) -> Result<Self, DirectoryError> {
        let bad = || DirectoryError::BadRange(s.to_owned());
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let (a, b) = (a.trim(), b.trim());
        ExtensionNumber::parse(a).map_err(|_| bad())?;
        ExtensionNumber::parse(b).map_err(|_| bad())?;
        let first: u64 = a.parse().map_err(|_| bad())?;
        let last: u64 = b.parse().map_err(|_| bad())?;
        if first > last || b.len() < a.len() {
            return Err(bad());
        }
        Ok(Self {
            first,
            last,
            width: a.len(),
        })
    }

    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn number(&self, n: u64) -> String {
        format!("{n:0width$}", width = self.width)
    }

    fn contains(&self, s: &str) -> bool {
        s.len() >= self.width
            && s.parse::<u64>()
                .is_ok_and(|n| n >= self.first && n <= self.last && self.number(n) == s)
    }
}

impl fmt::Display for NumberRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.number(self.first), self.number(self.last))
    }
}

/// The configured ranges, in order of preference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<NumberRange>);

impl Ranges {
    pub fn parse(specs: &[String]) -> Result<Self, DirectoryError> {
        let ranges: Vec<NumberRange> = specs
            .iter()
            .map(|s| NumberRange::parse(s))
            .collect::<Result<_, _>>()?;
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.first <= b.last && b.first <= a.last {
                    return Err(DirectoryError::OverlappingRanges(
                        a.to_string(),
                        b.to_string(),
                    ));
                }
            }
        }
        Ok(Self(ranges))
    }

    pub fn contains(&self, number: &str) -> bool {
        self.0.iter().any(|r| r.contains(number))
    }

    /// Picks `count` free numbers: the first contiguous block that fits (a project's phones
    /// are easier to recognise and to route as one block, "分配临时的分机号段", 004:L13),
    /// else the lowest free numbers. `used` holds every number taken, whatever its origin.
    ///
    /// Cost is linear in the size of the ranges, which config bounds.
    pub fn allocate(
        &self,
        used: &BTreeSet<String>,
        count: usize,
    ) -> Result<Vec<ExtensionNumber>, DirectoryError> {
        let free = || {
            self.0.iter().flat_map(|r| {
                (r.first..=r.last)
                    .map(|n| r.number(n))
                    .filter(|s| !used.contains(s))
            })
        };
        if count == 0 {
            return Ok(Vec::new());
        }
        // First fit of a contiguous run.
        for r in &self.0 {
            let mut run: Vec<String> = Vec::with_capacity(count);
            for n in r.first..=r.last {
                let s = r.number(n);
                if used.contains(&s) {
                    run.clear();
                } else {
                    run.push(s);
                    if run.len() == count {
                        return Ok(run.into_iter().map(ExtensionNumber).collect());
                    }
                }
            }
        }
        let picked: Vec<ExtensionNumber> = free().take(count).map(ExtensionNumber).collect();
        if picked.len() < count {
            return Err(DirectoryError::RangeExhausted {
                wanted: count,
                free: picked.len(),
            });
        }
        Ok(picked)
    }

    /// How many numbers the ranges hold in all.
    pub fn capacity(&self) -> u64 {
        self.0.iter().map(NumberRange::len).sum()
    }
}

/// The secret from which extension passwords and project certificates are derived. Never
/// logged, never stored in the database.
#[derive(Clone)]
pub struct DirectoryKey([u8; 32]);

impl fmt::Debug for DirectoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectoryKey(<redacted>)")
    }
}

/// Unambiguous characters (no 0/o, 1/l/i) that every softphone keypad and config form accepts.
const PASSWORD_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// 16 characters of a 31-letter alphabet: about 79 bits.
const PASSWORD_LEN: usize = 16;

impl DirectoryKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut b);
        Self(b)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for p in parts {
            // Length-prefixed, so ("ab","c") and ("a","bc") differ.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// The SIP password of `number` in its `generation`.
    pub fn password(&self, number: &ExtensionNumber, generation: u64) -> String {
        let d = self.mac(&[
            b"gridedge extension password",
            number.as_str().as_bytes(),
            &generation.to_be_bytes(),
        ]);
        d.iter()
            .take(PASSWORD_LEN)
            .map(|b| PASSWORD_ALPHABET[usize::from(*b) % PASSWORD_ALPHABET.len()] as char)
            .collect()
    }

    /// The certificate of `project` in its `generation`.
    pub fn certificate(&self, project: &ProjectCode, generation: u64) -> Certificate {
        let d = self.mac(&[
            b"gridedge project certificate",
            project.as_str().as_bytes(),
            &generation.to_be_bytes(),
        ]);
        Certificate(hex::encode_upper(&d[..16]))
    }
}

/// A fresh random generation for a newly allocated project or extension.
pub fn new_generation() -> u64 {
    rand::Rng::gen(&mut rand::thread_rng())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn nums(v: Vec<ExtensionNumber>) -> Vec<String> {
        v.into_iter().map(|n| n.0).collect()
    }

    #[test]
    fn codes_and_numbers_are_validated() {
        assert!(ProjectCode::parse("P-2020_04.a").is_ok());
        for bad in ["", "a b", "项目", "a/b", &"x".repeat(65)] {
            assert_eq!(ProjectCode::parse(bad), Err(DirectoryError::BadProjectCode));
        }
        assert!(ExtensionNumber::parse("8000").is_ok());
        for bad in ["", "80a0", "+8000", &"1".repeat(17)] {
            assert_eq!(
                ExtensionNumber::parse(bad),
                Err(DirectoryError::BadExtension)
            );
        }
        let c = Certificate::parse("2a5e4fe00e3839c10cbba45687811342").unwrap();
        assert_eq!(c.as_str(), "2A5E4FE00E3839C10CBBA45687811342");
        assert!(Certificate::parse("2A5E").is_err());
        assert!(!format!("{c:?}").contains("2A5E"));
    }

    #[test]
    fn ranges_parse_and_refuse_overlap() {
        let r = Ranges::parse(&["8000-8009".into(), "0100-0102".into()]).unwrap();
        assert_eq!(r.capacity(), 13);
        assert!(r.contains("8005") && r.contains("0101"));
        assert!(!r.contains("101") && !r.contains("8010") && !r.contains("08005"));
        for bad in ["8000", "9-1", "a-b", "80-8000000000000000000", "0100-99"] {
            assert!(
                matches!(
                    Ranges::parse(&[bad.into()]),
                    Err(DirectoryError::BadRange(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Ranges::parse(&["8000-8099".into(), "8050-8150".into()]),
            Err(DirectoryError::OverlappingRanges(..))
        ));
    }

    #[test]
    fn allocation_prefers_a_contiguous_block_then_fills_gaps() {
        let r = Ranges::parse(&["8000-8009".into()]).unwrap();
        assert_eq!(
            nums(r.allocate(&used(&["8001", "8004"]), 3).unwrap()),
            ["8005", "8006", "8007"]
        );
        assert_eq!(
            nums(r.allocate(&used(&["8001", "8004", "8008"]), 4).unwrap()),
            ["8000", "8002", "8003", "8005"]
        );
        assert_eq!(
            r.allocate(&used(&["8000", "8001"]), 9),
            Err(DirectoryError::RangeExhausted { wanted: 9, free: 8 })
        );
        assert_eq!(r.allocate(&used(&[]), 0).unwrap(), vec![]);
        let widths = Ranges::parse(&["0098-0101".into()]).unwrap();
        assert_eq!(
            nums(widths.allocate(&used(&[]), 4).unwrap()),
            ["0098", "0099", "0100", "0101"]
        );
    }

    #[test]
    fn derived_secrets_are_stable_per_generation_and_differ_otherwise() {
        let k = DirectoryKey::from_bytes([7; 32]);
        let n = ExtensionNumber::parse("8000").unwrap();
        let p = k.password(&n, 1);
        assert_eq!(p.len(), PASSWORD_LEN);
        assert!(p.bytes().all(|b| PASSWORD_ALPHABET.contains(&b)));
        assert_eq!(p, k.password(&n, 1));
        assert_ne!(p, k.password(&n, 2));
        assert_ne!(p, DirectoryKey::from_bytes([8; 32]).password(&n, 1));
        let code = ProjectCode::parse("P1").unwrap();
        let c = k.certificate(&code, 5);
        assert_eq!(c.as_str().len(), 32);
        assert_eq!(Certificate::parse(c.as_str()).unwrap(), c);
        assert_ne!(c, k.certificate(&code, 6));
        assert!(!format!("{k:?}").contains('7'));
    }
}
