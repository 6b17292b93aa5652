//! SIP over TLS (RFC 3261 §18.3 framing over rustls) and SIP over secure WebSocket
//! (RFC 7118, `wss`) against the real binary, with certificates minted at test time by the
//! `openssl` CLI: a throw-away CA and a `localhost` leaf (SAN `DNS:localhost,IP:127.0.0.1`),
//! EC P-256. The client trusts only that CA and verifies the server name `localhost`, so a
//! passing handshake proves the daemon serves the configured chain.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// Bound on every connect / TLS handshake / WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------
// Certificates (openssl CLI)
// ------------------------------------------------------------------------------------------

struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

const CA_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = gridedge-e2e test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

const LEAF_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Runs `openssl` in `dir` with whitespace-separated `args` (relative file names only).
fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let bin = require_tool("openssl");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(dir).args(&args);
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(20));
    assert!(
        status.success(),
        "openssl {args:?} failed ({status})\nstdout:\n{out}\nstderr:\n{err}"
    );
}

impl Certs {
    fn generate() -> Certs {
        // fails (never skips) with an install hint when openssl is missing
        require_tool("openssl");
        let dir = tempfile::Builder::new()
            .prefix("gridedge-e2e-tls-")
            .tempdir()
            .expect("cert tempdir");
        let p = dir.path();
        fs::write(p.join("ca.cnf"), CA_CNF).unwrap();
        fs::write(p.join("leaf.cnf"), LEAF_CNF).unwrap();
        let ec = "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256";
        openssl(p, &format!("{ec} -out ca.key"));
        openssl(
            p,
            "req -x509 -new -key ca.key -sha256 -days 2 -config ca.cnf -extensions v3_ca \
             -out ca.pem",
        );
        openssl(p, &format!("{ec} -out leaf.key"));
        openssl(
            p,
            "req -new -key leaf.key -sha256 -config leaf.cnf -out leaf.csr",
        );
        openssl(
            p,
            "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 4242 -days 2 -sha256 \
             -extfile leaf.cnf -extensions v3_leaf -out leaf.pem",
        );
        Certs {
            ca: p.join("ca.pem"),
            cert: p.join("leaf.pem"),
            key: p.join("leaf.key"),
            _dir: dir,
        }
    }

    /// The `[sip]` override enabling TLS and WSS on ephemeral ports with these files.
    fn overrides(&self) -> String {
        let s = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        format!(
            "[sip]\ntls = [\"127.0.0.1:0\"]\nwss = [\"127.0.0.1:0\"]\ntls_cert = {}\ntls_key = {}\n",
            s(&self.cert),
            s(&self.key)
        )
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let pem = fs::read(&self.ca).expect("read CA pem");
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .expect("parse CA pem");
        assert_eq!(certs.len(), 1, "CA pem must hold one certificate");
        for c in certs {
            roots.add(c).expect("add CA to the root store");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(cfg)
    }
}

/// A daemon with TLS and WSS listeners, plus the certificates it serves.
fn tls_daemon() -> (Daemon, Certs) {
    let certs = Certs::generate();
    let d = Daemon::start(&certs.overrides());
    if d.listeners.tls.len() != 1 || d.listeners.wss.len() != 1 {
        d.fail(&format!(
            "listeners.json must list one tls and one wss listener: {:?}",
            d.listeners
        ));
    }
    for a in d.listeners.tls.iter().chain(&d.listeners.wss) {
        if a.port() == 0 || !a.ip().is_loopback() {
            d.fail(&format!("bad tls/wss listener address {a}"));
        }
    }
    (d, certs)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn tls_connect(
    cfg: Arc<rustls::ClientConfig>,
    server: SocketAddr,
) -> Result<TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio::net::TcpStream::connect(server))
        .await
        .map_err(|_| "TCP connect timed out".to_string())?
        .map_err(|e| format!("TCP connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake: {e}"))
}

// ------------------------------------------------------------------------------------------
// SIP over TLS
// ------------------------------------------------------------------------------------------

struct TlsConn {
    rt: tokio::runtime::Runtime,
    tls: Option<TlsStream<tokio::net::TcpStream>>,
    local: SocketAddr,
    reader: StreamReader,
}

/// One read within `left`; `read` is cancel-safe, so a timeout loses no bytes (they stay in
/// rustls' buffer).
fn tls_read(
    rt: &tokio::runtime::Runtime,
    tls: &mut Option<TlsStream<tokio::net::TcpStream>>,
    buf: &mut Vec<u8>,
    left: Duration,
) -> Fill {
    let Some(tls) = tls.as_mut() else {
        return Fill::Closed;
    };
    let mut tmp = vec![0u8; 16 * 1024];
    match rt.block_on(async { tokio::time::timeout(left, tls.read(&mut tmp)).await }) {
        Err(_) => Fill::Timeout,
        Ok(Ok(0)) | Ok(Err(_)) => Fill::Closed,
        Ok(Ok(n)) => {
            buf.extend_from_slice(&tmp[..n]);
            Fill::Data
        }
    }
}

