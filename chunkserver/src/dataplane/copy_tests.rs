//! `CopyChunk` (copy-on-write after a snapshot): a local, verified, durable copy under a new
//! id, refused for a wrong source version, a corrupt source or a newer existing copy.

use rdfs_proto::dataplane::{CopyChunkRequest, DataConn, Msg};
use rdfs_proto::ids::{ChunkId, ChunkVersion, Epoch, LeaseSerial};
use rdfs_proto::ErrorCode;

use super::tests::{assert_error, fence, pattern, read, set_version, start, write, ID, LEASE, V1};

const COPY: ChunkId = ChunkId(0x43);

async fn copy(addr: &str, src_version: ChunkVersion, dst_version: ChunkVersion) -> Msg {
    let mut conn = DataConn::connect(addr).await.unwrap();
    let req = CopyChunkRequest {
        src: ID,
        src_version,
        dst: COPY,
        dst_version,
        epoch: Epoch(1),
        lease_serial: LeaseSerial(9),
    };
    conn.call(&Msg::CopyChunk(req)).await.unwrap().msg
}

#[tokio::test]
async fn a_copy_holds_the_same_bytes_under_the_new_id_and_version() {
    let s = start().await;
    set_version(&s.addr, V1, 1, true).await;
    let data = pattern(300_000, 4);
    write(&s.addr, fence(V1, 1, LEASE), 0, &data, &[]).await;
    let v1 = ChunkVersion(1);
    assert_eq!(copy(&s.addr, V1, v1).await, Msg::Ok);
    let st = s.node.store().state(COPY).unwrap();
    assert_eq!(
        (st.version, st.len, st.lease_serial),
        (v1, 300_000, LeaseSerial(9))
    );
    assert_eq!(read_copy(&s.addr, v1).await, data);
    // Writing the copy leaves the source as it was.
    let mut f = fence(v1, 1, LeaseSerial(9));
    f.chunk_id = COPY;
    write(&s.addr, f, 10, b"changed", &[]).await;
    assert_eq!(read(&s.addr, V1, 0, 1 << 20).await.unwrap(), data);
    // A copy never replaces one at the same or a newer version (it may have been written).
    assert_error(&copy(&s.addr, V1, v1).await, ErrorCode::StaleVersion);
    assert_eq!(&read_copy(&s.addr, v1).await[10..17], b"changed");
    // The source must be at the version the master means.
    let msg = assert_error(
        &copy(&s.addr, ChunkVersion(7), ChunkVersion(2)).await,
        ErrorCode::StaleVersion,
    );
    assert!(msg.contains("version 1"), "{msg}");
}

async fn read_copy(addr: &str, version: ChunkVersion) -> Vec<u8> {
    let mut conn = DataConn::connect(addr).await.unwrap();
    let req = rdfs_proto::dataplane::ReadRequest {
        chunk_id: COPY,
        version,
        offset: 0,
        len: 1 << 20,
        token: vec![],
    };
    let Msg::ReadOk { len } = conn.call(&Msg::Read(req)).await.unwrap().msg else {
        panic!("read refused");
    };
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        out.extend_from_slice(&conn.recv().await.unwrap().payload);
    }
    out
}

#[tokio::test]
async fn a_corrupt_source_is_not_copied_and_gets_quarantined() {
    let s = start().await;
    set_version(&s.addr, V1, 1, true).await;
    write(&s.addr, fence(V1, 1, LEASE), 0, &pattern(200_000, 5), &[]).await;
    let path = crate::store::data_file_path(s.dir.path(), ID).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[150_000] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    assert_error(
        &copy(&s.addr, V1, ChunkVersion(1)).await,
        ErrorCode::ChecksumMismatch,
    );
    assert!(s.node.store().state(ID).unwrap().quarantined);
    assert!(s.node.store().state(COPY).is_err(), "no copy left behind");
}
