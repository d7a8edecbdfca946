//! Data-plane tests against real servers on 127.0.0.1:0, without a master.

use std::sync::Arc;

use rdfs_proto::dataplane::{
    DataConn, Fence, Msg, ReadRequest, SetVersionRequest, WriteAck, WriteRequest,
};
use rdfs_proto::ids::{ChunkId, ChunkVersion, Epoch, LeaseSerial};
use rdfs_proto::limits::{BLOCK_SIZE, PACKET_BYTES};
use rdfs_proto::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::replicate::{push_replica, ReplicateJob};

pub(super) const ID: ChunkId = ChunkId(0x42);
pub(super) const V1: ChunkVersion = ChunkVersion(1);
pub(super) const LEASE: LeaseSerial = LeaseSerial(7);

pub(super) struct Server {
    pub(super) addr: String,
    pub(super) node: Arc<Node>,
    pub(super) dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(super) async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(super::serve(node.clone(), listener, stop.clone()));
    Server {
        addr,
        node,
        dir,
        stop,
    }
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

pub(super) fn fence(version: ChunkVersion, epoch: u64, lease: LeaseSerial) -> Fence {
    Fence {
        chunk_id: ID,
        version,
        epoch: Epoch(epoch),
        lease_serial: lease,
        token: vec![],
    }
}

pub(super) async fn set_version(
    addr: &str,
    version: ChunkVersion,
    epoch: u64,
    create: bool,
) -> Msg {
    let mut conn = DataConn::connect(addr).await.unwrap();
    let req = SetVersionRequest {
        chunk_id: ID,
        version,
        epoch: Epoch(epoch),
        lease_serial: LEASE,
        create,
    };
    conn.call(&Msg::SetVersion(req)).await.unwrap().msg
}

async fn write_on(
    conn: &mut DataConn,
    fence: Fence,
    offset: u64,
    data: &[u8],
    downstream: &[&str],
) -> Msg {
    let req = WriteRequest {
        fence,
        offset,
        len: data.len() as u64,
        downstream: downstream.iter().map(|s| s.to_string()).collect(),
        sync: true,
        serial: 0,
    };
    conn.write(&Msg::Write(req), &[]).await.unwrap();
    let packets = data.chunks(PACKET_BYTES).count();
    for (i, p) in data.chunks(PACKET_BYTES).enumerate() {
        conn.write(
            &Msg::Data {
                last: i + 1 == packets,
            },
            p,
        )
        .await
        .unwrap();
    }
    conn.flush().await.unwrap();
    conn.recv().await.unwrap().msg
}

pub(super) async fn write(
    addr: &str,
    fence: Fence,
    offset: u64,
    data: &[u8],
    downstream: &[&str],
) -> Msg {
    let mut conn = DataConn::connect(addr).await.unwrap();
    write_on(&mut conn, fence, offset, data, downstream).await
}

/// Reads a range; `Err((code, message))` for an error reply.
pub(super) async fn read(
    addr: &str,
    version: ChunkVersion,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, (ErrorCode, String)> {
    let mut conn = DataConn::connect(addr).await.unwrap();
    let req = ReadRequest {
        chunk_id: ID,
        version,
        offset,
        len,
        token: vec![],
    };
    let first = conn.call(&Msg::Read(req)).await.unwrap();
    let promised = match first.msg {
        Msg::ReadOk { len } => len,
        Msg::Error { code, message } => return Err((code, message)),
        other => panic!("unexpected {other:?}"),
    };
    let mut out = Vec::new();
    while (out.len() as u64) < promised {
        let frame = conn.recv().await.unwrap();
        match frame.msg {
            Msg::Data { last } => {
                out.extend_from_slice(&frame.payload);
                assert_eq!(last, out.len() as u64 == promised);
            }
            Msg::Error { code, message } => return Err((code, message)),
            other => panic!("unexpected {other:?}"),
        }
    }
    Ok(out)
}

pub(super) fn assert_error(msg: &Msg, want: ErrorCode) -> String {
    match msg {
        Msg::Error { code, message } => {
            assert_eq!(*code, want, "{message}");
            message.clone()
        }
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

async fn ping(addr: &str) -> Epoch {
    let mut conn = DataConn::connect(addr).await.unwrap();
    match conn.call(&Msg::Ping).await.unwrap().msg {
        Msg::Pong { epoch } => epoch,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn chain_write_reaches_every_replica() {
    let servers = [start().await, start().await, start().await];
    for s in &servers {
        assert_eq!(set_version(&s.addr, V1, 1, true).await, Msg::Ok);
    }
    let data = pattern(2 * PACKET_BYTES + 12_345, 1);
    let chain = [servers[1].addr.as_str(), servers[2].addr.as_str()];
    let mut conn = DataConn::connect(&servers[0].addr).await.unwrap();
    let ack = write_on(&mut conn, fence(V1, 1, LEASE), 0, &data, &chain).await;
    assert_eq!(
        ack,
        Msg::WriteOk(WriteAck {
            chunk_len: data.len() as u64,
            serial: 1
        })
    );
    // A partial overwrite inside a block, on the same connection: the next serial.
    let ack = write_on(
        &mut conn,
        fence(V1, 1, LEASE),
        100_000,
        b"overwrite",
        &chain,
    )
    .await;
    assert_eq!(
        ack,
        Msg::WriteOk(WriteAck {
            chunk_len: data.len() as u64,
            serial: 2
        })
    );
    let mut want = data.clone();
    want[100_000..100_009].copy_from_slice(b"overwrite");
    for s in &servers {
        assert_eq!(
            read(&s.addr, V1, 0, 8 << 20).await.unwrap(),
            want,
            "replica {}",
            s.addr
        );
        assert_eq!(
            read(&s.addr, V1, 99_999, 11).await.unwrap(),
            &want[99_999..100_010]
        );
    }
}

#[tokio::test]
async fn wrong_version_is_stale_and_writes_nothing() {
    let s = start().await;
    set_version(&s.addr, V1, 1, true).await;
    let mut conn = DataConn::connect(&s.addr).await.unwrap();
    let reply = write_on(
        &mut conn,
        fence(ChunkVersion(2), 1, LEASE),
        0,
        &pattern(70_000, 2),
        &[],
    )
    .await;
    assert_error(&reply, ErrorCode::StaleVersion);
    assert_eq!(read(&s.addr, V1, 0, 100).await.unwrap(), Vec::<u8>::new());
    // The refused bytes were consumed: the same connection still works.
    let ack = write_on(&mut conn, fence(V1, 1, LEASE), 0, b"ok", &[]).await;
    assert_eq!(
        ack,
        Msg::WriteOk(WriteAck {
            chunk_len: 2,
            serial: 1
        })
    );
    // Reading at the wrong version is refused too.
    let (code, _) = read(&s.addr, ChunkVersion(2), 0, 2).await.unwrap_err();
    assert_eq!(code, ErrorCode::StaleVersion);
}

#[tokio::test]
async fn stale_epoch_and_lease_are_refused_and_epoch_is_durable() {
    let s = start().await;
    assert_eq!(set_version(&s.addr, V1, 5, true).await, Msg::Ok);
    assert_eq!(ping(&s.addr).await, Epoch(5));
    assert_error(
        &write(&s.addr, fence(V1, 4, LEASE), 0, b"x", &[]).await,
        ErrorCode::StaleEpoch,
    );
    assert_error(
        &set_version(&s.addr, ChunkVersion(2), 3, false).await,
        ErrorCode::StaleEpoch,
    );
    assert_error(
        &write(&s.addr, fence(V1, 5, LeaseSerial(8)), 0, b"x", &[]).await,
        ErrorCode::LeaseMismatch,
    );
    assert_eq!(read(&s.addr, V1, 0, 10).await.unwrap(), Vec::<u8>::new());
    // A higher epoch is recorded on disk.
    assert!(matches!(
        write(&s.addr, fence(V1, 9, LEASE), 0, b"x", &[]).await,
        Msg::WriteOk(_)
    ));
    assert_eq!(s.node.state.get().highest_epoch, Epoch(9));
    assert_eq!(ping(&s.addr).await, Epoch(9));
}

#[tokio::test]
async fn replica_refuses_out_of_order_serials() {
    let s = start().await;
    set_version(&s.addr, V1, 1, true).await;
    let mut conn = DataConn::connect(&s.addr).await.unwrap();
    let mut req = WriteRequest {
        fence: fence(V1, 1, LEASE),
        offset: 0,
        len: 1,
        downstream: vec![],
        sync: false,
        serial: 5,
    };
    conn.send(&Msg::Write(req.clone()), &[]).await.unwrap();
    conn.send(&Msg::Data { last: true }, b"a").await.unwrap();
    assert_eq!(
        conn.recv().await.unwrap().msg,
        Msg::WriteOk(WriteAck {
            chunk_len: 1,
            serial: 5
        })
    );
    req.offset = 1;
    conn.send(&Msg::Write(req), &[]).await.unwrap();
    conn.send(&Msg::Data { last: true }, b"b").await.unwrap();
    assert_error(&conn.recv().await.unwrap().msg, ErrorCode::LeaseMismatch);
    assert_eq!(read(&s.addr, V1, 0, 10).await.unwrap(), b"a");
}

#[tokio::test]
async fn write_past_the_chunk_size_is_refused() {
    let s = start().await;
    set_version(&s.addr, V1, 1, true).await;
    s.node.store.set_max_chunk_bytes(BLOCK_SIZE);
    let reply = write(&s.addr, fence(V1, 1, LEASE), BLOCK_SIZE - 1, b"xy", &[]).await;
    assert_error(&reply, ErrorCode::InvalidArgument);
    let missing = Fence {
        chunk_id: ChunkId(0x43),
        ..fence(V1, 1, LEASE)
    };
    assert_error(
        &write(&s.addr, missing, 0, b"x", &[]).await,
        ErrorCode::NoSuchChunk,
    );
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    let s = start().await;
    let mut raw = TcpStream::connect(&s.addr).await.unwrap();
    raw.write_all(&pattern(64, 99)).await.unwrap();
    let mut reply = Vec::new();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        raw.read_to_end(&mut reply),
    )
    .await
    .unwrap()
    .unwrap();
    // Best-effort error frame, then EOF.
    let frame = rdfs_proto::dataplane::read_frame(&mut &reply[..n])
        .await
        .unwrap();
    assert_error(&frame.msg, ErrorCode::Malformed);
    // A frame with a good prefix but garbage header also gets Malformed.
    let mut conn = DataConn::connect(&s.addr).await.unwrap();
    assert_error(
        &conn.call(&Msg::Data { last: false }).await.unwrap().msg,
        ErrorCode::Malformed,
    );
    assert_eq!(ping(&s.addr).await, Epoch(0));
}

#[tokio::test]
async fn dead_chain_member_is_named_in_unavailable() {
    let (a, b) = (start().await, start().await);
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    for s in [&a, &b] {
        set_version(&s.addr, V1, 1, true).await;
    }
    let data = pattern(PACKET_BYTES + 10, 3);
    let reply = write(&a.addr, fence(V1, 1, LEASE), 0, &data, &[&b.addr, &dead]).await;
    let message = assert_error(&reply, ErrorCode::Unavailable);
    assert!(
        message.starts_with(&format!("replica {dead}:")),
        "{message}"
    );
    assert!(!message.contains(&b.addr), "{message}");
    // With the middle member dead, it is the one named.
    let reply = write(&a.addr, fence(V1, 1, LEASE), 0, b"abc", &[&dead, &b.addr]).await;
    let message = assert_error(&reply, ErrorCode::Unavailable);
    assert!(
        message.starts_with(&format!("replica {dead}:")),
        "{message}"
    );
}

#[tokio::test]
async fn replication_installs_an_identical_copy() {
    let (a, b) = (start().await, start().await);
    set_version(&a.addr, V1, 1, true).await;
    let data = pattern(PACKET_BYTES * 2 + 777, 4);
    assert!(matches!(
        write(&a.addr, fence(V1, 1, LEASE), 0, &data, &[]).await,
        Msg::WriteOk(_)
    ));
    // b holds a stale, older copy: it is replaced.
    b.node
        .store
        .create(ID, ChunkVersion(0), LeaseSerial(0))
        .unwrap();
    let job = ReplicateJob {
        chunk_id: ID,
        version: V1,
        target: b.addr.clone(),
    };
    assert_eq!(
        push_replica(&a.node, &job).await.unwrap(),
        data.len() as u64
    );
    assert_eq!(read(&b.addr, V1, 0, 8 << 20).await.unwrap(), data);
    let added = b.node.take_reports().added;
    assert_eq!(
        added,
        vec![rdfs_proto::dataplane::ChunkInfo {
            chunk_id: ID,
            version: V1,
            len: data.len() as u64
        }]
    );
    // A command for a version we do not hold is refused before anything is sent.
    let job = ReplicateJob {
        version: ChunkVersion(2),
        ..job
    };
    assert!(push_replica(&a.node, &job).await.is_err());
}

#[tokio::test]
async fn corrupt_block_answers_checksum_mismatch_and_is_reported() {
    use std::os::unix::fs::FileExt;
    let s = start().await;
    set_version(&s.addr, V1, 1, true).await;
    let data = pattern(3 * BLOCK_SIZE as usize, 5);
    assert!(matches!(
        write(&s.addr, fence(V1, 1, LEASE), 0, &data, &[]).await,
        Msg::WriteOk(_)
    ));
    let path = s.dir.path().join("chunks/42/0000000000000042.data");
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[data[2 * BLOCK_SIZE as usize] ^ 1], 2 * BLOCK_SIZE)
        .unwrap();
    assert_eq!(read(&s.addr, V1, 0, 10).await.unwrap(), &data[..10]);
    let (code, _) = read(&s.addr, V1, 2 * BLOCK_SIZE, 10).await.unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch);
    let bad = s.node.take_reports().bad;
    assert_eq!(bad.iter().map(|b| b.chunk_id).collect::<Vec<_>>(), vec![ID]);
    // Quarantined: no longer served at all.
    let (code, _) = read(&s.addr, V1, 0, 10).await.unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch);
}

#[tokio::test]
async fn set_version_persists_and_never_goes_back() {
    let s = start().await;
    assert_error(
        &set_version(&s.addr, V1, 1, false).await,
        ErrorCode::NoSuchChunk,
    );
    assert_eq!(set_version(&s.addr, V1, 1, true).await, Msg::Ok);
    assert_eq!(
        set_version(&s.addr, ChunkVersion(3), 1, false).await,
        Msg::Ok
    );
    assert_error(
        &set_version(&s.addr, ChunkVersion(2), 1, false).await,
        ErrorCode::StaleVersion,
    );
    let mut conn = DataConn::connect(&s.addr).await.unwrap();
    let reply = conn
        .call(&Msg::ChunkInfo { chunk_id: ID })
        .await
        .unwrap()
        .msg;
    assert_eq!(
        reply,
        Msg::ChunkInfoOk(rdfs_proto::dataplane::ChunkInfo {
            chunk_id: ID,
            version: ChunkVersion(3),
            len: 0
        })
    );
}

#[tokio::test]
async fn concurrent_writers_leave_identical_replicas() {
    let servers = [start().await, start().await, start().await];
    for s in &servers {
        set_version(&s.addr, V1, 1, true).await;
    }
    let chain = vec![servers[1].addr.clone(), servers[2].addr.clone()];
    let mut tasks = Vec::new();
    for seed in 0..6u8 {
        let (primary, chain) = (servers[0].addr.clone(), chain.clone());
        tasks.push(tokio::spawn(async move {
            // Overlapping, unaligned ranges: the order of application decides the bytes.
            let data = pattern(150_000, seed);
            let down: Vec<&str> = chain.iter().map(String::as_str).collect();
            write(
                &primary,
                fence(V1, 1, LEASE),
                u64::from(seed) * 10_000,
                &data,
                &down,
            )
            .await
        }));
    }
    let mut serials = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Msg::WriteOk(ack) => serials.push(ack.serial),
            other => panic!("unexpected {other:?}"),
        }
    }
    serials.sort_unstable();
    assert_eq!(serials, vec![1, 2, 3, 4, 5, 6]);
    let first = read(&servers[0].addr, V1, 0, 1 << 20).await.unwrap();
    assert_eq!(first.len(), 200_000);
    for s in &servers[1..] {
        assert_eq!(read(&s.addr, V1, 0, 1 << 20).await.unwrap(), first);
    }
}

