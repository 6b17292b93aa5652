//! Load generator for `scripts/bench-outbox.sh`: durable enqueue-and-deliver through the real
//! outbox (SQLite file, synchronous=FULL, group commit, HTTP to a local sink).
//!
//! ```text
//! outbox_load sustained --records 100000 [--producers 256] [--commit-batch 4096] [--concurrency 64]
//! outbox_load latency   --rate 1000 --secs 10
//! outbox_load raw       --records 100000 [--concurrency 64]   # the same POSTs without the outbox
//! ```
//!
//! The sink runs on its own single-threaded runtime and thread (as a separate process would),
//! answers `{"code":"200","msg":"ok"}` and stamps each record's arrival. One JSON line of
//! results goes to stdout; progress goes to stderr.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use gridedge::grid::targets::GridConfig;
use gridedge::metrics::Metrics;
use gridedge::outbox::{NewRecord, Outbox, OutboxConfig, Target};
use tokio_util::sync::CancellationToken;

struct Sink {
    received: AtomicU64,
    /// Arrival time of each record by its idempotency key (the record's index).
    arrivals: Mutex<HashMap<u64, Instant>>,
    stamp: bool,
}

async fn accept(State(s): State<Arc<Sink>>, headers: HeaderMap, _body: Bytes) -> &'static str {
    if s.stamp {
        if let Some(k) = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            s.arrivals.lock().unwrap().insert(k, Instant::now());
        }
    }
    s.received.fetch_add(1, Ordering::Relaxed);
    r#"{"code":"200","msg":"ok"}"#
}

fn start_sink(stamp: bool) -> (SocketAddr, Arc<Sink>) {
    let sink = Arc::new(Sink {
        received: AtomicU64::new(0),
        arrivals: Mutex::new(HashMap::new()),
        stamp,
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let s = Arc::clone(&sink);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let app = Router::new().route("/cdr", post(accept)).with_state(s);
            axum::serve(l, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), sink)
}

/// A CDR-sized record (the contract's 38 keys are ~1.3 KB), built once: producers
/// serialize their records anyway, and that cost is theirs, not the outbox's.
fn payload(_i: u64) -> Bytes {
    static ONE: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    ONE.get_or_init(|| {
        let mut m = serde_json::Map::new();
        m.insert("streamnumber".into(), format!("{:032}", 1).into());
        for k in 0..37 {
            m.insert(format!("FIELD{k:02}"), "x".repeat(24).into());
        }
        Bytes::from(serde_json::to_vec(&m).unwrap())
    })
    .clone()
}

struct Args {
    mode: String,
    records: u64,
    producers: u64,
    commit_batch: usize,
    concurrency: usize,
    rate: u64,
    secs: u64,
}

fn args() -> Args {
    let mut a = Args {
        mode: String::new(),
        records: 100_000,
        producers: 256,
        commit_batch: 4096,
        concurrency: 64,
        rate: 1000,
        secs: 10,
    };
    let mut it = std::env::args().skip(1);
    a.mode = it.next().unwrap_or_default();
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        let n: u64 = v
            .parse()
            .unwrap_or_else(|_| panic!("{k}: {v:?} is not a number"));
        match k.as_str() {
            "--records" => a.records = n,
            "--producers" => a.producers = n.max(1),
            "--commit-batch" => a.commit_batch = n.max(1) as usize,
            "--concurrency" => a.concurrency = n.max(1) as usize,
            "--rate" => a.rate = n.max(1),
            "--secs" => a.secs = n.max(1),
            _ => panic!("unknown option {k}"),
        }
    }
    a
}

