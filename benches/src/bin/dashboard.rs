//! `rdfs-dashboard-bench`: page latency of the master's dashboard with 100,000 files and
//! 1,000 chunks under repair (issue 6: "median < 100 ms").
//!
//! Setup, all real except the chunkservers: a master data directory is written with a
//! checkpoint holding 100,000 one-chunk files; the master (`rdfs_master::run_with_http`) is
//! started on it; four fake chunkservers register over gRPC with block reports (three hold
//! every chunk except chunks 1..=1000, which only two hold; the fourth is empty) and keep
//! heartbeating without ever completing a copy, so 1,000 chunks stay under repair (copies
//! ordered, in flight, the rest queued). Then every page and JSON endpoint is fetched
//! sequentially over HTTP/1.1, and the median / p90 / max are printed.
//!
//! Usage: `cargo build --release -p rdfs-benches && target/release/rdfs-dashboard-bench
//! [--files N] [--under N] [--rounds N]`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdfs_master::namespace::{Namespace, NewNode, Op};
use rdfs_proto::ids::{ChunkId, ChunkVersion, Epoch};
use rdfs_proto::pb::master_client::MasterClient;
use rdfs_proto::pb::{ChunkReport, HeartbeatRequest, RegisterRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FILES_PER_DIR: usize = 1000;
const CHUNK_SIZE: u64 = 1 << 20;
const FAKE_CAPACITY: u64 = 1 << 40;
const HEARTBEAT: Duration = Duration::from_secs(1);
const PAGES: [&str; 7] = [
    "/",
    "/api/overview",
    "/chunkservers",
    "/api/chunkservers",
    "/blocks",
    "/api/blocks",
    "/metrics",
];

struct Opts {
    files: usize,
    under: usize,
    rounds: usize,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        files: 100_000,
        under: 1_000,
        rounds: 30,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || -> anyhow::Result<usize> {
            args.next()
                .with_context(|| format!("{a} needs a value"))?
                .parse()
                .with_context(|| format!("{a}: not a number"))
        };
        match a.as_str() {
            "--files" => o.files = val()?,
            "--under" => o.under = val()?,
            "--rounds" => o.rounds = val()?,
            _ => bail!("unknown argument {a}"),
        }
    }
    if o.under > o.files {
        bail!("--under must not exceed --files");
    }
    Ok(o)
}

