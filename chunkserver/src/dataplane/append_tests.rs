//! Record append on real data-plane servers (no master): primary-chosen offsets, padding,
//! retries after a primary change, replicas that missed records, refused records.

use rdfs_proto::dataplane::{AppendAck, AppendRequest, DataConn, Fence, Msg};
use rdfs_proto::ids::{ChunkVersion, LeaseSerial};
use rdfs_proto::limits::BLOCK_SIZE;
use rdfs_proto::record::{self, RecordId};
use rdfs_proto::ErrorCode;

use super::tests::{assert_error, fence, pattern, read, set_version, start, Server, ID, LEASE, V1};

/// Small chunks so a few records fill one: a quarter is 64 KiB.
const CHUNK: u64 = 4 * BLOCK_SIZE;

async fn servers(n: usize) -> Vec<Server> {
    let mut out = Vec::new();
    for _ in 0..n {
        let s = start().await;
        s.node.store().set_max_chunk_bytes(CHUNK);
        assert_eq!(set_version(&s.addr, V1, 1, true).await, Msg::Ok);
        out.push(s);
    }
    out
}

async fn append_raw(addr: &str, fence: Fence, rid: RecordId, framed: &[u8], chain: &[&str]) -> Msg {
    let mut conn = DataConn::connect(addr).await.unwrap();
    let req = AppendRequest {
        fence,
        record_id: rid,
        len: framed.len() as u64,
        downstream: chain.iter().map(|s| s.to_string()).collect(),
        sync: true,
        serial: 0,
        offset: None,
    };
    conn.write(&Msg::Append(req), &[]).await.unwrap();
    conn.write(&Msg::Data { last: true }, framed).await.unwrap();
    conn.flush().await.unwrap();
    conn.recv().await.unwrap().msg
}

async fn append(addr: &str, f: Fence, rid: RecordId, payload: &[u8], chain: &[&str]) -> Msg {
    append_raw(addr, f, rid, &record::encode(rid, payload), chain).await
}

/// The offset of an `AppendOk`, or a panic naming what came instead.
fn offset_of(msg: Msg) -> u64 {
    match msg {
        Msg::AppendOk(AppendAck { offset, .. }) => offset,
        other => panic!("expected AppendOk, got {other:?}"),
    }
}

/// Every valid record in a replica's data, as the reader would find them.
async fn records_on(s: &Server, version: ChunkVersion) -> Vec<(usize, RecordId)> {
    let data = read(&s.addr, version, 0, CHUNK).await.unwrap();
    record::scan_all(&data, record::max_framed_bytes(CHUNK) as usize)
        .into_iter()
        .map(|(at, _, id)| (at, id))
        .collect()
}

#[tokio::test]
async fn the_primary_chooses_offsets_and_pads_a_full_chunk_on_every_replica() {
    let s = servers(3).await;
    let chain = [s[1].addr.as_str(), s[2].addr.as_str()];
    let mut offsets = Vec::new();
    let mut want = Vec::new();
    // 60 KiB payloads: four fit in 256 KiB, the fifth does not.
    for seq in 0..4u64 {
        let rid = RecordId::new(1, seq);
        let payload = pattern(60 << 10, seq as u8);
        offsets.push(offset_of(
            append(&s[0].addr, fence(V1, 1, LEASE), rid, &payload, &chain).await,
        ));
        want.push(rid);
    }
    let framed = record::framed_len(60 << 10) as u64;
    assert_eq!(offsets, vec![0, framed, 2 * framed, 3 * framed]);
    let full = append(
        &s[0].addr,
        fence(V1, 1, LEASE),
        RecordId::new(1, 4),
        &pattern(60 << 10, 9),
        &chain,
    )
    .await;
    assert_eq!(full, Msg::ChunkFull { chunk_len: CHUNK });
    for server in &s {
        let data = read(&server.addr, V1, 0, CHUNK).await.unwrap();
        assert_eq!(data.len() as u64, CHUNK, "padded to the chunk size");
        assert!(data[(4 * framed) as usize..].iter().all(|b| *b == 0));
        let ids: Vec<RecordId> = records_on(server, V1)
            .await
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(ids, want, "replica {}", server.addr);
    }
    // Once full, a small record does not fit either.
    let again = append(
        &s[0].addr,
        fence(V1, 1, LEASE),
        RecordId::new(2, 0),
        b"x",
        &chain,
    )
    .await;
    assert_eq!(again, Msg::ChunkFull { chunk_len: CHUNK });
}

#[tokio::test]
async fn a_retried_record_keeps_its_offset_under_a_new_primary() {
    let s = servers(3).await;
    let a = RecordId::new(7, 1);
    let x = RecordId::new(7, 2);
    let chain = [s[1].addr.as_str(), s[2].addr.as_str()];
    offset_of(append(&s[0].addr, fence(V1, 1, LEASE), a, b"first", &chain).await);
    let at = offset_of(append(&s[0].addr, fence(V1, 1, LEASE), x, b"retried", &chain).await);
    assert_eq!(at, record::framed_len(5) as u64);
    // The ack was lost; the master re-grants (new version, new serial) with s[1] as primary.
    let v2 = ChunkVersion(2);
    let lease2 = LeaseSerial(8);
    for server in &s {
        let mut conn = DataConn::connect(&server.addr).await.unwrap();
        let req = rdfs_proto::dataplane::SetVersionRequest {
            chunk_id: ID,
            version: v2,
            epoch: rdfs_proto::ids::Epoch(1),
            lease_serial: lease2,
            create: false,
        };
        assert_eq!(conn.call(&Msg::SetVersion(req)).await.unwrap().msg, Msg::Ok);
    }
    let chain2 = [s[0].addr.as_str(), s[2].addr.as_str()];
    let again = append(&s[1].addr, fence(v2, 1, lease2), x, b"retried", &chain2).await;
    assert_eq!(
        offset_of(again),
        at,
        "the retry lands where the record already is"
    );
    for server in &s {
        assert_eq!(records_on(server, v2).await, vec![(0, a), (at as usize, x)]);
    }
}

