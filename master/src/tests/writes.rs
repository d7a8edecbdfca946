use super::*;

use std::sync::Arc;

/// A config where chunkservers never time out (tests that do not heartbeat).
fn patient(dir: &Path) -> MasterConfig {
    let mut c = config(dir);
    c.heartbeat_timeout = Duration::from_secs(600);
    c
}

async fn prepare(
    c: &mut MasterClient<Channel>,
    inode: u64,
    index: u64,
    failed: Vec<String>,
) -> Result<PrepareWriteResponse, tonic::Status> {
    c.prepare_write(PrepareWriteRequest {
        inode,
        chunk_index: index,
        failed_replicas: failed,
        caller: None,
    })
    .await
    .map(|r| r.into_inner())
}

async fn fakes(c: &mut MasterClient<Channel>, n: usize) -> Vec<(FakeChunkserver, u64)> {
    let mut out = Vec::new();
    for i in 0..n {
        let f = FakeChunkserver::start().await;
        let id = register(c, &f.addr, &format!("node{i}"), vec![])
            .await
            .chunkserver_id;
        out.push((f, id));
    }
    out
}

#[tokio::test]
async fn prepare_write_allocates_reuses_and_bumps() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(patient(tmp.path())).await;
    let mut c = m.client().await;
    let cs = fakes(&mut c, 3).await;
    let f = create(&mut c, "/f").await.unwrap();

    let g1 = prepare(&mut c, f.inode, 0, vec![]).await.unwrap();
    assert_eq!((g1.chunk_id, g1.version, g1.epoch), (1, 1, 1));
    assert_eq!(g1.chunk_size, TEST_CHUNK_SIZE);
    let mut chain = g1.chain.clone();
    chain.sort();
    let mut all: Vec<String> = cs.iter().map(|(f, _)| f.addr.clone()).collect();
    all.sort();
    assert_eq!(chain, all);
    for (fake, _) in &cs {
        assert_eq!(fake.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
    // Same lease while it is valid.
    let again = prepare(&mut c, f.inode, 0, vec![]).await.unwrap();
    assert_eq!(
        (again.version, again.lease_serial, again.chain.clone()),
        (1, g1.lease_serial, g1.chain.clone())
    );

    // The client could not reach the last replica, which is indeed gone: new version without it.
    let lost = g1.chain[2].clone();
    cs.iter().find(|(f, _)| f.addr == lost).unwrap().0.kill();
    let g2 = prepare(&mut c, f.inode, 0, vec![lost.clone()])
        .await
        .unwrap();
    assert_eq!(g2.version, 2);
    assert_ne!(g2.lease_serial, g1.lease_serial);
    assert_eq!(g2.chain.len(), 2);
    assert!(!g2.chain.contains(&lost));

    let commit = c
        .commit_write(CommitWriteRequest {
            inode: f.inode,
            end_offset: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.attr.unwrap().size, 1000);
    let chunks = c
        .get_chunks(GetChunksRequest {
            inode: f.inode,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chunks.file_size, 1000);
    assert_eq!(chunks.chunks.len(), 1);
    let loc = &chunks.chunks[0];
    assert_eq!((loc.index, loc.chunk_id, loc.version), (0, 1, 2));
    let mut replicas = loc.replicas.clone();
    replicas.sort();
    let mut want = g2.chain.clone();
    want.sort();
    assert_eq!(replicas, want, "the stale replica is not handed to readers");
    m.stop().await;
}

#[tokio::test]
async fn prepare_write_validates_its_request() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(patient(tmp.path())).await;
    let mut c = m.client().await;
    let f = create(&mut c, "/f").await.unwrap();
    // No chunkserver at all: a clear Unavailable.
    assert_eq!(
        code(prepare(&mut c, f.inode, 0, vec![]).await),
        ErrorCode::Unavailable
    );
    let _cs = fakes(&mut c, 1).await;
    // One live server is fewer than min_replicas (2).
    assert_eq!(
        code(prepare(&mut c, f.inode, 0, vec![]).await),
        ErrorCode::Unavailable
    );
    let huge = (1u64 << 50) / TEST_CHUNK_SIZE;
    assert_eq!(
        code(prepare(&mut c, f.inode, huge, vec![]).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(prepare(&mut c, 1, 0, vec![]).await),
        ErrorCode::IsADirectory
    );
    assert_eq!(
        code(prepare(&mut c, 999, 0, vec![]).await),
        ErrorCode::NotFound
    );
    m.stop().await;
}

#[tokio::test]
async fn deleted_file_chunks_are_deleted_and_orphans_reported_later_too() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(patient(tmp.path())).await;
    let mut c = m.client().await;
    let cs = fakes(&mut c, 2).await;
    let f = create(&mut c, "/f").await.unwrap();
    prepare(&mut c, f.inode, 0, vec![]).await.unwrap();
    c.delete(DeleteRequest {
        path: "/f".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for (_, id) in &cs {
        assert_eq!(deletes(&heartbeat(&mut c, *id).await.commands), vec![1]);
    }
    // The replica is still there at the next block report: an orphan below next id.
    let br = c
        .block_report(BlockReportRequest {
            chunkserver_id: cs[0].1,
            chunks: vec![report(1, 1), report(2, 1)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deletes(&br.commands), vec![1]);
    m.stop().await;
}

#[tokio::test]
async fn safe_mode_blocks_writes_and_deletes_until_reports_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(patient(tmp.path())).await;
    let mut c = m.client().await;
    let cs = fakes(&mut c, 2).await;
    let f = create(&mut c, "/f").await.unwrap();
    prepare(&mut c, f.inode, 0, vec![]).await.unwrap();
    prepare(&mut c, f.inode, 1, vec![]).await.unwrap();
    // Both chunks hold acknowledged bytes (chunks past the end would not keep safe mode).
    c.commit_write(CommitWriteRequest {
        inode: f.inode,
        end_offset: TEST_CHUNK_SIZE + 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let g = create(&mut c, "/g").await.unwrap();
    prepare(&mut c, g.inode, 0, vec![]).await.unwrap();
    c.delete(DeleteRequest {
        path: "/g".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    m.stop().await;
    drop(cs);

    let m = TestMaster::start(patient(tmp.path())).await;
    let mut c = m.client().await;
    let status = c
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.safe_mode);
    assert_eq!(status.chunks, 2);
    // Orphan 3 and a stale copy of chunk 1 reported in safe mode: nothing is deleted.
    let a = register(&mut c, "127.0.0.1:7", "a", vec![report(3, 1), report(1, 1)]).await;
    assert!(a.commands.is_empty());
    assert!(heartbeat(&mut c, a.chunkserver_id)
        .await
        .commands
        .is_empty());
    assert_eq!(
        code(prepare(&mut c, f.inode, 2, vec![]).await),
        ErrorCode::SafeMode
    );
    // Metadata operations proceed.
    create(&mut c, "/h").await.unwrap();
    let b = register(&mut c, "127.0.0.1:8", "b", vec![report(2, 1)]).await;
    assert!(b.commands.is_empty());
    let status = c
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.safe_mode);
    let br = c
        .block_report(BlockReportRequest {
            chunkserver_id: a.chunkserver_id,
            chunks: vec![report(3, 1), report(1, 1)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deletes(&br.commands), vec![3]);
    m.stop().await;
}

/// Heartbeats one chunkserver every 100 ms until cancelled, collecting its commands.
fn pump(
    addr: String,
    id: u64,
    added: Arc<parking_lot::Mutex<Vec<ChunkReport>>>,
    out: Arc<parking_lot::Mutex<Vec<Command>>>,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let mut c = MasterClient::connect(addr).await.unwrap();
        while !s.is_cancelled() {
            let req = HeartbeatRequest {
                chunkserver_id: id,
                capacity: 1 << 40,
                added: std::mem::take(&mut *added.lock()),
                ..Default::default()
            };
            if let Ok(r) = c.heartbeat(req).await {
                out.lock().extend(r.into_inner().commands);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    stop
}

#[tokio::test]
async fn dead_chunkserver_triggers_re_replication() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.lease_duration = Duration::from_millis(300);
    let m = TestMaster::start(cfg).await;
    let mut c = m.client().await;
    let cs = fakes(&mut c, 4).await;
    let mut pumps = Vec::new();
    let mut adds = Vec::new();
    let cmds = Arc::new(parking_lot::Mutex::new(Vec::new()));
    for (f, id) in &cs {
        let added = Arc::new(parking_lot::Mutex::new(Vec::new()));
        pumps.push(pump(m.addr.clone(), *id, added.clone(), cmds.clone()));
        adds.push((f.addr.clone(), added));
    }
    let f = create(&mut c, "/f").await.unwrap();
    let g = prepare(&mut c, f.inode, 0, vec![]).await.unwrap();
    let spare = cs
        .iter()
        .position(|(f, _)| !g.chain.contains(&f.addr))
        .unwrap();
    let victim = cs.iter().position(|(f, _)| f.addr == g.chain[1]).unwrap();
    pumps[victim].cancel();

    let mut ordered = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        ordered = cmds.lock().iter().find_map(|c| match &c.kind {
            Some(command::Kind::Replicate(r)) => Some(r.clone()),
            _ => None,
        });
        if ordered.is_some() {
            break;
        }
    }
    let r = ordered.expect("a ReplicateChunk command was issued");
    assert_eq!((r.chunk_id, r.version), (1, 1));
    assert_eq!(r.target, cs[spare].0.addr);
    let fsck = c
        .fsck(FsckRequest {
            path: "/".into(),
            list_chunks: true,
            list_files: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (fsck.files, fsck.chunks, fsck.under_replicated, fsck.missing),
        (1, 1, 1, 0)
    );
    assert!(!fsck.healthy);
    assert_eq!(fsck.chunks_detail[0].problem, "under_replicated");

    // The target reports the new replica: healthy again.
    adds[spare].1.lock().push(report(1, 1));
    let mut healthy = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fsck = c
            .fsck(FsckRequest {
                path: "/f".into(),
                list_chunks: false,
                list_files: false,
            })
            .await
            .unwrap()
            .into_inner();
        if fsck.healthy {
            healthy = true;
            break;
        }
    }
    assert!(healthy, "re-replicated chunk becomes healthy");
    let status = c
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let dead: Vec<_> = status
        .chunkservers
        .iter()
        .filter(|s| s.state == "dead")
        .map(|s| s.addr.clone())
        .collect();
    assert_eq!(dead, vec![cs[victim].0.addr.clone()]);
    for p in pumps {
        p.cancel();
    }
    m.stop().await;
}

#[tokio::test]
async fn newer_reported_version_is_adopted_and_bad_replicas_are_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(patient(tmp.path())).await;
    let mut c = m.client().await;
    let cs = fakes(&mut c, 3).await;
    let f = create(&mut c, "/f").await.unwrap();
    prepare(&mut c, f.inode, 0, vec![]).await.unwrap();
    // A replica claims version 5: the master adopts it (logged), the others become stale.
    let br = c
        .block_report(BlockReportRequest {
            chunkserver_id: cs[0].1,
            chunks: vec![report(1, 5)],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(br.commands.is_empty());
    let loc = c
        .get_chunks(GetChunksRequest {
            inode: f.inode,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .chunks
        .remove(0);
    assert_eq!(
        (loc.version, loc.replicas.clone()),
        (5, vec![cs[0].0.addr.clone()])
    );

    // The one current replica is reported corrupt: it is dropped, deleted and counted.
    c.report_bad_replica(ReportBadReplicaRequest {
        chunk_id: 1,
        replica: cs[0].0.addr.clone(),
        reason: "checksum mismatch".into(),
    })
    .await
    .unwrap();
    assert_eq!(deletes(&heartbeat(&mut c, cs[0].1).await.commands), vec![1]);
    let fsck = c
        .fsck(FsckRequest {
            path: "/".into(),
            list_chunks: false,
            list_files: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((fsck.missing, fsck.corrupt, fsck.healthy), (1, 1, false));
    m.stop().await;

    // Adoption survived the restart (it was logged).
    let m = TestMaster::start(patient(tmp.path())).await;
    let mut c = m.client().await;
    let chunks = c
        .get_chunks(GetChunksRequest {
            inode: f.inode,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chunks.chunks[0].version, 5);
    m.stop().await;
}

#[tokio::test]
async fn an_empty_chunk_whose_replicas_all_died_starts_afresh_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(tmp.path())).await;
    let mut c = m.client().await;
    let old = fakes(&mut c, 2).await;
    let f = create(&mut c, "/f").await.unwrap();
    let g1 = prepare(&mut c, f.inode, 0, vec![]).await.unwrap();
    assert_eq!(g1.version, 1);
    // Nobody heartbeats: both servers are declared dead after the 600 ms timeout.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let fresh = fakes(&mut c, 2).await;
    let g2 = prepare(&mut c, f.inode, 0, vec![]).await.unwrap();
    assert_eq!((g2.chunk_id, g2.version), (1, 2));
    let mut chain = g2.chain.clone();
    chain.sort();
    let mut want: Vec<String> = fresh.iter().map(|(f, _)| f.addr.clone()).collect();
    want.sort();
    assert_eq!(chain, want);
    // Once data is committed into it, losing every replica is an error, not a reset.
    c.commit_write(CommitWriteRequest {
        inode: f.inode,
        end_offset: 10,
        ..Default::default()
    })
    .await
    .unwrap();
    drop(old);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let _others = fakes(&mut c, 2).await;
    let r = prepare(&mut c, f.inode, 0, vec![g2.chain[0].clone()]).await;
    assert_eq!(code(r), ErrorCode::Unavailable);
    m.stop().await;
}
