use rdfs_proto::ErrorCode;
use rdfs_tests::{sha256_hex, test_bytes, Cluster, TEST_CHUNK_SIZE};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_read_across_chunk_boundaries_round_trips_exact_bytes() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let client = cluster.client().await;
    client.mkdir("/data/sub", 0o755, true).await.unwrap();
    // 3.5 chunks: crosses three boundaries and ends mid-block.
    let len = (TEST_CHUNK_SIZE * 3 + TEST_CHUNK_SIZE / 2 + 123) as usize;
    let data = test_bytes(len, 1);
    let attr = client
        .create("/data/sub/f.bin", 0o644, false)
        .await
        .unwrap();
    client.write_at(attr.inode, 0, &data, true).await.unwrap();

    let st = client.stat("/data/sub/f.bin").await.unwrap();
    assert_eq!(st.size, len as u64);
    let back = client.read_at(attr.inode, 0, len as u64).await.unwrap();
    assert_eq!(back.len(), len);
    assert_eq!(sha256_hex(&back), sha256_hex(&data));

    // A read straddling a boundary, and a read past EOF clipped to the size.
    let off = TEST_CHUNK_SIZE - 10;
    let part = client.read_at(attr.inode, off, 20).await.unwrap();
    assert_eq!(&part[..], &data[off as usize..off as usize + 20]);
    let tail = client
        .read_at(attr.inode, len as u64 - 5, 100)
        .await
        .unwrap();
    assert_eq!(&tail[..], &data[len - 5..]);

    // Overwrite in the middle of a block (verifies the old CRC, recomputes the new one).
    let patch = test_bytes(1000, 2);
    client
        .write_at(attr.inode, 70_000, &patch, true)
        .await
        .unwrap();
    let mut expect = data.clone();
    expect[70_000..71_000].copy_from_slice(&patch);
    let back = client.read_at(attr.inode, 0, len as u64).await.unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&expect));
    assert_eq!(
        client.stat("/data/sub/f.bin").await.unwrap().size,
        len as u64
    );

    let names: Vec<String> = client
        .list("/data/sub")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["f.bin".to_string()]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holes_read_as_zeros_and_size_only_grows() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let client = cluster.client().await;
    let attr = client.create("/sparse", 0o644, false).await.unwrap();
    let far = TEST_CHUNK_SIZE * 5 + 7;
    client
        .write_at(attr.inode, far, b"tail", true)
        .await
        .unwrap();
    assert_eq!(client.stat("/sparse").await.unwrap().size, far + 4);
    let back = client.read_at(attr.inode, 0, far + 4).await.unwrap();
    assert!(back[..far as usize].iter().all(|&b| b == 0));
    assert_eq!(&back[far as usize..], b"tail");
    // Only the written chunk exists: a hole takes no chunk.
    let locs = client.chunk_locations("/sparse").await.unwrap();
    assert_eq!(locs.chunks.len(), 1);
    assert_eq!(locs.chunks[0].index, 5);
    // An earlier write does not shrink the size.
    client.write_at(attr.inode, 0, b"head", true).await.unwrap();
    assert_eq!(client.stat("/sparse").await.unwrap().size, far + 4);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_operations_and_their_errors() {
    let cluster = Cluster::builder().chunkservers(3).start().await;
    let c = cluster.client().await;
    c.mkdir("/a", 0o755, false).await.unwrap();
    let f = c.create("/a/x", 0o600, false).await.unwrap();
    c.write_at(f.inode, 0, b"hello", true).await.unwrap();
    let err = c.create("/a/x", 0o600, false).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    c.rename("/a/x", "/a/y").await.unwrap();
    assert_eq!(
        c.stat("/a/x").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(c.stat("/a/y").await.unwrap().size, 5);
    assert_eq!(
        c.delete("/a", false).await.unwrap_err().code(),
        ErrorCode::DirectoryNotEmpty
    );
    assert_eq!(
        c.mkdir("/a/y/z", 0o755, false).await.unwrap_err().code(),
        ErrorCode::NotADirectory
    );
    c.delete("/a", true).await.unwrap();
    assert_eq!(c.stat("/a").await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(c.list("/").await.unwrap().len(), 0);
    cluster.shutdown().await;
}