fn outbox(dir: &std::path::Path, sink: SocketAddr, a: &Args) -> Arc<Outbox> {
    let cfg = OutboxConfig {
        commit_max_batch: a.commit_batch,
        concurrency: a.concurrency,
        max_records: 10_000_000,
        max_bytes: 8 << 30,
        queue: 1_000_000,
        ..OutboxConfig::default()
    };
    let mut grid = GridConfig::default();
    grid.push.cdr.enabled = true;
    grid.push.cdr.url = format!("http://{sink}/cdr");
    let metrics = Metrics::new();
    Outbox::open(&dir.join("gridedge.db"), &cfg, &grid, &metrics).expect("outbox")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn wait_for(sink: &Sink, n: u64, started: Instant) {
    let mut last = Instant::now();
    while sink.received.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if last.elapsed() > Duration::from_secs(2) {
            last = Instant::now();
            let got = sink.received.load(Ordering::Relaxed);
            eprintln!(
                "  {got}/{n} delivered, {:.0}/s so far",
                got as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("temp dir");
    match a.mode.as_str() {
        "sustained" => {
            let (addr, sink) = start_sink(false);
            let ob = outbox(dir.path(), addr, &a);
            let stop = CancellationToken::new();
            tokio::spawn(Arc::clone(&ob).run(stop.clone()));
            let started = Instant::now();
            let mut producers = Vec::new();
            let per = a.records / a.producers;
            for p in 0..a.producers {
                let ob = Arc::clone(&ob);
                producers.push(tokio::spawn(async move {
                    for i in 0..per {
                        let n = p * per + i;
                        ob.enqueue(vec![NewRecord {
                            target: Target::Cdr,
                            key: format!("call-{}", n / 4),
                            idempotency_key: n.to_string(),
                            payload: payload(n),
                        }])
                        .await
                        .expect("enqueue");
                    }
                }));
            }
            for p in producers {
                p.await.unwrap();
            }
            let enqueued_in = started.elapsed();
            let total = per * a.producers;
            wait_for(&sink, total, started).await;
            let took = started.elapsed();
            stop.cancel();
            println!(
                "{}",
                serde_json::json!({
                    "mode": "sustained", "records": total, "commit_batch": a.commit_batch,
                    "concurrency": a.concurrency, "producers": a.producers,
                    "enqueue_secs": enqueued_in.as_secs_f64(),
                    "secs": took.as_secs_f64(),
                    "records_per_sec": total as f64 / took.as_secs_f64(),
                })
            );
        }
        "latency" => {
            let (addr, sink) = start_sink(true);
            let ob = outbox(dir.path(), addr, &a);
            let stop = CancellationToken::new();
            tokio::spawn(Arc::clone(&ob).run(stop.clone()));
            let total = a.rate * a.secs;
            let sent: Arc<Mutex<HashMap<u64, Instant>>> = Default::default();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0..total {
                tick.tick().await;
                let ob = Arc::clone(&ob);
                let sent = Arc::clone(&sent);
                tasks.spawn(async move {
                    sent.lock().unwrap().insert(n, Instant::now());
                    ob.enqueue(vec![NewRecord {
                        target: Target::Cdr,
                        key: format!("call-{}", n / 4),
                        idempotency_key: n.to_string(),
                        payload: payload(n),
                    }])
                    .await
                    .expect("enqueue");
                });
            }
            while tasks.join_next().await.is_some() {}
            wait_for(&sink, total, started).await;
            stop.cancel();
            let arrivals = sink.arrivals.lock().unwrap();
            let sent = sent.lock().unwrap();
            let mut lat: Vec<f64> = sent
                .iter()
                .filter_map(|(k, t)| arrivals.get(k).map(|a| (*a - *t).as_secs_f64() * 1000.0))
                .collect();
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{}",
                serde_json::json!({
                    "mode": "latency", "rate": a.rate, "records": lat.len(),
                    "p50_ms": percentile(&lat, 0.50), "p90_ms": percentile(&lat, 0.90),
                    "p99_ms": percentile(&lat, 0.99), "max_ms": percentile(&lat, 1.0),
                })
            );
        }
        "raw" => {
            // The ceiling: the same POSTs with the same concurrency, no outbox, no disk.
            use http_body_util::{BodyExt, Full};
            use hyper_util::client::legacy::Client;
            let (addr, sink) = start_sink(false);
            let client: Client<_, Full<Bytes>> =
                Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(hyper_util::client::legacy::connect::HttpConnector::new());
            let uri: hyper::Uri = format!("http://{addr}/cdr").parse().unwrap();
            let next = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let mut workers = Vec::new();
            for _ in 0..a.concurrency {
                let (client, uri, next) = (client.clone(), uri.clone(), Arc::clone(&next));
                let total = a.records;
                workers.push(tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break;
                        }
                        let req = hyper::Request::post(uri.clone())
                            .header("content-type", "application/json")
                            .header("idempotency-key", n.to_string())
                            .body(Full::new(payload(n)))
                            .unwrap();
                        let resp = client.request(req).await.expect("post");
                        let _ = resp.into_body().collect().await;
                    }
                }));
            }
            for w in workers {
                w.await.unwrap();
            }
            wait_for(&sink, a.records, started).await;
            let took = started.elapsed();
            println!(
                "{}",
                serde_json::json!({
                    "mode": "raw", "records": a.records, "concurrency": a.concurrency,
                    "secs": took.as_secs_f64(),
                    "records_per_sec": a.records as f64 / took.as_secs_f64(),
                })
            );
        }
        other => {
            eprintln!("usage: outbox_load sustained|latency|raw [options] (got {other:?})");
            std::process::exit(2);
        }
    }
}