impl TlsConn {
    fn connect(cfg: Arc<rustls::ClientConfig>, server: SocketAddr) -> TlsConn {
        let rt = runtime();
        let tls = rt
            .block_on(tls_connect(cfg, server))
            .unwrap_or_else(|e| panic!("TLS connect to {server}: {e}"));
        let local = tls.get_ref().0.local_addr().unwrap();
        TlsConn {
            rt,
            tls: Some(tls),
            local,
            reader: StreamReader::default(),
        }
    }

    /// Raw bytes as they arrive (for the CRLF keep-alive check).
    fn recv_raw(&mut self, timeout: Duration) -> Recv {
        let (rt, tls) = (&self.rt, &mut self.tls);
        self.reader
            .recv_raw(timeout, |buf, left| tls_read(rt, tls, buf, left))
    }

    /// Sends close_notify, shuts the write half and drops the connection.
    fn close(mut self) {
        if let Some(mut tls) = self.tls.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), tls.shutdown()).await;
            });
        }
    }
}

impl SipConn for TlsConn {
    fn transport(&self) -> &'static str {
        "TLS"
    }
    fn sent_by(&self) -> String {
        self.local.to_string()
    }
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let tls = self.tls.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    tls.write_all(data).await?;
                    tls.flush().await
                })
                .await
            })
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }
    fn recv(&mut self, timeout: Duration) -> Recv {
        let (rt, tls) = (&self.rt, &mut self.tls);
        self.reader
            .recv_message(timeout, |buf, left| tls_read(rt, tls, buf, left))
    }
}

fn wait_bindings(d: &Daemon, want: f64, ctx: &str) {
    if poll_until(Duration::from_secs(5), || {
        (d.bindings_active() == want).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "{ctx}: gridedge_sip_bindings_active never reached {want}:\n{}",
            d.metrics()
        ));
    }
}

#[test]
fn tls_register_with_digest() {
    let (mut d, certs) = tls_daemon();
    let mut c = TlsConn::connect(certs.client_config(), d.listeners.tls[0]);
    let contact = format!("<sip:1001@{};transport=tls>", c.sent_by());
    let mut uac = Uac::new("1001");

    // 1. unauthenticated REGISTER -> 401 with Digest challenges
    let headers = vec![("Contact", contact.clone()), ("Expires", "600".to_string())];
    let first = uac.request(&c, "REGISTER", &headers, "");
    assert!(first.contains("Via: SIP/2.0/TLS "), "{first}");
    let challenge = transact(&mut c, &first, uac.cseq)
        .unwrap_or_else(|| d.fail(&format!("no answer over TLS to REGISTER:\n{first}")));
    if challenge.code != 401 {
        d.fail(&format!(
            "TLS REGISTER without credentials must get 401:\n{}",
            challenge.raw
        ));
    }
    let via = challenge.header("via").unwrap_or("");
    assert!(
        via.contains("SIP/2.0/TLS") && via.contains(&c.sent_by()),
        "the 401 must carry our TLS Via back: {via}"
    );
    let ch = pick_challenge(&challenge, Some("SHA-256"), "TLS 401");
    assert_eq!(ch.realm, "gridedge", "realm: {}", challenge.raw);
    assert!(!ch.nonce.is_empty(), "empty nonce: {}", challenge.raw);

    // 2. answered with SHA-256 Digest -> 200 listing the TLS contact
    let auth = authorization(
        &ch,
        "1001",
        &password_of("1001"),
        "REGISTER",
        &uac.request_uri(),
        1,
    );
    let mut headers = headers;
    headers.push(("Authorization", auth));
    let second = uac.request(&c, "REGISTER", &headers, "");
    let ok = transact(&mut c, &second, uac.cseq)
        .unwrap_or_else(|| d.fail("no answer over TLS to the authenticated REGISTER"));
    if ok.code != 200 {
        d.fail(&format!(
            "authenticated TLS REGISTER not accepted:\n--- sent:\n{second}\n--- got:\n{}",
            ok.raw
        ));
    }
    let expires = assert_binding_listed(&ok, contact_uri(&contact), "TLS REGISTER 200");
    assert!(
        (60..=600).contains(&expires),
        "expires {expires} outside [min_expires, requested]:\n{}",
        ok.raw
    );
    assert_eq!(d.bindings_active(), 1.0, "{}", d.metrics());
    let conns = d
        .metric("gridedge_sip_connections_active", &["transport=\"tls\""])
        .unwrap_or(0.0);
    assert_eq!(conns, 1.0, "one open TLS connection:\n{}", d.metrics());

    // visible from another transport
    let mut udp = d.udp_client();
    let q = query_bindings(&mut udp, "1001", "UDP query for the TLS binding");
    assert_binding_listed(&q, contact_uri(&contact), "UDP query for the TLS binding");

    // 3. the binding lives on this connection: closing it removes the binding
    c.close();
    wait_bindings(&d, 0.0, "after closing the TLS connection");
    let q = query_bindings(&mut udp, "1001", "UDP query after the TLS close");
    assert!(
        q.contacts().is_empty(),
        "TLS binding still listed after close:\n{}",
        q.raw
    );
    d.assert_alive("after the TLS close");
}

