//! Inode-based RPCs through gRPC: retried mutations answered from the retry cache, open
//! handles keeping an orphan across a restart, and every new op replayed from the log.

use super::*;

fn rid(call: u64) -> Option<RequestId> {
    Some(RequestId {
        client_id: vec![3; 16],
        call_id: call,
    })
}

async fn create_file(c: &mut MasterClient<Channel>, name: &str, call: u64) -> FileAttr {
    c.create_at(CreateAtRequest {
        parent: 1,
        name: name.into(),
        file_type: FileType::File as i32,
        mode: 0o644,
        exclusive: true,
        request_id: rid(call),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .attr
    .unwrap()
}

#[tokio::test]
async fn a_retried_unlink_gets_the_first_answer_and_orphans_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(tmp.path())).await;
    let mut c = m.client().await;
    let f = create_file(&mut c, "f", 1).await;
    assert_eq!(f.inode, 2);
    // Same request id: the cached answer (the same inode), not AlreadyExists.
    assert_eq!(create_file(&mut c, "f", 1).await.inode, 2);
    let unlink = UnlinkAtRequest {
        parent: 1,
        name: "f".into(),
        request_id: rid(2),
        ..Default::default()
    };
    c.unlink_at(unlink.clone()).await.unwrap();
    c.unlink_at(unlink.clone()).await.unwrap();
    let fresh = UnlinkAtRequest {
        request_id: rid(3),
        ..unlink
    };
    assert_eq!(code(c.unlink_at(fresh).await), ErrorCode::NotFound);

    // An open handle keeps an unlinked inode; the ops replay after a restart.
    let g = create_file(&mut c, "g", 4).await;
    let h = c
        .open_file(OpenFileRequest {
            inode: g.inode,
            session: vec![9; 16],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.session_ttl_ms, 15_000);
    c.unlink_at(UnlinkAtRequest {
        parent: 1,
        name: "g".into(),
        request_id: rid(5),
        ..Default::default()
    })
    .await
    .unwrap();
    c.set_xattr(SetXattrRequest {
        inode: 1,
        name: "user.root".into(),
        value: b"r".to_vec(),
        request_id: rid(6),
        ..Default::default()
    })
    .await
    .unwrap();
    m.stop().await;

    let m = TestMaster::start(config(tmp.path())).await;
    let mut c = m.client().await;
    let attr = c
        .get_attr(GetAttrRequest {
            inode: g.inode,
            caller: None,
        })
        .await
        .unwrap()
        .into_inner()
        .attr
        .unwrap();
    assert_eq!((attr.inode, attr.nlink), (g.inode, 0));
    let v = c
        .get_xattr(GetXattrRequest {
            inode: 1,
            name: "user.root".into(),
            caller: None,
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    assert_eq!(v, b"r");
    // The client re-registers its handle with a renewal, then closes it: the orphan goes.
    let renewed = c
        .renew_session(RenewSessionRequest {
            session: vec![9; 16],
            handles: vec![OpenHandle {
                handle: h.handle,
                inode: g.inode,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !renewed.known,
        "a restarted master did not know the session"
    );
    c.close_file(CloseFileRequest {
        handle: h.handle,
        session: vec![9; 16],
        request_id: rid(7),
    })
    .await
    .unwrap();
    let gone = c
        .get_attr(GetAttrRequest {
            inode: g.inode,
            caller: None,
        })
        .await;
    assert_eq!(code(gone), ErrorCode::NotFound);
    let fs = c
        .stat_fs(StatFsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((fs.files, fs.chunk_size), (1, TEST_CHUNK_SIZE));
    m.stop().await;
}

#[tokio::test]
async fn create_and_open_in_one_call_holds_the_inode_and_a_retry_reuses_the_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(tmp.path())).await;
    let mut c = m.client().await;
    let req = CreateAtRequest {
        parent: 1,
        name: "held".into(),
        file_type: FileType::File as i32,
        mode: 0o644,
        exclusive: true,
        request_id: rid(1),
        open_session: vec![5; 16],
        ..Default::default()
    };
    let first = c.create_at(req.clone()).await.unwrap().into_inner();
    let inode = first.attr.unwrap().inode;
    assert_ne!(first.handle, 0);
    assert_eq!(first.session_ttl_ms, 15_000);
    // The same request again (a retry): the same inode and the same handle, not a second one.
    let again = c.create_at(req).await.unwrap().into_inner();
    assert_eq!(
        (again.attr.unwrap().inode, again.handle),
        (inode, first.handle)
    );
    // A directory is never opened; no session means no handle.
    let dir = c
        .create_at(CreateAtRequest {
            parent: 1,
            name: "d".into(),
            file_type: FileType::Dir as i32,
            mode: 0o755,
            exclusive: true,
            request_id: rid(2),
            open_session: vec![5; 16],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dir.handle, 0);
    // The handle keeps the unlinked inode until it is closed, then the inode goes.
    c.unlink_at(UnlinkAtRequest {
        parent: 1,
        name: "held".into(),
        request_id: rid(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let attr = c
        .get_attr(GetAttrRequest {
            inode,
            caller: None,
        })
        .await
        .unwrap()
        .into_inner()
        .attr
        .unwrap();
    assert_eq!(attr.nlink, 0);
    c.close_file(CloseFileRequest {
        handle: first.handle,
        session: vec![5; 16],
        request_id: rid(4),
    })
    .await
    .unwrap();
    let gone = c
        .get_attr(GetAttrRequest {
            inode,
            caller: None,
        })
        .await;
    assert_eq!(code(gone), ErrorCode::NotFound);
    m.stop().await;
}
