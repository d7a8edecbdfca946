use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use rdfs_tests::{must_eventually, sha256_hex, test_bytes, Cluster, TEST_CHUNK_SIZE};

fn flip_byte(path: &std::path::Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_is_never_returned_and_the_replica_is_replaced() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let c = cluster.client().await;
    let f = c.create("/f", 0o644, false).await.unwrap();
    let data = test_bytes((TEST_CHUNK_SIZE * 2) as usize, 6);
    c.write_at(f.inode, 0, &data, true).await.unwrap();
    let chunk = c.chunk_locations("/f").await.unwrap().chunks[0].clone();

    // Corrupt every replica but one, on disk, behind the chunkservers' backs.
    let mut corrupted = Vec::new();
    for i in 0..2 {
        let files = cluster.chunk_files(i, chunk.chunk_id);
        assert_eq!(files.len(), 1);
        flip_byte(&files[0], 100_000);
        corrupted.push(cluster.chunkserver_addr(i));
    }
    for _ in 0..5 {
        let back = c.read_at(f.inode, 0, data.len() as u64).await.unwrap();
        assert_eq!(sha256_hex(&back), sha256_hex(&data));
    }
    // The bad replicas are reported, dropped and replaced from the good one.
    must_eventually(
        Duration::from_secs(60),
        "corrupt replicas replaced",
        || async {
            let locs = c.chunk_locations("/f").await.ok()?;
            let ch = locs.chunks.iter().find(|x| x.chunk_id == chunk.chunk_id)?;
            let fsck = c.fsck("/", false).await.ok()?;
            (ch.replicas.len() == 3 && fsck.healthy && fsck.corrupt == 0).then_some(())
        },
    )
    .await;
    // Every replica now holds good bytes: read each one's file range through the cluster.
    let back = c.read_at(f.inode, 0, data.len() as u64).await.unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    cluster.shutdown().await;
}