#[test]
fn tls_crlf_keepalive() {
    let (d, certs) = tls_daemon();
    let mut c = TlsConn::connect(certs.client_config(), d.listeners.tls[0]);
    // RFC 5626 §4.4.1: a double-CRLF ping is answered with a single CRLF pong
    for round in 1..=2 {
        c.send(b"\r\n\r\n").unwrap();
        match c.recv_raw(SIP_TIMEOUT) {
            Recv::Msg(m) => assert_eq!(
                m,
                b"\r\n",
                "TLS keep-alive round {round}: expected exactly CRLF, got {:?}",
                String::from_utf8_lossy(&m)
            ),
            other => d.fail(&format!(
                "TLS keep-alive round {round}: no CRLF pong ({other:?})"
            )),
        }
    }
    // still a working SIP flow afterwards
    options_ok(&mut c, "OPTIONS over TLS after keep-alives");
}

// ------------------------------------------------------------------------------------------
// SIP over secure WebSocket
// ------------------------------------------------------------------------------------------

type WssStream = tokio_tungstenite::WebSocketStream<TlsStream<tokio::net::TcpStream>>;

struct WssConn {
    rt: tokio::runtime::Runtime,
    ws: WssStream,
    host: String,
    /// The `Sec-WebSocket-Protocol` the server selected in its handshake response.
    selected: Option<String>,
}

impl WssConn {
    fn connect(cfg: Arc<rustls::ClientConfig>, server: SocketAddr) -> WssConn {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::HeaderValue;
        let rt = runtime();
        let r = rt.block_on(async {
            let tls = tls_connect(cfg, server).await?;
            let mut req = format!("wss://localhost:{}/", server.port())
                .into_client_request()
                .map_err(|e| e.to_string())?;
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
            let (ws, resp) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::client_async(req, tls))
                    .await
                    .map_err(|_| "WebSocket handshake timed out".to_string())?
                    .map_err(|e| format!("WebSocket handshake: {e}"))?;
            let selected = resp
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            Ok::<_, String>((ws, selected))
        });
        let (ws, selected) = r.unwrap_or_else(|e| panic!("WSS connect to {server}: {e}"));
        WssConn {
            rt,
            ws,
            host: format!("{:012x}.invalid", rand::random::<u64>() & 0xffff_ffff_ffff),
            selected,
        }
    }
}

impl SipConn for WssConn {
    fn transport(&self) -> &'static str {
        "WSS"
    }
    fn sent_by(&self) -> String {
        self.host.clone()
    }
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        ws_send(&self.rt, &mut self.ws, data)
    }
    fn recv(&mut self, timeout: Duration) -> Recv {
        ws_recv(&self.rt, &mut self.ws, timeout)
    }
}

#[test]
fn wss_register_and_options() {
    let (d, certs) = tls_daemon();
    let mut ws = WssConn::connect(certs.client_config(), d.listeners.wss[0]);
    assert_eq!(
        ws.selected
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("sip"),
        "RFC 7118 §4.1: the WSS handshake must select the sip subprotocol"
    );

    let r = options_ok(&mut ws, "OPTIONS over WSS");
    let via = r.header("via").unwrap_or("");
    assert!(
        via.contains("SIP/2.0/WSS") && via.contains(&ws.host),
        "the OPTIONS 200 must carry our WSS Via back: {via}"
    );

    let mut uac = Uac::new("1002");
    let contact = format!("<sip:1002@{};transport=ws>", ws.host);
    let m = uac.request(&ws, "REGISTER", &[("Contact", contact)], "");
    let r = transact(&mut ws, &m, uac.cseq)
        .unwrap_or_else(|| d.fail(&format!("no answer over WSS to REGISTER:\n{m}")));
    if r.code != 401 {
        d.fail(&format!(
            "WSS REGISTER without credentials must get 401:\n{}",
            r.raw
        ));
    }
    let chs = r.challenges();
    assert!(
        !chs.is_empty() && chs.iter().all(|c| c.realm == "gridedge"),
        "WSS 401 without a usable Digest challenge:\n{}",
        r.raw
    );
    let conns = d
        .metric("gridedge_sip_connections_active", &["transport=\"wss\""])
        .unwrap_or(0.0);
    assert_eq!(conns, 1.0, "one open WSS connection:\n{}", d.metrics());
}

