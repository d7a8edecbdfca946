use std::collections::HashSet;

use rdfs_tests::{test_bytes, Cluster, TEST_CHUNK_SIZE};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_chunk_has_three_replicas_on_distinct_chunkservers() {
    let cluster = Cluster::builder().chunkservers(4).start().await;
    let c = cluster.client().await;
    let f = c.create("/f", 0o644, false).await.unwrap();
    let data = test_bytes((TEST_CHUNK_SIZE * 6) as usize, 3);
    c.write_at(f.inode, 0, &data, true).await.unwrap();
    let locs = c.chunk_locations("/f").await.unwrap();
    assert_eq!(locs.chunks.len(), 6);
    let all: HashSet<String> = (0..4).map(|i| cluster.chunkserver_addr(i)).collect();
    for ch in &locs.chunks {
        let distinct: HashSet<&String> = ch.replicas.iter().collect();
        assert_eq!(
            ch.replicas.len(),
            3,
            "chunk {} replicas {:?}",
            ch.chunk_id,
            ch.replicas
        );
        assert_eq!(distinct.len(), 3);
        assert!(ch.replicas.iter().all(|r| all.contains(r)));
    }
    let fsck = c.fsck("/", false).await.unwrap();
    assert_eq!(fsck.files, 1);
    assert_eq!(fsck.chunks, 6);
    assert_eq!(fsck.under_replicated, 0);
    assert_eq!(fsck.missing, 0);
    assert!(fsck.healthy);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_files_give_their_disk_space_back() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let c = cluster.client().await;
    let f = c.create("/big", 0o644, false).await.unwrap();
    c.write_at(
        f.inode,
        0,
        &test_bytes((TEST_CHUNK_SIZE * 3) as usize, 4),
        true,
    )
    .await
    .unwrap();
    let ids: Vec<u64> = c
        .chunk_locations("/big")
        .await
        .unwrap()
        .chunks
        .iter()
        .map(|ch| ch.chunk_id)
        .collect();
    assert_eq!(ids.len(), 3);
    for i in 0..3 {
        for id in &ids {
            assert_eq!(
                cluster.chunk_files(i, *id).len(),
                1,
                "cs{i} holds chunk {id}"
            );
        }
    }
    c.delete("/big", false).await.unwrap();
    rdfs_tests::must_eventually(
        std::time::Duration::from_secs(30),
        "orphans deleted",
        || async {
            let left: usize = (0..3)
                .flat_map(|i| ids.iter().map(move |id| (i, *id)))
                .map(|(i, id)| cluster.chunk_files(i, id).len())
                .sum();
            (left == 0).then_some(())
        },
    )
    .await;
    cluster.shutdown().await;
}
