//! Record append against an in-process cluster: concurrent producers, padding across many
//! chunks, exactly-once reading, a primary stopped mid-stream, oversized records.

use std::collections::HashMap;
use std::time::Duration;

use rdfs_client::{Client, ClientError, RecordId};
use rdfs_proto::ErrorCode;
use rdfs_tests::{sha256_hex, test_bytes, Cluster, TEST_CHUNK_SIZE};

/// What one producer had acknowledged: (file offset, sha256 of the payload, payload head).
type Sent = Vec<(u64, String, Vec<u8>)>;

/// The first bytes of a payload (which name its producer and sequence).
fn head(data: &[u8]) -> Vec<u8> {
    data[..data.len().min(16)].to_vec()
}

/// A payload of 1 B – 64 KiB whose first bytes name the producer and sequence, so every
/// payload is distinct and a misplaced one says whose it was.
fn payload(producer: usize, seq: usize) -> Vec<u8> {
    let seed = (producer * 100_003 + seq) as u64;
    let len = 1
        + (test_bytes(8, seed)
            .iter()
            .fold(0usize, |a, b| a * 31 + *b as usize)
            % (64 << 10));
    let mut p = format!("p{producer}-{seq}-").into_bytes();
    p.extend(test_bytes(len, seed ^ 0xabcdef));
    p.truncate(len);
    p
}

/// Starts `producers` appenders (each its own client) of `count` records on `path`.
async fn spawn_producers(
    cluster: &Cluster,
    path: &str,
    producers: usize,
    first_id: usize,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Sent>> {
    let mut tasks = Vec::new();
    for p in first_id..first_id + producers {
        let client = cluster.client().await;
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut appender = client.appender(&path).await.unwrap();
            let mut sent = Sent::new();
            for seq in 0..count {
                let data = payload(p, seq);
                let at = appender.append(&data).await.unwrap();
                sent.push((at, sha256_hex(&data), head(&data)));
            }
            sent
        }));
    }
    tasks
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Sent>>) -> Vec<Sent> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Reads every record back; returns (offset, sha256, payload head) per record, checking
/// that no id comes back twice.
async fn read_all(c: &Client, path: &str) -> (Vec<(u64, String, Vec<u8>)>, u64) {
    let mut reader = c.record_reader(path).await.unwrap();
    let mut ids: HashMap<RecordId, u64> = HashMap::new();
    let mut out = Vec::new();
    while let Some(r) = reader.next().await.unwrap() {
        assert!(
            ids.insert(r.id, r.offset).is_none(),
            "record {} twice",
            r.id
        );
        out.push((r.offset, sha256_hex(&r.data), head(&r.data)));
    }
    (out, reader.duplicates_skipped())
}

/// Every acknowledged record is read back exactly once, at its acknowledged offset.
fn check_exactly_once(sent: &[Sent], got: &[(u64, String, Vec<u8>)]) {
    let by_offset: HashMap<u64, &(u64, String, Vec<u8>)> = got.iter().map(|g| (g.0, g)).collect();
    let mut total = 0;
    for (p, s) in sent.iter().enumerate() {
        for (at, sha, head) in s {
            let g = by_offset
                .get(at)
                .unwrap_or_else(|| panic!("producer {p}: record at {at} not read back"));
            assert_eq!(&g.1, sha, "producer {p}: bytes at {at}");
            assert_eq!(&g.2, head);
            total += 1;
        }
    }
    assert_eq!(got.len(), total, "no record read that nobody acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_each_get_every_record_back_exactly_once() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let c = cluster.client().await;
    c.create("/log", 0o644, false).await.unwrap();
    let sent = join(spawn_producers(&cluster, "/log", 8, 0, 40).await).await;
    let (got, dups) = read_all(&c, "/log").await;
    check_exactly_once(&sent, &got);
    assert_eq!(dups, 0, "no retries happened, so no copies");
    // 320 records of 32 KiB on average fill many 1 MiB chunks: padding was crossed.
    let locs = c.chunk_locations("/log").await.unwrap();
    assert!(locs.chunks.len() >= 8, "{} chunks", locs.chunks.len());
    let end = got.iter().map(|g| g.0).max().unwrap();
    assert!(locs.file_size > end && locs.file_size <= locs.chunks.len() as u64 * TEST_CHUNK_SIZE);
    // Records never straddle a chunk boundary.
    for (p, s) in sent.iter().enumerate() {
        for (at, _, _) in s {
            assert!(
                at % TEST_CHUNK_SIZE + 32 <= TEST_CHUNK_SIZE,
                "producer {p} at {at}"
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_survive_the_primary_stopping_and_nothing_is_read_twice() {
    let mut cluster = Cluster::builder()
        .chunkservers(4)
        .heartbeat_timeout(Duration::from_secs(2))
        .start()
        .await;
    let c = cluster.client().await;
    c.create("/log", 0o644, false).await.unwrap();
    let first = join(spawn_producers(&cluster, "/log", 2, 0, 20).await).await;
    let locs = c.chunk_locations("/log").await.unwrap();
    let last = locs.chunks.last().unwrap();
    assert!(!last.primary.is_empty(), "the last chunk is under a lease");
    let victim = (0..4)
        .find(|i| cluster.chunkserver_addr(*i) == last.primary)
        .unwrap();
    // Stop the primary while four producers are appending.
    let running = spawn_producers(&cluster, "/log", 4, 2, 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.stop_chunkserver(victim).await;
    let second = join(running).await;
    let third = join(spawn_producers(&cluster, "/log", 4, 6, 10).await).await;
    let mut sent = first;
    sent.extend(second);
    sent.extend(third);
    let (got, _) = read_all(&c, "/log").await;
    check_exactly_once(&sent, &got);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_a_quarter_chunk_is_refused_clearly() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let c = cluster.client().await;
    c.create("/log", 0o644, false).await.unwrap();
    let mut a = c.appender("/log").await.unwrap();
    assert_eq!(a.max_record_bytes() as u64, TEST_CHUNK_SIZE / 4 - 32);
    let err: ClientError = a
        .append(&vec![7u8; a.max_record_bytes() + 1])
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("quarter"), "{err}");
    // The largest allowed record goes through, and an empty one too.
    let big = test_bytes(a.max_record_bytes(), 3);
    assert_eq!(a.append(&big).await.unwrap(), 0);
    a.append(b"").await.unwrap();
    let mut r = c.record_reader("/log").await.unwrap();
    assert_eq!(r.next().await.unwrap().unwrap().data.as_ref(), &big[..]);
    assert!(r.next().await.unwrap().unwrap().data.is_empty());
    assert!(r.next().await.unwrap().is_none());
    let dir = c.mkdir("/d", 0o755, false).await;
    assert!(dir.is_ok());
    let err = c.appender("/d").await.err().unwrap();
    assert_eq!(err.code(), ErrorCode::IsADirectory);
    cluster.shutdown().await;
}
