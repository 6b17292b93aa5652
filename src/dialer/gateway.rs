//! Lines (线路, seed 004 §15-17, 004:L497-640): a gateway FreeSWITCH dials through, with the
//! calls it may carry at once. Domain type only; the API parses, `dialer/store.rs` persists,
//! [`super::lines::LineBook`] enforces the caps.

use serde::{Deserialize, Serialize};

/// A gateway as `add/v1` and `update/v1` describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// Database id (`id` in update/getList).
    #[serde(default)]
    pub id: i64,
    /// `gwCode`: the name FreeSWITCH knows the gateway by (`sofia/gateway/<gwCode>/...`).
    pub gw_code: String,
    pub gw_name: String,
    /// 1 主动 (we register to the carrier), 2 被动 (the carrier sends to us).
    pub register_type: u8,
    /// The caller ID the carrier assigned, used when a task has no other.
    pub origination_call_id: Option<String>,
    pub codec: Option<String>,
    /// Prefix dialled before mobile numbers (11 digits starting with 1).
    pub mobile_phone_prefix: Option<String>,
    /// Prefix dialled before every other number.
    pub fixed_phone_prefix: Option<String>,
    /// `host:port` of the carrier.
    pub realm: String,
    pub username: Option<String>,
    /// The trunk password: FreeSWITCH needs it in clear to register, so it cannot be hashed;
    /// it is never returned by the API nor logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub remark: Option<String>,
    pub call_limit: Option<i64>,
    pub bill_type: Option<u8>,
    pub billsec: Option<i64>,
    pub price: Option<f64>,
    /// 1 enabled, 0 disabled: a disabled gateway carries no new calls.
    pub enabled: bool,
    /// `expectCount` (预计线路数): how many calls the gateway carries at once.
    pub concurrency: u32,
    pub return_visit: bool,
    pub account_balance: Option<f64>,
    pub recharged_amount: Option<f64>,
}

impl Gateway {
    /// The digits FreeSWITCH dials for `number`: the mobile prefix before 11-digit numbers
    /// starting with 1 (mainland mobiles), the fixed prefix before everything else.
    pub fn dial_digits(&self, number: &str) -> String {
        let mobile = number.len() == 11 && number.starts_with('1');
        let prefix = if mobile {
            self.mobile_phone_prefix.as_deref()
        } else {
            self.fixed_phone_prefix.as_deref()
        };
        format!("{}{number}", prefix.unwrap_or(""))
    }
}

/// Whether a dial prefix is safe to splice into a dial string: digits, `+`, `*`, `#` only.
pub fn valid_prefix(p: &str) -> bool {
    p.len() <= 16
        && p.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> Gateway {
        Gateway {
            id: 1,
            gw_code: "1001".into(),
            gw_name: "t".into(),
            register_type: 1,
            origination_call_id: None,
            codec: None,
            mobile_phone_prefix: Some("9".into()),
            fixed_phone_prefix: Some("0".into()),
            realm: "127.0.0.1:5060".into(),
            username: None,
            password: Some("secret".into()),
            remark: None,
            call_limit: None,
            bill_type: None,
            billsec: None,
            price: None,
            enabled: true,
            concurrency: 4,
            return_visit: false,
            account_balance: None,
            recharged_amount: None,
        }
    }

    #[test]
    fn prefixes_follow_the_number_kind() {
        let g = gw();
        assert_eq!(g.dial_digits("13900000000"), "913900000000");
        assert_eq!(g.dial_digits("02133195795"), "002133195795");
        assert!(valid_prefix("0") && valid_prefix("+86") && !valid_prefix("0,}"));
    }
}
