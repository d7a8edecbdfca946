use std::time::{Duration, Instant};

use rdfs_proto::dataplane::{DataConn, Msg};
use rdfs_proto::ErrorCode;
use rdfs_tests::Cluster;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_paths_get_clear_error_codes() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let c = cluster.client().await;
    assert_eq!(
        c.stat("/missing").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let long = format!("/{}", "n".repeat(256));
    assert_eq!(
        c.mkdir(&long, 0o755, false).await.unwrap_err().code(),
        ErrorCode::NameTooLong
    );
    let ok = format!("/{}", "n".repeat(255));
    c.mkdir(&ok, 0o755, false).await.unwrap();
    c.create("/file", 0o644, false).await.unwrap();
    assert_eq!(
        c.create("/file/child", 0o644, false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        c.list("/file/x").await.unwrap_err().code(),
        ErrorCode::NotADirectory
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_master_fails_fast_and_clearly() {
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let started = Instant::now();
    let res = rdfs_client::Client::connect(rdfs_client::ClientConfig {
        masters: vec![addr],
        timeout: Duration::from_secs(2),
        uid: 0,
        gid: 0,
    })
    .await;
    let err = match res {
        Ok(c) => c.stat("/").await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(err.code(), ErrorCode::Unavailable | ErrorCode::Timeout),
        "got {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_frame_gets_an_error_and_the_chunkserver_keeps_serving() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let addr = cluster.chunkserver_addr(0);
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxx")
        .await
        .unwrap();
    let mut conn = DataConn::from_stream(raw, addr.clone());
    match conn.recv().await {
        Ok(f) => assert!(
            matches!(
                f.msg,
                Msg::Error {
                    code: ErrorCode::Malformed,
                    ..
                }
            ),
            "{:?}",
            f.msg
        ),
        Err(e) => assert!(
            !e.is_malformed(),
            "closed is fine, garbage back is not: {e}"
        ),
    }
    // A fresh connection is served.
    let mut conn = DataConn::connect(&addr).await.unwrap();
    let reply = conn.call(&Msg::Ping).await.unwrap();
    assert!(matches!(reply.msg, Msg::Pong { .. }), "{:?}", reply.msg);
    cluster.shutdown().await;
}
