//! The FreeSWITCH Event Socket client against a scripted event socket over real loopback TCP
//! (`support/esl_server.rs`): authentication failures and backoff, frames split at every byte,
//! oversized frames, a disconnect in the middle of a call with the snapshot that follows,
//! `api`/`bgapi` correlation, consumer-queue overflow and shutdown.
//!
//! Nothing sleeps for a fixed time: every wait is on a condition with a deadline (the feed,
//! the server's state, or a short poll of a metric).

#[path = "support/esl_server.rs"]
mod esl_server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use esl_server::{channel_event, event_frame, EslServer};
use gridedge::metrics::Metrics;
use gridedge::switch::client::{EslClient, EslClientConfig, EslClientError, SwitchFeed};
use gridedge::switch::esl::{EslError, EslEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// Upper bound for anything that should happen "soon".
const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "ClueCon";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Test defaults: fast reconnects, generous answers.
fn test_config(server: &EslServer, password: &str) -> EslClientConfig {
    let mut config = EslClientConfig::new(server.addr().to_string(), password);
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    config.connect_timeout = Duration::from_secs(3);
    config.api_timeout = Duration::from_secs(5);
    config.feed_capacity = 256;
    config.max_outstanding = 64;
    config
}

struct Harness {
    client: EslClient,
    feed: mpsc::Receiver<SwitchFeed>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    fn start(config: EslClientConfig) -> Harness {
        init_tracing();
        let (tx, feed) = mpsc::channel(config.feed_capacity);
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (client, task) = EslClient::spawn(config, tx, metrics.clone(), shutdown.clone());
        Harness {
            client,
            feed,
            metrics,
            shutdown,
            task: Some(task),
        }
    }

    async fn next(&mut self) -> SwitchFeed {
        match timeout(WAIT, self.feed.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => panic!("the feed closed"),
            Err(_) => panic!("nothing on the feed within {WAIT:?}"),
        }
    }

    async fn connected(&mut self, generation: u64) -> Vec<BTreeMap<String, String>> {
        match self.next().await {
            SwitchFeed::Connected {
                generation: g,
                channels: Some(channels),
            } if g == generation => channels,
            other => panic!(
                "expected Connected {{ generation: {generation} }} with a snapshot, got {other:?}"
            ),
        }
    }

    async fn event(&mut self) -> EslEvent {
        match self.next().await {
            SwitchFeed::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    async fn disconnected(&mut self, generation: u64) -> String {
        match self.next().await {
            SwitchFeed::Disconnected {
                generation: g,
                reason,
            } if g == generation => reason,
            other => panic!("expected Disconnected {{ generation: {generation} }}, got {other:?}"),
        }
    }

    fn assert_feed_empty(&mut self) {
        if let Ok(item) = self.feed.try_recv() {
            panic!("unexpected item on the feed: {item:?}");
        }
    }

    fn connects(&self, result: &str) -> u64 {
        self.metrics.esl_connects.with_label_values(&[result]).get()
    }

    fn events_counted(&self, name: &str) -> u64 {
        self.metrics.esl_events.with_label_values(&[name]).get()
    }

    /// Cancels the token and returns how long the task took to end.
    async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        let task = self.task.take().expect("stopped once");
        timeout(Duration::from_secs(2), task)
            .await
            .expect("the client task ends within 2 s of shutdown")
            .expect("the client task does not panic");
        started.elapsed()
    }
}

/// Polls `cond` every few milliseconds until it holds; for metrics, which cannot notify.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_is_retried_with_backoff_until_the_password_matches() {
    let server = EslServer::start(PASSWORD).await;
    let mut config = test_config(&server, "not-the-password");
    config.reconnect_min = Duration::from_millis(30);
    config.reconnect_max = Duration::from_millis(300);
    let mut h = Harness::start(config);

    assert!(
        server.wait_until(WAIT, |s| s.auth_attempts >= 3).await,
        "the client keeps retrying after -ERR invalid"
    );
    eventually("auth_failed counted twice", || {
        h.connects("auth_failed") >= 2
    })
    .await;
    assert!(!h.client.is_connected());
    assert_eq!(h.metrics.esl_connected.get(), 0);
    assert_eq!(h.connects("ok"), 0);
    assert!(
        matches!(
            h.client.api("echo hi").await,
            Err(EslClientError::NotConnected)
        ),
        "no api before the handshake succeeds"
    );
    h.assert_feed_empty();
    assert!(
        server
            .commands()
            .iter()
            .all(|c| c == "auth not-the-password"),
        "only auth was attempted: {:?}",
        server.commands()
    );

    server.set_password("not-the-password");
    assert!(
        h.client.wait_connected(WAIT).await,
        "connects once the password matches"
    );
    assert_eq!(h.connected(1).await, Vec::<BTreeMap<String, String>>::new());
    assert_eq!(h.connects("ok"), 1);
    assert!(h.connects("auth_failed") >= 2);
    assert_eq!(h.metrics.esl_connected.get(), 1);
    let commands = server.commands();
    let subscribe = commands
        .iter()
        .find(|c| c.starts_with("event "))
        .expect("subscribed");
    assert_eq!(
        subscribe,
        "event json CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_HOLD \
         CHANNEL_UNHOLD CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB CUSTOM sofia::register \
         sofia::unregister sofia::expire callcenter::info"
    );
    h.stop().await;
}

/// A compact event of a few hundred bytes with multi-byte UTF-8 inside, so some split points
/// fall inside a character.
fn small_event() -> Vec<(String, String)> {
    owned(&[
        ("Event-Name", "CHANNEL_ANSWER"),
        ("Core-UUID", esl_server::CORE_UUID),
        ("FreeSWITCH-Hostname", esl_server::HOSTNAME),
        ("Event-Date-Timestamp", "1763022218497314"),
        ("Event-Sequence", "4711"),
        ("Channel-Call-State", "ACTIVE"),
        ("Unique-ID", "0d6b1c1e-8f4a-4c55-b0d2-6a3f9e1b7c20"),
        ("Caller-Caller-ID-Name", "Zoë Müller"),
        ("Caller-Caller-ID-Number", "1001"),
        ("Caller-Destination-Number", "8001"),
        ("variable_sip_from_user", "1001"),
    ])
}

fn check_small_event(event: &EslEvent, expected: &EslEvent, how: &str) {
    assert_eq!(event, expected, "{how}");
    assert_eq!(event.name(), Some("CHANNEL_ANSWER"), "{how}");
    assert_eq!(
        event.unique_id(),
        Some("0d6b1c1e-8f4a-4c55-b0d2-6a3f9e1b7c20"),
        "{how}"
    );
    assert_eq!(
        event.get("Caller-Caller-ID-Name"),
        Some("Zoë Müller"),
        "{how}"
    );
    assert_eq!(event.sequence(), Some(4711), "{how}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_split_at_every_byte_boundary_decodes_identically() {
    let server = EslServer::start(PASSWORD).await;
    let mut h = Harness::start(test_config(&server, PASSWORD));
    h.connected(1).await;

    let headers = small_event();
    let frame = event_frame(&headers, None);
    assert!((200..1000).contains(&frame.len()), "{} bytes", frame.len());
    let blank = frame
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("header block")
        + 2;
    let expected = EslEvent::parse_json(&frame[blank..]).expect("the test frame is valid");

    // The gap only makes separate reads on the client likely; correctness does not depend
    // on it (the client must decode the same event however the bytes arrive).
    let gap = Duration::from_millis(1);
    for k in 1..frame.len() {
        let chunks = vec![frame[..k].to_vec(), frame[k..].to_vec()];
        assert!(
            server.push_chunks(chunks, gap).await,
            "written at split {k}"
        );
        let event = h.event().await;
        check_small_event(&event, &expected, &format!("split at {k}"));
    }

    // The whole frame one byte at a time, then the header block at once and the body one
    // byte at a time.
    let bytes: Vec<Vec<u8>> = frame.iter().map(|&b| vec![b]).collect();
    assert!(server.push_chunks(bytes, gap).await);
    check_small_event(&h.event().await, &expected, "byte at a time");
    let mut chunks = vec![frame[..blank].to_vec()];
    chunks.extend(frame[blank..].iter().map(|&b| vec![b]));
    assert!(server.push_chunks(chunks, gap).await);
    check_small_event(&h.event().await, &expected, "body byte at a time");

    assert_eq!(server.connections(), 1, "one connection throughout");
    assert_eq!(h.events_counted("CHANNEL_ANSWER"), frame.len() as u64 + 1);
    h.assert_feed_empty();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_drop_the_connection_and_it_recovers() {
    let server = EslServer::start(PASSWORD).await;
    let mut config = test_config(&server, PASSWORD);
    config.limits.max_body_bytes = 64 * 1024;
    config.limits.max_header_bytes = 8 * 1024;
    let mut h = Harness::start(config);
    h.connected(1).await;

    // A 1 GiB Content-Length: refused from the header block alone, nothing buffered.
    let mut bomb = b"Content-Length: 1073741824\nContent-Type: text/event-json\n\n".to_vec();
    bomb.extend_from_slice(b"{\"Event-Name\":\"CHANNEL_CREATE\",\"Pad\":\"");
    bomb.extend(std::iter::repeat_n(b'x', 4096));
    server.push_raw(&bomb).await;
    let reason = h.disconnected(1).await;
    assert!(reason.contains("exceeds the body limit"), "{reason}");
    assert!(
        server.wait_until(WAIT, |s| s.closed_by_client >= 1).await,
        "the client closed the connection"
    );
    h.connected(2).await;

    // A header block that never ends.
    let endless = format!("Content-Type: text/event-json\nX-Pad: {}", "p".repeat(9000));
    server.push_raw(endless.as_bytes()).await;
    let reason = h.disconnected(2).await;
    assert!(reason.contains("header block exceeds"), "{reason}");
    h.connected(3).await;

    // Events flow again on the new connection.
    let uuid = "3c1e9a55-2b7d-4f0e-8a61-5d9c0b4e7f12";
    let seq = server.next_sequence();
    server
        .push_event(&channel_event("CHANNEL_CREATE", uuid, "1002", "8001", seq))
        .await;
    let event = h.event().await;
    assert_eq!(event.unique_id(), Some(uuid));
    assert_eq!(event.get("Caller-Caller-ID-Number"), Some("1002"));
    assert_eq!(server.connections(), 3);
    assert_eq!(h.connects("ok"), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_mid_call_is_followed_by_a_snapshot_that_has_the_call() {
    let server = EslServer::start(PASSWORD).await;
    let mut h = Harness::start(test_config(&server, PASSWORD));
    assert!(h.connected(1).await.is_empty());

    let uuid = "9f8e7d6c-5b4a-4392-8170-6a5b4c3d2e1f";
    for name in ["CHANNEL_CREATE", "CHANNEL_ANSWER"] {
        let seq = server.next_sequence();
        assert!(
            server
                .push_event(&channel_event(name, uuid, "1001", "8001", seq))
                .await
        );
        let event = h.event().await;
        assert_eq!(event.name(), Some(name));
        assert_eq!(event.unique_id(), Some(uuid));
        assert_eq!(event.var("sip_from_user"), Some("1001"));
    }

    assert!(server.kill(), "there is a connection to kill");
    let reason = h.disconnected(1).await;
    assert!(!reason.is_empty());
    let channels = h.connected(2).await;
    assert_eq!(channels.len(), 1, "{channels:?}");
    let row = &channels[0];
    assert_eq!(row["uuid"], uuid);
    assert_eq!(row["callstate"], "ACTIVE");
    assert_eq!(row["cid_num"], "1001");
    assert_eq!(row["dest"], "8001");
    assert_eq!(row["direction"], "inbound");
    assert!(h.client.is_connected());

    let seq = server.next_sequence();
    server
        .push_event(&channel_event(
            "CHANNEL_HANGUP_COMPLETE",
            uuid,
            "1001",
            "8001",
            seq,
        ))
        .await;
    let hangup = h.event().await;
    assert_eq!(hangup.name(), Some("CHANNEL_HANGUP_COMPLETE"));
    assert_eq!(hangup.unique_id(), Some(uuid));
    assert_eq!(hangup.get("Hangup-Cause"), Some("NORMAL_CLEARING"));
    assert_eq!(hangup.sequence(), Some(seq));

    // The switch hanging up politely (disconnect notice) is handled the same way, and the
    // next snapshot no longer has the call.
    assert!(server.push_raw(esl_server::DISCONNECT_NOTICE).await);
    let reason = h.disconnected(2).await;
    assert!(reason.contains("disconnect notice"), "{reason}");
    assert!(h.connected(3).await.is_empty());

    assert_eq!(h.connects("ok"), 3);
    assert_eq!(h.metrics.esl_resyncs.with_label_values(&["ok"]).get(), 3);
    assert_eq!(h.events_counted("CHANNEL_CREATE"), 1);
    assert_eq!(h.events_counted("CHANNEL_HANGUP_COMPLETE"), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_bgapi_answers_reach_their_own_callers() {
    let server = EslServer::start(PASSWORD).await;
    let mut h = Harness::start(test_config(&server, PASSWORD));
    h.connected(1).await;

    // Concurrent api calls, each answered with its own text.
    let calls = (0..32).map(|i| {
        let client = h.client.clone();
        tokio::spawn(async move { (i, client.api(&format!("echo reply-{i}")).await) })
    });
    for call in futures_util::future::join_all(calls).await {
        let (i, answer) = call.expect("no panic");
        assert_eq!(answer.expect("answered"), format!("reply-{i}"));
    }
    assert_eq!(
        h.client.api("no_such_command").await.expect("answered"),
        "-ERR no_such_command Command not found!\n"
    );

    // Two jobs whose BACKGROUND_JOBs come back in reverse order.
    server.hold_jobs(true);
    let first = tokio::spawn({
        let client = h.client.clone();
        async move { client.bgapi("echo job-A").await }
    });
    assert!(server.wait_until(WAIT, |s| s.held_jobs.len() == 1).await);
    let second = tokio::spawn({
        let client = h.client.clone();
        async move { client.bgapi("echo job-B").await }
    });
    assert!(server.wait_until(WAIT, |s| s.held_jobs.len() == 2).await);
    let held = server.state(|s| s.held_jobs.clone());
    assert_eq!(held[0].1, "echo job-A");
    assert_ne!(held[0].0, held[1].0, "fresh Job-UUIDs");
    assert!(server.release_jobs_reversed().await);
    assert_eq!(second.await.expect("no panic").expect("job B"), "job-B");
    assert_eq!(first.await.expect("no panic").expect("job A"), "job-A");
    server.hold_jobs(false);
    assert_eq!(
        h.client.bgapi("echo right away").await.expect("job"),
        "right away"
    );
    assert_eq!(h.events_counted("BACKGROUND_JOB"), 3);

    // A job refused outright.
    server.reject_bgapi("originate user/9999 &park");
    match h.client.bgapi("originate user/9999 &park").await {
        Err(EslClientError::Refused(reason)) => assert!(reason.starts_with("-ERR"), "{reason}"),
        other => panic!("expected Refused, got {other:?}"),
    }

    // Line breaks would smuggle a second command: refused before anything is sent.
    let sent_before = server.commands().len();
    for bad in ["status\nexit", "status\r\nexit", "status\n\napi shutdown"] {
        assert!(matches!(
            h.client.api(bad).await,
            Err(EslClientError::Esl(EslError::CommandInjection { .. }))
        ));
        assert!(matches!(
            h.client.bgapi(bad).await,
            Err(EslClientError::Esl(EslError::CommandInjection { .. }))
        ));
    }
    assert_eq!(
        h.client.api("echo still fine").await.expect("answered"),
        "still fine"
    );
    let commands = server.commands();
    assert_eq!(commands.len(), sent_before + 1, "{commands:?}");
    assert!(commands
        .iter()
        .all(|c| !c.contains("status") && !c.contains("exit") && !c.contains("shutdown")));

    // Job results are not events: nothing reached the consumer.
    h.assert_feed_empty();

    // A caller waiting when the connection drops gets Disconnected; while disconnected,
    // calls fail fast with NotConnected.
    server.hold_jobs(true);
    server.set_password("changed");
    let waiting = tokio::spawn({
        let client = h.client.clone();
        async move { client.bgapi("echo never").await }
    });
    assert!(server.wait_until(WAIT, |s| s.held_jobs.len() == 1).await);
    assert!(server.kill());
    assert!(matches!(
        waiting.await.expect("no panic"),
        Err(EslClientError::Disconnected)
    ));
    h.disconnected(1).await;
    assert!(!h.client.is_connected());
    assert!(matches!(
        h.client.api("echo x").await,
        Err(EslClientError::NotConnected)
    ));
    assert!(matches!(
        h.client.bgapi("echo x").await,
        Err(EslClientError::NotConnected)
    ));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_timeout_leaves_later_answers_aligned() {
    let server = EslServer::start(PASSWORD).await;
    let mut config = test_config(&server, PASSWORD);
    config.api_timeout = Duration::from_secs(1);
    let mut h = Harness::start(config);
    h.connected(1).await;

    let started = Instant::now();
    assert!(matches!(
        h.client.api("msleep 1300").await,
        Err(EslClientError::Timeout)
    ));
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The late answer to msleep must not be handed to the next caller.
    assert_eq!(h.client.api("echo after").await.expect("answered"), "after");
    assert_eq!(h.client.api("echo again").await.expect("answered"), "again");
    h.stop().await;
}

/// FreeSWITCH drops events for slow listeners, BACKGROUND_JOB included: jobs whose callers
/// timed out must not keep their slots, or `bgapi` (the dialer's originate) would stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_whose_results_never_come_do_not_exhaust_the_slots() {
    let server = EslServer::start(PASSWORD).await;
    let mut config = test_config(&server, PASSWORD);
    config.api_timeout = Duration::from_millis(300);
    config.max_outstanding = 2;
    let mut h = Harness::start(config);
    h.connected(1).await;

    server.hold_jobs(true);
    for _ in 0..4 {
        assert!(matches!(
            h.client.bgapi("originate lost").await,
            Err(EslClientError::Timeout)
        ));
    }
    // Every one of them reached the switch: no slot stayed taken by an abandoned job.
    let sent = server
        .commands()
        .iter()
        .filter(|c| c.starts_with("bgapi originate lost"))
        .count();
    assert_eq!(sent, 4, "{:?}", server.commands());
    server.hold_jobs(false);
    let body = h.client.bgapi("status").await.expect("answered");
    assert!(!body.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_feed_drops_events_then_resyncs_when_drained() {
    let server = EslServer::start(PASSWORD).await;
    let mut config = test_config(&server, PASSWORD);
    config.feed_capacity = 4;
    let mut h = Harness::start(config);
    h.connected(1).await;

    // 25 calls created and answered, while the consumer does not read.
    let mut frames = Vec::new();
    for call in 0..25 {
        let uuid = format!("00000000-0000-4000-8000-{call:012}");
        for name in ["CHANNEL_CREATE", "CHANNEL_ANSWER"] {
            let seq = server.next_sequence();
            let caller = (1001 + call).to_string();
            frames.push(channel_event(name, &uuid, &caller, "8001", seq));
        }
    }
    for headers in &frames {
        assert!(server.push_event(headers).await);
    }
    eventually("all 50 events read", || {
        h.events_counted("CHANNEL_CREATE") + h.events_counted("CHANNEL_ANSWER") == 50
    })
    .await;
    let dropped = h.metrics.esl_events_dropped.get();
    assert!(dropped > 0, "events were dropped on the full feed");
    assert_eq!(dropped, 46, "4 fit in the feed, the rest were dropped");
    assert!(
        h.client.is_connected(),
        "a slow consumer does not cost the connection"
    );

    // Drain: the events that fit, then a second Connected for the same connection whose
    // snapshot has every call the consumer missed.
    let mut delivered = 0;
    let channels = loop {
        match h.next().await {
            SwitchFeed::Event(_) => delivered += 1,
            SwitchFeed::Connected {
                generation: 1,
                channels: Some(channels),
            } => break channels,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(delivered, 4);
    assert_eq!(channels.len(), 25);
    assert!(channels.iter().all(|row| row["callstate"] == "ACTIVE"));
    assert_eq!(h.metrics.esl_resyncs.with_label_values(&["ok"]).get(), 2);

    // Back to normal: the next event is delivered, no further resync.
    let seq = server.next_sequence();
    let uuid = "00000000-0000-4000-8000-000000000000";
    server
        .push_event(&channel_event(
            "CHANNEL_HANGUP_COMPLETE",
            uuid,
            "1001",
            "8001",
            seq,
        ))
        .await;
    let event = h.event().await;
    assert_eq!(event.name(), Some("CHANNEL_HANGUP_COMPLETE"));
    assert_eq!(h.metrics.esl_events_dropped.get(), 46);
    assert_eq!(server.connections(), 1);
    h.assert_feed_empty();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_when_connected_in_backoff_and_in_the_handshake() {
    // Connected: says exit, then ends.
    let server = EslServer::start(PASSWORD).await;
    let mut h = Harness::start(test_config(&server, PASSWORD));
    h.connected(1).await;
    let took = h.stop().await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        server
            .wait_until(WAIT, |s| s.commands.iter().any(|c| c == "exit"))
            .await,
        "exit was sent: {:?}",
        server.commands()
    );
    assert!(!h.client.is_connected());
    assert_eq!(h.metrics.esl_connected.get(), 0);
    assert!(matches!(
        h.client.api("echo x").await,
        Err(EslClientError::NotConnected)
    ));

    // In a long backoff after a failed authentication.
    let server = EslServer::start(PASSWORD).await;
    let mut config = test_config(&server, "wrong");
    config.reconnect_min = Duration::from_secs(60);
    config.reconnect_max = Duration::from_secs(60);
    let mut h = Harness::start(config);
    eventually("one failed authentication", || {
        h.connects("auth_failed") == 1
    })
    .await;
    let took = h.stop().await;
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Stuck in the handshake: the switch accepts but never asks for auth.
    let server = EslServer::start(PASSWORD).await;
    server.set_silent(true);
    let mut config = test_config(&server, PASSWORD);
    config.connect_timeout = Duration::from_secs(60);
    let mut h = Harness::start(config);
    assert!(server.wait_until(WAIT, |s| s.connections == 1).await);
    let took = h.stop().await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(
        server.wait_until(WAIT, |s| s.closed_by_client == 1).await,
        "the socket was closed"
    );
    assert_eq!(h.connects("ok"), 0);
}
