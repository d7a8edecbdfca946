//! Unit tests of the file chunk store: exact bytes, CRC enforcement, torn-tail recovery.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use super::*;

const V1: ChunkVersion = ChunkVersion(1);

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn open(dir: &Path) -> (ChunkStore, OpenReport) {
    ChunkStore::open(dir, None).unwrap()
}

fn data_path(dir: &Path, id: u64) -> PathBuf {
    chunk_paths(&dir.join(CHUNKS_DIR), ChunkId(id))
        .unwrap()
        .data
}

#[test]
fn round_trip_exact_bytes_and_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let id = ChunkId(0x1234);
    store.create(id, V1, LeaseSerial(5)).unwrap();
    let bytes = pattern(200_000, 7);
    assert_eq!(store.write(id, 0, &bytes).unwrap(), 200_000);
    assert_eq!(store.commit(id, true).unwrap(), 200_000);
    assert_eq!(store.read(id, 0, 200_000).unwrap(), bytes);
    assert_eq!(store.read(id, 70_000, 10).unwrap(), &bytes[70_000..70_010]);
    // Asking past the end returns only what is held.
    assert_eq!(store.read(id, 199_990, 100).unwrap(), &bytes[199_990..]);
    assert!(store.read(id, 300_000, 100).unwrap().is_empty());
    assert_eq!(store.used_bytes(), 200_000);
    assert_eq!(
        store.list(),
        vec![ChunkInfo {
            chunk_id: id,
            version: V1,
            len: 200_000
        }]
    );
    assert!(data_path(tmp.path(), 0x1234).ends_with("chunks/34/0000000000001234.data"));
    assert_eq!(
        data_file_path(tmp.path(), id),
        Some(data_path(tmp.path(), 0x1234))
    );
    assert_eq!(data_file_path(tmp.path(), ChunkId(0)), None);
    drop(store);
    let (store, report) = open(tmp.path());
    assert!(report.bad.is_empty() && report.trimmed.is_empty());
    assert_eq!(store.read(id, 0, 200_000).unwrap(), bytes);
    assert_eq!(store.state(id).unwrap().lease_serial, LeaseSerial(5));
}

#[test]
fn partial_block_overwrite_and_gap_zero_fill() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let id = ChunkId(9);
    store.create(id, V1, LeaseSerial(0)).unwrap();
    let mut model = pattern(100_000, 1);
    store.write(id, 0, &model).unwrap();
    store.write(id, 1000, b"hello").unwrap();
    model[1000..1005].copy_from_slice(b"hello");
    // A write past the end leaves a zero-filled gap.
    store.write(id, 150_000, b"tail").unwrap();
    model.resize(150_000, 0);
    model.extend_from_slice(b"tail");
    store.commit(id, false).unwrap();
    assert_eq!(store.read(id, 0, 1 << 20).unwrap(), model);
    drop(store);
    let (store, report) = open(tmp.path());
    assert!(report.trimmed.is_empty());
    assert_eq!(store.read(id, 0, 1 << 20).unwrap(), model);
}

#[test]
fn flipped_byte_fails_its_block_and_quarantines() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let id = ChunkId(77);
    store.create(id, V1, LeaseSerial(0)).unwrap();
    let bytes = pattern(3 * BLOCK_SIZE as usize, 3);
    store.write(id, 0, &bytes).unwrap();
    store.commit(id, true).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(tmp.path(), 77))
        .unwrap();
    f.write_all_at(&[bytes[BLOCK_SIZE as usize + 10] ^ 0xff], BLOCK_SIZE + 10)
        .unwrap();
    // Other blocks still read.
    assert_eq!(store.read(id, 0, 100).unwrap(), &bytes[..100]);
    let err = store.read(id, BLOCK_SIZE, 100).unwrap_err();
    assert!(
        matches!(err, StoreError::ChecksumMismatch { block: 1, .. }),
        "{err}"
    );
    assert_eq!(err.code(), rdfs_proto::ErrorCode::ChecksumMismatch);
    // Quarantined: not served again, not listed.
    assert!(matches!(
        store.read(id, 0, 100),
        Err(StoreError::Quarantined(_))
    ));
    assert!(store.list().is_empty());
}

