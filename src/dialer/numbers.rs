//! Call lists: numbers normalized and checked on import, de-duplicated the four ways seed 000's
//! `importMobile` offers (`deduplicationType`, 000:L1822: 1 none, 2 within the imported data,
//! 3 within the batch, 4 within the task), and screened against blacklists. Sans-IO: the
//! caller supplies what the batch and task already hold.

use std::collections::HashSet;

/// A dialable number: digits, optionally led by `+`, 3 to 20 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("empty number")]
    Empty,
    #[error("{0:?} contains characters other than digits, spaces, dashes, dots, parentheses and a leading +")]
    Characters(String),
    #[error("{0:?} has {1} digits; a number has 3 to 20")]
    Length(String, usize),
}

/// Normalizes what a list file or an API call gives: separators removed (` `, `-`, `.`, `(`,
/// `)`), a leading `+` kept; anything else refused rather than guessed.
pub fn normalize(raw: &str) -> Result<PhoneNumber, NumberError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(NumberError::Empty);
    }
    let shown: String = t.chars().take(40).collect();
    let (plus, rest) = match t.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let mut digits = String::with_capacity(rest.len() + 1);
    if plus {
        digits.push('+');
    }
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(NumberError::Characters(shown)),
        }
    }
    let n = digits.len() - usize::from(plus);
    if !(3..=20).contains(&n) {
        return Err(NumberError::Length(shown, n));
    }
    Ok(PhoneNumber(digits))
}

/// `deduplicationType` (000:L1822).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub enum Dedupe {
    /// 1 (or absent): keep every entry.
    #[default]
    None,
    /// 2: drop repeats within this import.
    WithinImport,
    /// 3: also drop numbers the batch already holds.
    WithinBatch,
    /// 4: also drop numbers the task already holds (any batch).
    WithinTask,
}

impl Dedupe {
    pub fn from_code(code: &str) -> Option<Dedupe> {
        match code.trim() {
            "" | "1" => Some(Dedupe::None),
            "2" => Some(Dedupe::WithinImport),
            "3" => Some(Dedupe::WithinBatch),
            "4" => Some(Dedupe::WithinTask),
            _ => None,
        }
    }
}

/// Why an imported entry was not taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum Skipped {
    Invalid { line: usize, error: String },
    Duplicate { line: usize, number: PhoneNumber },
    Blacklisted { line: usize, number: PhoneNumber },
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ImportOutcome {
    /// Accepted numbers in import order.
    pub accepted: Vec<PhoneNumber>,
    pub skipped: Vec<Skipped>,
}

/// Screens an import. `in_batch` / `in_task` are the numbers already held (only consulted by
/// the modes that need them); `blacklisted` says whether a number is on any blacklist the
/// task names. Lines are 1-based positions in `raw`.
pub fn import<'a>(
    raw: impl IntoIterator<Item = &'a str>,
    mode: Dedupe,
    in_batch: &HashSet<PhoneNumber>,
    in_task: &HashSet<PhoneNumber>,
    blacklisted: impl Fn(&PhoneNumber) -> bool,
) -> ImportOutcome {
    let mut out = ImportOutcome::default();
    let mut seen: HashSet<PhoneNumber> = HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let line = i + 1;
        let n = match normalize(r) {
            Ok(n) => n,
            Err(e) => {
                out.skipped.push(Skipped::Invalid {
                    line,
                    error: e.to_string(),
                });
                continue;
            }
        };
        if blacklisted(&n) {
            out.skipped.push(Skipped::Blacklisted { line, number: n });
            continue;
        }
        let dup = match mode {
            Dedupe::None => false,
            Dedupe::WithinImport => seen.contains(&n),
            Dedupe::WithinBatch => seen.contains(&n) || in_batch.contains(&n),
            Dedupe::WithinTask => {
                seen.contains(&n) || in_batch.contains(&n) || in_task.contains(&n)
            }
        };
        if dup {
            out.skipped.push(Skipped::Duplicate { line, number: n });
            continue;
        }
        seen.insert(n.clone());
        out.accepted.push(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PhoneNumber {
        normalize(s).unwrap()
    }

    #[test]
    fn normalization() {
        assert_eq!(n(" 139-0000 0000 ").as_str(), "13900000000");
        assert_eq!(n("+86 (139) 0000.0000").as_str(), "+8613900000000");
        assert_eq!(n("0951-1234567").as_str(), "09511234567");
        assert_eq!(normalize(""), Err(NumberError::Empty));
        assert!(matches!(
            normalize("139abc"),
            Err(NumberError::Characters(_))
        ));
        assert!(matches!(normalize("1+39"), Err(NumberError::Characters(_))));
        assert!(matches!(normalize("12"), Err(NumberError::Length(_, 2))));
        assert!(matches!(normalize("+"), Err(NumberError::Length(_, 0))));
        assert!(matches!(
            normalize(&"1".repeat(21)),
            Err(NumberError::Length(_, 21))
        ));
        // A hostile line is reported shortened, not echoed whole.
        match normalize(&format!("{}x", "9".repeat(10_000))) {
            Err(NumberError::Characters(s)) => assert_eq!(s.len(), 40),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_four_dedupe_modes() {
        let raw = [
            "13900000001",
            "139-0000-0001",
            "13900000002",
            "13900000003",
            "bad",
        ];
        let batch: HashSet<_> = [n("13900000002")].into();
        let task: HashSet<_> = [n("13900000003")].into();
        let none = |_: &PhoneNumber| false;
        let count = |m| import(raw, m, &batch, &task, none).accepted.len();
        assert_eq!(count(Dedupe::None), 4);
        assert_eq!(count(Dedupe::WithinImport), 3);
        assert_eq!(count(Dedupe::WithinBatch), 2);
        assert_eq!(count(Dedupe::WithinTask), 1);
        let out = import(raw, Dedupe::WithinTask, &batch, &task, none);
        assert_eq!(out.accepted, vec![n("13900000001")]);
        assert_eq!(
            out.skipped[0],
            Skipped::Duplicate {
                line: 2,
                number: n("13900000001")
            }
        );
        assert!(matches!(
            out.skipped.last(),
            Some(Skipped::Invalid { line: 5, .. })
        ));
        assert_eq!(Dedupe::from_code("4"), Some(Dedupe::WithinTask));
        assert_eq!(Dedupe::from_code(""), Some(Dedupe::None));
        assert_eq!(Dedupe::from_code("5"), None);
    }

    #[test]
    fn blacklisted_numbers_are_never_accepted() {
        let black: HashSet<_> = [n("13900000009")].into();
        let out = import(
            ["139 0000 0009", "13900000008"],
            Dedupe::None,
            &HashSet::new(),
            &HashSet::new(),
            |p| black.contains(p),
        );
        assert_eq!(out.accepted, vec![n("13900000008")]);
        assert_eq!(
            out.skipped,
            vec![Skipped::Blacklisted {
                line: 1,
                number: n("13900000009")
            }]
        );
    }

    proptest::proptest! {
        #[test]
        fn import_never_panics_and_accepts_only_valid_unique_numbers(
            lines in proptest::collection::vec(".{0,30}", 0..50)
        ) {
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let out = import(refs, Dedupe::WithinImport, &HashSet::new(), &HashSet::new(), |_| false);
            let uniq: HashSet<_> = out.accepted.iter().collect();
            proptest::prop_assert_eq!(uniq.len(), out.accepted.len());
            proptest::prop_assert_eq!(out.accepted.len() + out.skipped.len(), lines.len());
            for a in &out.accepted {
                proptest::prop_assert_eq!(normalize(a.as_str()), Ok(a.clone()));
            }
        }
    }
}
