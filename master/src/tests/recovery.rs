use super::*;

use crate::oplog::{list_segments, segment_dir, SEGMENT_HEADER_BYTES};

/// Runs a master that creates /d and /d/f0../d/f{n-1}; returns a crash image of its dir.
async fn crash_image_with_files(n: usize) -> tempfile::TempDir {
    let live = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(live.path())).await;
    let mut c = m.client().await;
    mkdir(&mut c, "/d", false).await.unwrap();
    for i in 0..n {
        create(&mut c, &format!("/d/f{i}")).await.unwrap();
    }
    let image = tempfile::tempdir().unwrap();
    crash_copy(live.path(), image.path());
    m.stop().await;
    image
}

fn last_segment(dir: &Path) -> PathBuf {
    list_segments(&segment_dir(dir))
        .unwrap()
        .last()
        .unwrap()
        .1
        .clone()
}

async fn present(dir: &Path, n: usize) -> Vec<bool> {
    let m = TestMaster::start(config(dir)).await;
    let mut c = m.client().await;
    let mut out = Vec::new();
    for i in 0..n {
        out.push(exists(&mut c, &format!("/d/f{i}")).await);
    }
    m.stop().await;
    out
}

#[tokio::test]
async fn restart_from_log_keeps_every_acknowledged_op() {
    let image = crash_image_with_files(20).await;
    assert!(
        crate::checkpoint::list(&crate::checkpoint::checkpoint_dir(image.path()))
            .unwrap()
            .is_empty()
    );
    assert_eq!(present(image.path(), 20).await, vec![true; 20]);
}

#[tokio::test]
async fn truncated_last_record_is_cut_off() {
    let image = crash_image_with_files(5).await;
    let seg = last_segment(image.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    assert_eq!(
        present(image.path(), 5).await,
        vec![true, true, true, true, false]
    );
}

#[tokio::test]
async fn bit_flipped_last_record_is_cut_off() {
    let image = crash_image_with_files(5).await;
    let seg = last_segment(image.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    assert_eq!(
        present(image.path(), 5).await,
        vec![true, true, true, true, false]
    );
    // Recovery ended at seq 5 (mkdir + 4 creates): the shutdown checkpoint says so.
    let ckpts = crate::checkpoint::list(&crate::checkpoint::checkpoint_dir(image.path())).unwrap();
    assert_eq!(ckpts[0].0, 5);
}

#[tokio::test]
async fn corrupt_record_followed_by_valid_ones_stops_the_master() {
    let image = crash_image_with_files(5).await;
    let seg = last_segment(image.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    // Inside the first record's payload (after the 12-byte header and 20-byte prefix).
    bytes[SEGMENT_HEADER_BYTES + 24] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = start_err(config(image.path())).await;
    let msg = err.to_string();
    assert!(
        matches!(err, MasterError::Corrupt { offset: 12, .. }),
        "{msg}"
    );
    assert!(msg.contains("00000000000000000001.log"), "{msg}");
    assert!(msg.contains("followed by valid records"), "{msg}");
}

#[tokio::test]
async fn checkpoint_plus_later_ops_recover_identically() {
    let live = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(live.path())).await;
    let mut c = m.client().await;
    mkdir(&mut c, "/d", false).await.unwrap();
    for i in 0..3 {
        create(&mut c, &format!("/d/f{i}")).await.unwrap();
    }
    m.stop().await; // writes a checkpoint at seq 4
    let ckpts = crate::checkpoint::list(&crate::checkpoint::checkpoint_dir(live.path())).unwrap();
    assert_eq!(ckpts.iter().map(|c| c.0).collect::<Vec<_>>(), vec![4]);
    let m = TestMaster::start(config(live.path())).await;
    let mut c = m.client().await;
    for i in 3..6 {
        create(&mut c, &format!("/d/f{i}")).await.unwrap();
    }
    c.rename(RenameRequest {
        src: "/d/f0".into(),
        dst: "/d/f9".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let image = tempfile::tempdir().unwrap();
    crash_copy(live.path(), image.path());
    m.stop().await;
    // The segment covered by the checkpoint is gone; records after it start a new one.
    let segs = list_segments(&segment_dir(image.path())).unwrap();
    assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![5]);
    let got = present(image.path(), 10).await;
    let want = [
        false, true, true, true, true, true, false, false, false, true,
    ];
    assert_eq!(got, want);
    let m = TestMaster::start(config(image.path())).await;
    let mut c = m.client().await;
    let status = c
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.last_op_seq, 8);
    m.stop().await;
}

#[tokio::test]
async fn foreign_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("STATE"), b"a chunkserver lives here").unwrap();
    let err = start_err(config(tmp.path())).await;
    assert!(matches!(err, MasterError::ForeignDir { .. }), "{err}");
    assert!(err.to_string().contains("STATE"), "{err}");
}

#[tokio::test]
async fn second_master_on_the_same_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(tmp.path())).await;
    let _ = m.client().await;
    let err = start_err(config(tmp.path())).await;
    assert!(matches!(err, MasterError::Locked { .. }), "{err}");
    m.stop().await;
}

#[tokio::test]
async fn concurrent_mutations_are_all_durable() {
    let live = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(live.path())).await;
    let mut c = m.client().await;
    mkdir(&mut c, "/d", false).await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move { create(&mut c, &format!("/d/f{i}")).await.map(|a| a.inode) })
        })
        .collect();
    let mut inodes = Vec::new();
    for t in tasks {
        inodes.push(t.await.unwrap().unwrap());
    }
    inodes.sort();
    inodes.dedup();
    assert_eq!(inodes.len(), 64, "every create got its own inode");
    let image = tempfile::tempdir().unwrap();
    crash_copy(live.path(), image.path());
    m.stop().await;
    assert_eq!(present(image.path(), 64).await, vec![true; 64]);
}
