use super::*;

#[tokio::test]
async fn namespace_rpcs_and_error_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = TestMaster::start(config(tmp.path())).await;
    let mut c = m.client().await;
    mkdir(&mut c, "/a/b", true).await.unwrap();
    let f = create(&mut c, "/a/b/f").await.unwrap();
    assert_eq!(f.file_type, FileType::File as i32);
    assert_eq!(f.replication, 3);
    assert_eq!(f.size, 0);

    let long = format!("/a/{}", "x".repeat(256));
    assert_eq!(code(create(&mut c, &long).await), ErrorCode::NameTooLong);
    assert_eq!(code(create(&mut c, "/nope/f").await), ErrorCode::NotFound);
    assert_eq!(
        code(create(&mut c, "/a/b/f/g").await),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        code(create(&mut c, "/a/b/f").await),
        ErrorCode::AlreadyExists
    );
    let st = c
        .stat(StatRequest {
            path: "/missing".into(),
            caller: None,
        })
        .await;
    assert_eq!(code(st), ErrorCode::NotFound);

    let rm = c
        .delete(DeleteRequest {
            path: "/a".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(rm), ErrorCode::DirectoryNotEmpty);
    let mv = c
        .rename(RenameRequest {
            src: "/a".into(),
            dst: "/a/b/c".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(mv), ErrorCode::InvalidArgument);
    c.rename(RenameRequest {
        src: "/a/b/f".into(),
        dst: "/g".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(exists(&mut c, "/g").await);
    assert!(!exists(&mut c, "/a/b/f").await);

    for n in ["z", "y", "x"] {
        create(&mut c, &format!("/a/{n}")).await.unwrap();
    }
    let page = c
        .list(ListRequest {
            path: "/a".into(),
            start_after: "b".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = page.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["x", "y"]);
    assert!(page.more);

    c.delete(DeleteRequest {
        path: "/a".into(),
        recursive: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!exists(&mut c, "/a").await);
    let status = c
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.files, status.dirs), (1, 1));
    assert!(!status.safe_mode);
    assert_eq!(status.chunk_size, TEST_CHUNK_SIZE);
    m.stop().await;
}