#[tokio::test]
async fn a_replica_that_missed_a_record_never_keeps_two_copies() {
    let s = servers(3).await;
    let y = RecordId::new(9, 1);
    let z = RecordId::new(9, 2);
    // y reaches s[0] and s[1] only (its chain lost s[2]); z then goes to the whole chain.
    offset_of(
        append(
            &s[0].addr,
            fence(V1, 1, LEASE),
            y,
            b"yyyy",
            &[s[1].addr.as_str()],
        )
        .await,
    );
    let full = [s[1].addr.as_str(), s[2].addr.as_str()];
    let z_at = offset_of(append(&s[0].addr, fence(V1, 1, LEASE), z, b"zz", &full).await);
    assert_eq!(z_at, record::framed_len(4) as u64);
    // s[2] got z at the primary's offset, after a zero gap.
    assert_eq!(records_on(&s[2], V1).await, vec![(z_at as usize, z)]);
    // y is retried with s[2] as primary: it appends y at its own end; the replicas that
    // held y elsewhere disable that copy, so every replica holds y exactly once.
    let chain = [s[0].addr.as_str(), s[1].addr.as_str()];
    let y_at = offset_of(append(&s[2].addr, fence(V1, 1, LEASE), y, b"yyyy", &chain).await);
    assert_eq!(y_at, z_at + record::framed_len(2) as u64);
    for server in &s {
        assert_eq!(
            records_on(server, V1).await,
            vec![(z_at as usize, z), (y_at as usize, y)],
            "replica {}",
            server.addr
        );
    }
}

#[tokio::test]
async fn malformed_and_oversized_records_are_refused_and_the_connection_survives() {
    let s = servers(1).await;
    let rid = RecordId::new(3, 3);
    let mut bad = record::encode(rid, b"payload");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_error(
        &append_raw(&s[0].addr, fence(V1, 1, LEASE), rid, &bad, &[]).await,
        ErrorCode::Malformed,
    );
    let other = RecordId::new(3, 4);
    let framed = record::encode(other, b"payload");
    let msg = assert_error(
        &append_raw(&s[0].addr, fence(V1, 1, LEASE), rid, &framed, &[]).await,
        ErrorCode::Malformed,
    );
    assert!(msg.contains(&other.to_string()), "{msg}");
    let huge = pattern(CHUNK as usize / 4, 1);
    let msg = assert_error(
        &append(&s[0].addr, fence(V1, 1, LEASE), rid, &huge, &[]).await,
        ErrorCode::InvalidArgument,
    );
    assert!(msg.contains("quarter chunk"), "{msg}");
    let stale = append(&s[0].addr, fence(ChunkVersion(5), 1, LEASE), rid, b"p", &[]).await;
    assert_error(&stale, ErrorCode::StaleVersion);
    // Nothing was written by any of them.
    assert_eq!(
        read(&s[0].addr, V1, 0, CHUNK).await.unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(
        offset_of(append(&s[0].addr, fence(V1, 1, LEASE), rid, b"ok", &[]).await),
        0
    );
}

#[test]
fn the_record_index_is_rebuilt_from_the_data_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (framed_a, framed_b) = {
        let (store, _) = crate::store::ChunkStore::open(dir.path(), None).unwrap();
        store.set_max_chunk_bytes(CHUNK);
        store.create(ID, V1, LEASE).unwrap();
        let a = record::encode(RecordId::new(5, 1), &pattern(3000, 1));
        let b = record::encode(RecordId::new(5, 2), &pattern(60_000, 2));
        store.write_record(ID, 0, &a).unwrap();
        // A torn tail of garbage, then a record straddling a block boundary.
        store.write(ID, a.len() as u64, &[0xee; 100]).unwrap();
        store.write_record(ID, a.len() as u64 + 100, &b).unwrap();
        store.commit(ID, true).unwrap();
        (a, b)
    };
    let (store, _) = crate::store::ChunkStore::open(dir.path(), None).unwrap();
    store.set_max_chunk_bytes(CHUNK);
    assert_eq!(store.indexed_records(ID), None, "indexes are built lazily");
    let rid_b = RecordId::new(5, 2);
    let place = store
        .place_record(ID, rid_b, framed_b.len() as u64, CHUNK)
        .unwrap();
    assert_eq!(
        place,
        crate::store::Placement::Existing(framed_a.len() as u64 + 100)
    );
    assert_eq!(
        store.indexed_records(ID).unwrap(),
        vec![
            (0, RecordId::new(5, 1)),
            (framed_a.len() as u64 + 100, rid_b)
        ]
    );
    let end = (framed_a.len() + 100 + framed_b.len()) as u64;
    assert_eq!(
        store
            .place_record(ID, RecordId::new(6, 0), 10, CHUNK)
            .unwrap(),
        crate::store::Placement::New(end)
    );
    // A plain write over the first record drops the index; the rebuild no longer finds it.
    store.write(ID, 10, b"clobber").unwrap();
    assert_eq!(store.indexed_records(ID), None);
    assert_eq!(
        store
            .place_record(ID, RecordId::new(5, 1), framed_a.len() as u64, CHUNK)
            .unwrap(),
        crate::store::Placement::New(end)
    );
}
