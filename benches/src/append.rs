//! Record-append throughput: `producers` concurrent appenders (each its own client, as
//! separate processes would be) appending fixed-size records to one file for a fixed time,
//! through the real `dfs` servers the benchmark started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdfs_client::{Client, ClientConfig};

/// One append measurement.
pub struct AppendRun {
    pub producers: usize,
    pub sync: bool,
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl AppendRun {
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Appends `record_bytes`-byte records from `producers` tasks to `path` for `duration`.
pub async fn run(
    master: &str,
    path: &str,
    producers: usize,
    record_bytes: usize,
    duration: Duration,
    sync: bool,
) -> anyhow::Result<AppendRun> {
    let mut clients = Vec::new();
    for _ in 0..producers {
        let mut cfg = ClientConfig::new(vec![master.to_string()]);
        cfg.timeout = Duration::from_secs(60);
        clients.push(Client::connect(cfg).await.context("connect")?);
    }
    clients[0]
        .create(path, 0o644, false)
        .await
        .context("create the append file")?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (p, client) in clients.into_iter().enumerate() {
        let stop = stop.clone();
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut appender = client.appender(&path).await?;
            appender.set_sync(sync);
            let mut record = vec![(p as u8).wrapping_mul(37); record_bytes];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                record[..8].copy_from_slice(&n.to_le_bytes());
                appender.append(&record).await?;
                n += 1;
            }
            Ok::<u64, rdfs_client::ClientError>(n)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut records = 0;
    for t in tasks {
        records += t.await.context("producer task")?.context("append")?;
    }
    let elapsed = started.elapsed();
    Ok(AppendRun {
        producers,
        sync,
        records,
        bytes: records * record_bytes as u64,
        elapsed,
    })
}