#[test]
fn partial_overwrite_of_corrupt_block_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let id = ChunkId(78);
    store.create(id, V1, LeaseSerial(0)).unwrap();
    store.write(id, 0, &pattern(1000, 3)).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(tmp.path(), 78))
        .unwrap();
    f.write_all_at(&[0xee], 900).unwrap();
    let err = store.write(id, 10, b"xy").unwrap_err();
    assert!(
        matches!(err, StoreError::ChecksumMismatch { block: 0, .. }),
        "{err}"
    );
}

#[test]
fn torn_tail_is_cut_back_to_last_valid_block() {
    let tmp = tempfile::tempdir().unwrap();
    let id = ChunkId(0x500);
    let bytes = pattern(3 * BLOCK_SIZE as usize + 100, 9);
    {
        let (store, _) = open(tmp.path());
        store.create(id, V1, LeaseSerial(0)).unwrap();
        store.write(id, 0, &bytes).unwrap();
        store.commit(id, true).unwrap();
    }
    // Truncate mid-block 2: blocks 2 and 3 are lost, 0 and 1 survive.
    let f = OpenOptions::new()
        .write(true)
        .open(data_path(tmp.path(), 0x500))
        .unwrap();
    f.set_len(2 * BLOCK_SIZE + 5).unwrap();
    let (store, report) = open(tmp.path());
    assert_eq!(report.trimmed, vec![id]);
    assert_eq!(store.state(id).unwrap().len, 2 * BLOCK_SIZE);
    assert_eq!(
        store.read(id, 0, 1 << 20).unwrap(),
        &bytes[..2 * BLOCK_SIZE as usize]
    );
    assert_eq!(
        std::fs::metadata(data_path(tmp.path(), 0x500))
            .unwrap()
            .len(),
        2 * BLOCK_SIZE
    );
}

#[test]
fn garbage_after_the_end_is_cut_and_garbage_in_last_block_drops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let id = ChunkId(0x501);
    let bytes = pattern(BLOCK_SIZE as usize + 100, 4);
    {
        let (store, _) = open(tmp.path());
        store.create(id, V1, LeaseSerial(0)).unwrap();
        store.write(id, 0, &bytes).unwrap();
        store.commit(id, true).unwrap();
    }
    let path = data_path(tmp.path(), 0x501);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"garbage that no meta describes").unwrap();
    let (store, report) = open(tmp.path());
    assert_eq!(report.trimmed, vec![id]);
    assert_eq!(store.read(id, 0, 1 << 20).unwrap(), bytes);
    drop(store);
    // Now damage the last (partial) block itself: it is dropped, block 0 stays.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"XX", BLOCK_SIZE + 50).unwrap();
    let (store, report) = open(tmp.path());
    assert_eq!(report.trimmed, vec![id]);
    assert_eq!(
        store.read(id, 0, 1 << 20).unwrap(),
        &bytes[..BLOCK_SIZE as usize]
    );
}

#[test]
fn corrupt_meta_is_reported_bad_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let id = ChunkId(0x502);
    {
        let (store, _) = open(tmp.path());
        store.create(id, V1, LeaseSerial(0)).unwrap();
        store.write(id, 0, b"abc").unwrap();
        store.commit(id, true).unwrap();
    }
    let meta = chunk_paths(&tmp.path().join(CHUNKS_DIR), id).unwrap().meta;
    let f = OpenOptions::new().write(true).open(&meta).unwrap();
    f.write_all_at(&[0xff], 30).unwrap();
    let (store, report) = open(tmp.path());
    assert_eq!(
        report.bad,
        vec![ChunkInfo {
            chunk_id: id,
            version: ChunkVersion(0),
            len: 0
        }]
    );
    assert!(matches!(
        store.read(id, 0, 3),
        Err(StoreError::Quarantined(_))
    ));
    assert!(store.list().is_empty());
    // The files are still there (nothing deleted without the master's word).
    assert!(meta.exists());
}