// ------------------------------------------------------------------------------------------
// Hostile handshake
// ------------------------------------------------------------------------------------------

#[test]
fn tls_handshake_garbage_is_survived() {
    let (mut d, certs) = tls_daemon();
    let tls_addr = d.listeners.tls[0];

    // plaintext SIP where a ClientHello belongs
    let mut s = TcpStream::connect_timeout(&tls_addr, HANDSHAKE_TIMEOUT).expect("TCP connect");
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = s.local_addr().unwrap();
    let plain = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bKplaintext{:08x}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag=abc\r\n\
         To: <sip:probe@127.0.0.1>\r\n\
         Call-ID: plaintext@gridedge-e2e\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        rand::random::<u32>()
    );
    s.write_all(plain.as_bytes()).unwrap();

    // the daemon must close the connection (an alert first is fine, a SIP answer is not)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        let mut tmp = [0u8; 4096];
        match s.read(&mut tmp) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true, // reset
        }
    };
    if !closed {
        d.fail(&format!(
            "TLS listener kept a plaintext connection open for 5 s (got {got:?})"
        ));
    }
    assert!(
        !String::from_utf8_lossy(&got).contains("SIP/2.0"),
        "the TLS listener answered plaintext SIP in plaintext: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        got.is_empty() || got[0] == 0x15,
        "only a TLS alert record may precede the close, got {got:?}"
    );
    let refused = poll_until(Duration::from_secs(5), || {
        d.metric("gridedge_sip_connections_refused_total", &["tls_handshake"])
            .filter(|v| *v >= 1.0)
    });
    if refused.is_none() {
        d.fail(&format!(
            "failed TLS handshake not counted in gridedge_sip_connections_refused_total:\n{}",
            d.metrics()
        ));
    }

    // the listener and the daemon are fine afterwards
    let mut c = TlsConn::connect(certs.client_config(), tls_addr);
    let r = options_ok(&mut c, "TLS OPTIONS after a garbage handshake");
    assert!(
        r.header("via").unwrap_or("").contains("SIP/2.0/TLS"),
        "{}",
        r.raw
    );
    d.assert_alive("after a plaintext connection to the TLS port");
}

// ------------------------------------------------------------------------------------------
// Configuration errors
// ------------------------------------------------------------------------------------------

fn minimal_config(dir: &Path, tls: &str) -> PathBuf {
    let state = dir.join("state");
    fs::create_dir_all(&state).unwrap();
    let text = format!(
        "[log]\nlevel = \"info\"\n\n[state]\ndir = {state}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [sip]\nudp = [\"127.0.0.1:0\"]\ntcp = [\"127.0.0.1:0\"]\nws = [\"127.0.0.1:0\"]\n\
         tls = [\"127.0.0.1:0\"]\nwss = [\"127.0.0.1:0\"]\n{tls}\n\n\
         [[extensions]]\nuser = \"1001\"\npassword = \"s3cret-1001\"\n",
        state = toml::Value::String(state.display().to_string())
    );
    let path = dir.join("gridedge.toml");
    fs::write(&path, text).unwrap();
    path
}

fn gridedge(args: &[&str], config: &Path) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridedge"));
    cmd.args(args).arg(config);
    run_with_timeout(&mut cmd, Duration::from_secs(20))
}

#[test]
fn tls_without_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.pem");
    let missing_toml = toml::Value::String(missing.display().to_string()).to_string();

    // cert without key: a config error naming sip.tls_key, from check-config and from run
    let cfg = minimal_config(dir.path(), &format!("tls_cert = {missing_toml}"));
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let (status, out, err) = gridedge(args, &cfg);
        assert!(
            !status.success(),
            "gridedge {args:?} accepted tls_cert without tls_key ({status})\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            err.contains("sip.tls_key"),
            "gridedge {args:?}: stderr must name sip.tls_key\nstdout:\n{out}\nstderr:\n{err}"
        );
    }

    // both set, files missing: run must fail naming sip.tls_cert (not start without TLS)
    let cfg = minimal_config(
        dir.path(),
        &format!("tls_cert = {missing_toml}\ntls_key = {missing_toml}"),
    );
    let (status, out, err) = gridedge(&["run", "--config"], &cfg);
    assert!(
        !status.success(),
        "gridedge run started with unreadable TLS files ({status})\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        err.contains("sip.tls_cert"),
        "gridedge run: stderr must name sip.tls_cert\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        !dir.path().join("state/listeners.json").exists(),
        "listeners.json written although the TLS listeners could not start"
    );
}
