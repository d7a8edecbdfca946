use rdfs_tests::{sha256_hex, test_bytes, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_master_keeps_every_acknowledged_operation() {
    let mut cluster = Cluster::builder().chunkservers(3).start().await;
    let c = cluster.client().await;
    let mut files = Vec::new();
    for i in 0..20 {
        c.mkdir(&format!("/d{i}"), 0o755, false).await.unwrap();
        let path = format!("/d{i}/f");
        let attr = c.create(&path, 0o644, false).await.unwrap();
        let data = test_bytes(10_000 + i * 1000, i as u64);
        c.write_at(attr.inode, 0, &data, true).await.unwrap();
        files.push((path, data));
    }
    c.rename("/d0/f", "/d1/g").await.unwrap();
    files[0].0 = "/d1/g".into();
    c.delete("/d19", true).await.unwrap();
    files.pop();

    cluster.restart_master().await;
    cluster.must_wait_live_chunkservers(3).await;
    let c = cluster.client().await;
    for (path, data) in &files {
        let st = c.stat(path).await.unwrap();
        assert_eq!(st.size, data.len() as u64, "{path}");
        let back = c.read_at(st.inode, 0, st.size).await.unwrap();
        assert_eq!(sha256_hex(&back), sha256_hex(data), "{path}");
    }
    assert!(c.stat("/d19").await.is_err());
    assert!(c.stat("/d0/f").await.is_err());
    let mut names: Vec<String> = c
        .list("/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names.len(), 19);
    cluster.shutdown().await;
}
