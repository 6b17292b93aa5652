//! A minimal SIP user-agent client for driving the registrar core without sockets: it builds
//! REGISTER requests and answers digest challenges the way a phone does. Shared by the core
//! tests and the Criterion benches (`#[path]`-included), so it depends only on the public API.

#![allow(dead_code)]

use gridedge::sip::digest::{compute_response, ha1_hex, Algorithm, Qop};
use gridedge::sip::message::{HeaderName, Response};

pub struct Uac {
    pub user: String,
    pub password: String,
    pub realm: String,
    pub call_id: String,
    pub cseq: u32,
    pub contact: String,
    pub branch_seq: u64,
    pub nc: u32,
    /// The last challenge's nonce and algorithm, reused with a growing nonce-count as a phone
    /// caches credentials.
    pub nonce: Option<(String, Algorithm)>,
}

impl Uac {
    pub fn new(user: &str, password: &str) -> Uac {
        Uac {
            user: user.into(),
            password: password.into(),
            realm: "gridedge".into(),
            call_id: format!("{user}-call@192.0.2.10"),
            cseq: 0,
            contact: format!("<sip:{user}@192.0.2.10:5062>"),
            branch_seq: 0,
            nc: 0,
            nonce: None,
        }
    }

    /// A REGISTER with the given extra header lines (each without CRLF).
    pub fn register(&mut self, extra: &[&str]) -> Vec<u8> {
        self.cseq += 1;
        self.branch_seq += 1;
        let mut s = format!(
            "REGISTER sip:gridedge.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-{}-{};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{u}@gridedge.test>;tag=ft-{u}\r\n\
             To: <sip:{u}@gridedge.test>\r\n\
             Call-ID: {}\r\n\
             CSeq: {} REGISTER\r\n",
            self.user,
            self.branch_seq,
            self.call_id,
            self.cseq,
            u = self.user
        );
        for e in extra {
            s.push_str(e);
            s.push_str("\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    /// Remembers the first challenge of `resp` whose algorithm we prefer (the first offered).
    pub fn take_challenge(&mut self, resp: &Response) {
        let www = resp
            .headers
            .get(&HeaderName::WwwAuthenticate)
            .expect("401 carries a challenge");
        let nonce = param(www, "nonce").expect("nonce");
        let alg = param(www, "algorithm")
            .and_then(|a| Algorithm::parse(&a).map(|(a, _)| a))
            .unwrap_or(Algorithm::Md5);
        self.nonce = Some((nonce, alg));
        self.nc = 0;
    }

    /// An `Authorization` header line answering the remembered challenge.
    pub fn authorization(&mut self, uri: &str) -> String {
        let (nonce, alg) = self.nonce.clone().expect("a challenge first");
        self.nc += 1;
        let ha1 = ha1_hex(alg, &self.user, &self.realm, &self.password);
        let cnonce = format!("cn{}", self.nc);
        let resp = compute_response(
            alg,
            &ha1,
            "REGISTER",
            uri,
            &nonce,
            Some((Qop::Auth, self.nc, &cnonce)),
            b"",
        );
        format!(
            "Authorization: Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}, qop=auth, nc={:08x}, cnonce=\"{}\"",
            self.user,
            self.realm,
            nonce,
            uri,
            resp,
            alg.token(),
            self.nc,
            cnonce
        )
    }
}

/// Reads one auth-param (quoted or token) from a challenge header value.
pub fn param(header: &str, name: &str) -> Option<String> {
    let start = header.find(&format!("{name}="))? + name.len() + 1;
    let rest = &header[start..];
    if let Some(q) = rest.strip_prefix('"') {
        Some(q[..q.find('"')?].to_string())
    } else {
        Some(rest.split([',', ' ']).next()?.to_string())
    }
}