/// A namespace of `files` one-chunk files, chunk i+first belonging to file i.
fn build_namespace(files: usize) -> anyhow::Result<(Namespace, Vec<ChunkId>)> {
    let mut ns = Namespace::new();
    ns.apply(&Op::ClusterInit { epoch: Epoch(1) })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
        replication: 3,
        time_ns: 1,
    };
    let mut chunks = Vec::with_capacity(files);
    for i in 0..files {
        let dir = format!("/bench/d{:03}", i / FILES_PER_DIR);
        if i % FILES_PER_DIR == 0 {
            for op in ns
                .plan_mkdir(&dir, &node, true)
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                ns.apply(&op).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        let path = format!("{dir}/f{:04}", i % FILES_PER_DIR);
        let op = ns
            .plan_create(&path, &node, false)
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        ns.apply(&op).map_err(|e| anyhow::anyhow!("{e}"))?;
        let inode = ns.resolve(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let chunk_id = ns.next_chunk_id();
        ns.apply(&Op::AllocateChunk {
            inode,
            index: 0,
            chunk_id,
            version: ChunkVersion(1),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        ns.apply(&Op::CommitWrite {
            inode,
            end: CHUNK_SIZE,
            mtime_ns: 1,
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        chunks.push(chunk_id);
    }
    Ok((ns, chunks))
}

fn report(c: &ChunkId) -> ChunkReport {
    ChunkReport {
        chunk_id: c.0,
        version: 1,
        size: CHUNK_SIZE,
    }
}

/// Registers a fake chunkserver holding `chunks` and heartbeats it forever.
async fn fake_chunkserver(master: String, n: usize, chunks: Vec<ChunkId>) -> anyhow::Result<()> {
    let mut client = MasterClient::connect(format!("http://{master}"))
        .await?
        .max_decoding_message_size(rdfs_proto::limits::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(rdfs_proto::limits::MAX_GRPC_MESSAGE_BYTES);
    let used = chunks.len() as u64 * CHUNK_SIZE;
    let resp = client
        .register(RegisterRequest {
            cluster_id: String::new(),
            data_addr: format!("127.0.0.1:{}", 1 + n),
            capacity: FAKE_CAPACITY,
            used,
            chunks: chunks.iter().map(report).collect(),
            highest_epoch: 0,
            node_id: format!("fake-{n}"),
        })
        .await?
        .into_inner();
    let id = resp.chunkserver_id;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let hb = HeartbeatRequest {
                chunkserver_id: id,
                capacity: FAKE_CAPACITY,
                used,
                chunk_count: chunks.len() as u64,
                ..Default::default()
            };
            if client.heartbeat(hb).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// One HTTP/1.1 GET (a new connection each time, as a browser tab refresh may be);
/// returns the whole response, failing unless it is a 200.
async fn get(addr: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    if !buf.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        );
    }
    Ok(buf)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("master");
    std::fs::create_dir_all(&data)?;
    let t = Instant::now();
    let (ns, chunks) = build_namespace(o.files)?;
    rdfs_master::identity::open_or_init(&data, CHUNK_SIZE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ckpt_dir = rdfs_master::checkpoint::checkpoint_dir(&data);
    std::fs::create_dir_all(&ckpt_dir)?;
    let image = rdfs_master::checkpoint::encode(&ns, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
    rdfs_master::checkpoint::write(&ckpt_dir, 1, &image).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "namespace of {} files built and checkpointed in {:.1}s",
        o.files,
        t.elapsed().as_secs_f64()
    );

    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let master_addr = grpc.local_addr()?.to_string();
    let http_addr = http.local_addr()?.to_string();
    let mut cfg = rdfs_master::MasterConfig::new(data.clone());
    cfg.chunk_size_bytes = CHUNK_SIZE;
    cfg.heartbeat_timeout = Duration::from_secs(600);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let master = tokio::spawn(rdfs_master::run_with_http(
        cfg,
        grpc,
        Some(http),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (short, full) = chunks.split_at(o.under);
    for n in 0..3 {
        let held: Vec<ChunkId> = if n < 2 { chunks.clone() } else { full.to_vec() };
        fake_chunkserver(master_addr.clone(), n, held).await?;
    }
    fake_chunkserver(master_addr.clone(), 3, Vec::new()).await?;
    // Wait until the master left safe mode and sees the under-replicated chunks.
    let deadline = Instant::now() + Duration::from_secs(120);
    let overview = loop {
        let body = get_json(&http_addr, "/api/overview").await?;
        if body["safe_mode"] == false && body["under_replicated"] == o.under as u64 {
            break body;
        }
        if Instant::now() > deadline {
            bail!("master never reached the bench state: {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "state: files {} chunks {} under_replicated {} copies needed {} in flight {} ({} short chunks)",
        overview["files"], overview["chunks"], overview["under_replicated"],
        overview["repair"]["copies_needed"], overview["repair"]["in_flight"], short.len()
    );
    let server_id = overview["chunkservers"][0]["id"].as_u64().unwrap_or(0);
    let detail = format!("/chunkservers/{server_id}");
    let mut pages: Vec<String> = PAGES.iter().map(|p| p.to_string()).collect();
    pages.push(detail);
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10}",
        "page", "median ms", "p90 ms", "max ms", "bytes"
    );
    let mut worst_median = Duration::ZERO;
    for page in &pages {
        for _ in 0..3 {
            get(&http_addr, page).await?;
        }
        let mut times = Vec::with_capacity(o.rounds);
        let mut bytes = 0;
        for _ in 0..o.rounds {
            let t = Instant::now();
            bytes = get(&http_addr, page).await?.len();
            times.push(t.elapsed());
        }
        times.sort();
        let median = percentile(&times, 0.5);
        worst_median = worst_median.max(median);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{page:<22} {:>10.2} {:>10.2} {:>10.2} {bytes:>10}",
            ms(median),
            ms(percentile(&times, 0.9)),
            ms(*times.last().unwrap_or(&Duration::ZERO))
        );
    }
    let after = get_json(&http_addr, "/api/overview").await?;
    println!(
        "master scan (holds the state lock, every 500 ms): last {:.1} ms",
        after["last_scan_us"].as_u64().unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "worst median {:.2} ms (target < 100 ms): {}",
        worst_median.as_secs_f64() * 1000.0,
        if worst_median < Duration::from_millis(100) {
            "OK"
        } else {
            "OVER"
        }
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), master).await;
    Ok(())
}

async fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let buf = String::from_utf8(get(addr, path).await?)?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).with_context(|| format!("GET {path}: {body}"))
}