#[tokio::test]
async fn full_disk_answers_no_space_and_flags_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), Some(100_000)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(super::serve(node.clone(), listener, stop.clone()));
    set_version(&addr, V1, 1, true).await;
    let reply = write(&addr, fence(V1, 1, LEASE), 0, &pattern(150_000, 1), &[]).await;
    assert_error(&reply, ErrorCode::NoSpace);
    assert!(node.store.no_space());
    assert_eq!(read(&addr, V1, 0, 10).await.unwrap(), Vec::<u8>::new());
    assert!(matches!(
        write(&addr, fence(V1, 1, LEASE), 0, b"fits", &[]).await,
        Msg::WriteOk(_)
    ));
    stop.cancel();
}

#[tokio::test]
async fn short_replicate_stream_is_malformed_and_installs_nothing() {
    let s = start().await;
    let mut conn = DataConn::connect(&s.addr).await.unwrap();
    let req = rdfs_proto::dataplane::ReplicateRequest {
        chunk_id: ID,
        version: V1,
        epoch: Epoch(0),
        len: 10,
    };
    conn.send(&Msg::Replicate(req), &[]).await.unwrap();
    conn.send(&Msg::Data { last: true }, b"12345")
        .await
        .unwrap();
    assert_error(&conn.recv().await.unwrap().msg, ErrorCode::Malformed);
    assert!(s.node.store.state(ID).is_err());
    assert_eq!(ping(&s.addr).await, Epoch(0));
    let fan = s.dir.path().join("chunks/42");
    let left: Vec<_> = std::fs::read_dir(&fan)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "temporary copy left behind: {left:?}");
}