#[test]
fn versions_serials_and_range_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let id = ChunkId(5);
    store.set_max_chunk_bytes(4 * BLOCK_SIZE);
    store.create(id, V1, LeaseSerial(1)).unwrap();
    assert_eq!(store.begin_mutation(id, None).unwrap(), 1);
    assert_eq!(store.begin_mutation(id, None).unwrap(), 2);
    assert!(matches!(
        store.begin_mutation(id, Some(2)),
        Err(StoreError::SerialOutOfOrder { .. })
    ));
    assert_eq!(store.begin_mutation(id, Some(7)).unwrap(), 7);
    store
        .set_version(id, ChunkVersion(2), LeaseSerial(3))
        .unwrap();
    // A new version restarts the serials.
    assert_eq!(store.begin_mutation(id, Some(1)).unwrap(), 1);
    let err = store.set_version(id, V1, LeaseSerial(3)).unwrap_err();
    assert_eq!(err.code(), rdfs_proto::ErrorCode::StaleVersion);
    let err = store.write(id, 4 * BLOCK_SIZE - 1, b"ab").unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { .. }), "{err}");
    let err = store.write(id, u64::MAX, b"ab").unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { .. }), "{err}");
    assert!(matches!(
        store.read(ChunkId(6), 0, 1),
        Err(StoreError::NoSuchChunk(_))
    ));
}

#[test]
fn capacity_cap_gives_no_space_and_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = ChunkStore::open(tmp.path(), Some(1000)).unwrap();
    let id = ChunkId(3);
    store.create(id, V1, LeaseSerial(0)).unwrap();
    store.write(id, 0, &[1u8; 900]).unwrap();
    let err = store.write(id, 900, &[2u8; 200]).unwrap_err();
    assert_eq!(err.code(), rdfs_proto::ErrorCode::NoSpace);
    assert!(store.no_space());
    assert_eq!(store.read(id, 0, 2000).unwrap(), vec![1u8; 900]);
    assert_eq!(store.capacity_bytes(), 1000);
    store.delete(id).unwrap();
    assert!(!store.no_space());
    assert_eq!(store.used_bytes(), 0);
}

#[test]
fn install_replaces_an_older_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    let id = ChunkId(0xfeed);
    store.create(id, V1, LeaseSerial(0)).unwrap();
    store.write(id, 0, b"old bytes").unwrap();
    let bytes = pattern(2 * BLOCK_SIZE as usize + 3, 5);
    let mut inst = store.begin_install(id).unwrap();
    for part in bytes.chunks(50_000) {
        inst.append(part).unwrap();
    }
    let info = store
        .finish_install(inst, ChunkVersion(4), bytes.len() as u64)
        .unwrap();
    assert_eq!(
        info,
        ChunkInfo {
            chunk_id: id,
            version: ChunkVersion(4),
            len: bytes.len() as u64
        }
    );
    assert_eq!(store.read(id, 0, 1 << 20).unwrap(), bytes);
    assert_eq!(store.used_bytes(), bytes.len() as u64);
    drop(store);
    let (store, report) = open(tmp.path());
    assert!(report.trimmed.is_empty());
    assert_eq!(store.state(id).unwrap().version, ChunkVersion(4));
    assert_eq!(store.read(id, 0, 1 << 20).unwrap(), bytes);
    // A short copy is refused and leaves the replica alone.
    let mut inst = store.begin_install(id).unwrap();
    inst.append(b"short").unwrap();
    assert!(store.finish_install(inst, ChunkVersion(5), 10).is_err());
    assert_eq!(store.state(id).unwrap().version, ChunkVersion(4));
}

#[test]
fn chunk_paths_never_escape_the_store() {
    let root = Path::new("/srv/data/chunks");
    for id in [1u64, 255, 256, u64::MAX, 0x2e2e_2f2e_2e2f_0000] {
        let p = chunk_paths(root, ChunkId(id)).unwrap();
        assert_eq!(p.data.parent().unwrap().parent().unwrap(), root);
        let name = p.data.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("{id:016x}.data"));
    }
    assert!(matches!(
        chunk_paths(root, ChunkId(0)),
        Err(StoreError::InvalidId(_))
    ));
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(tmp.path());
    store.create(ChunkId(u64::MAX), V1, LeaseSerial(0)).unwrap();
    assert!(tmp.path().join("chunks/ff/ffffffffffffffff.meta").exists());
}
