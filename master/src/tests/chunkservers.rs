use super::*;

#[tokio::test]
async fn register_with_a_foreign_cluster_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(tmp.path())).await;
    let mut c = m.client().await;
    let r = c
        .register(RegisterRequest {
            cluster_id: "00112233445566778899aabbccddeeff".into(),
            data_addr: "127.0.0.1:1".into(),
            node_id: "n1".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), ErrorCode::ClusterMismatch);
    let fresh = register(&mut c, "127.0.0.1:1", "n1", vec![]).await;
    assert_eq!(fresh.cluster_id.len(), 32);
    assert_eq!(fresh.heartbeat_interval_ms, 100);
    assert_eq!(fresh.chunk_size, TEST_CHUNK_SIZE);
    // The same node registering with the adopted id keeps its chunkserver id.
    let again = c
        .register(RegisterRequest {
            cluster_id: fresh.cluster_id.clone(),
            data_addr: "127.0.0.1:1".into(),
            node_id: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.chunkserver_id, fresh.chunkserver_id);
    m.stop().await;
}

#[tokio::test]
async fn unknown_chunk_ids_at_or_above_next_id_are_never_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(tmp.path())).await;
    let mut c = m.client().await;
    let r = register(
        &mut c,
        "127.0.0.1:2",
        "n2",
        vec![report(1, 1), report(500, 3)],
    )
    .await;
    assert!(r.commands.is_empty());
    let br = c
        .block_report(BlockReportRequest {
            chunkserver_id: r.chunkserver_id,
            chunks: vec![report(1, 1), report(500, 3)],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(br.commands.is_empty());
    assert!(heartbeat(&mut c, r.chunkserver_id)
        .await
        .commands
        .is_empty());
    m.stop().await;
}

#[tokio::test]
async fn unknown_heartbeat_is_asked_to_reregister() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(tmp.path())).await;
    let mut c = m.client().await;
    let hb = heartbeat(&mut c, 77).await;
    assert!(hb.reregister);
    let br = c
        .block_report(BlockReportRequest {
            chunkserver_id: 77,
            chunks: vec![],
        })
        .await;
    assert_eq!(code(br), ErrorCode::NotFound);
    m.stop().await;
}
