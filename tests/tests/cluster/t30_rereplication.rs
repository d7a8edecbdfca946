use std::time::{Duration, Instant};

use rdfs_tests::{must_eventually, sha256_hex, test_bytes, Cluster, TEST_CHUNK_SIZE};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_chunkserver_is_noticed_and_its_chunks_rereplicated() {
    let mut cluster = Cluster::builder()
        .chunkservers(4)
        .heartbeat_timeout(Duration::from_secs(2))
        .lease(Duration::from_secs(1))
        .start()
        .await;
    let c = cluster.client().await;
    let f = c.create("/f", 0o644, false).await.unwrap();
    let data = test_bytes((TEST_CHUNK_SIZE * 8) as usize, 5);
    c.write_at(f.inode, 0, &data, true).await.unwrap();

    let victim = 0;
    let dead = cluster.chunkserver_addr(victim);
    let held = c
        .chunk_locations("/f")
        .await
        .unwrap()
        .chunks
        .iter()
        .filter(|ch| ch.replicas.contains(&dead))
        .count();
    assert!(held > 0, "the victim holds some chunks");
    cluster.stop_chunkserver(victim).await;
    let stopped = Instant::now();

    // Reads keep working while the master has not noticed yet.
    let back = c.read_at(f.inode, 0, data.len() as u64).await.unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&data));

    must_eventually(Duration::from_secs(20), "victim declared dead", || async {
        let st = c.cluster_status().await.ok()?;
        st.chunkservers
            .iter()
            .any(|s| s.addr == dead && s.state == "dead")
            .then_some(())
    })
    .await;

    let healed = must_eventually(Duration::from_secs(60), "3 live replicas again", || async {
        let locs = c.chunk_locations("/f").await.ok()?;
        let ok = locs
            .chunks
            .iter()
            .all(|ch| ch.replicas.len() == 3 && !ch.replicas.contains(&dead));
        ok.then_some(Instant::now())
    })
    .await;
    let secs = (healed - stopped).as_secs_f64();
    println!(
        "re-replicated {held} chunks of {TEST_CHUNK_SIZE} B in {secs:.2}s after the kill \
         (including the 2s heartbeat timeout)"
    );
    let fsck = c.fsck("/", false).await.unwrap();
    assert!(fsck.healthy, "fsck after repair: {fsck:?}");
    let back = c.read_at(f.inode, 0, data.len() as u64).await.unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    cluster.shutdown().await;
}
