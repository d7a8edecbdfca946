//! Item 1: a workload of creates, writes, renames, deletes and mkdirs runs through one
//! client while the primary is killed with kill -9 three times at random moments (the
//! killed master is restarted and rejoins as the standby before the next kill). Every
//! operation the client saw acknowledged is in a log; afterwards the tree must equal the
//! model built from that log exactly (nothing lost, nothing applied twice), and no
//! operation may have failed (every one is safely retryable).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdfs_client::Client;

use crate::common::ha::*;
use crate::common::*;

/// Primary kills per run.
const KILLS: usize = 3;
/// Fixed seed: the workload and the kill moments are reproducible.
const SEED: u64 = 0x5eed_0005;
/// Largest write (appends cross chunk boundaries with 1 MiB chunks).
const MAX_WRITE: usize = 400_000;
/// Operations at least (more while the kills go on).
const MIN_OPS: u64 = 150;

/// What the client saw acknowledged, in order.
#[derive(Debug, Clone)]
enum Acked {
    Mkdir(String),
    Create(String),
    Write {
        path: String,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Rename(String, String),
    Delete(String),
}

/// The expected tree: directories and file contents.
#[derive(Default)]
struct Model {
    dirs: BTreeSet<String>,
    files: BTreeMap<String, Vec<u8>>,
    inodes: BTreeMap<String, u64>,
}

impl Model {
    fn write(&mut self, path: &str, offset: u64, data: &[u8]) {
        let f = self.files.get_mut(path).unwrap();
        let end = offset as usize + data.len();
        if f.len() < end {
            f.resize(end, 0);
        }
        f[offset as usize..end].copy_from_slice(data);
    }
}

/// The tree the acknowledgement log says must exist (built from the log alone).
fn replay(log: &[Acked]) -> Model {
    let mut m = Model::default();
    for a in log {
        match a {
            Acked::Mkdir(p) => {
                m.dirs.insert(p.clone());
            }
            Acked::Create(p) => {
                m.files.insert(p.clone(), Vec::new());
            }
            Acked::Write {
                path,
                offset,
                len,
                seed,
            } => m.write(path, *offset, &test_bytes(*len, *seed)),
            Acked::Rename(src, dst) => {
                let data = m.files.remove(src).unwrap();
                m.files.insert(dst.clone(), data);
            }
            Acked::Delete(p) => {
                m.files.remove(p);
            }
        }
    }
    m
}

/// Runs operations until `stop` (and at least `MIN_OPS`); logs each acknowledged one.
/// Returns the errors seen (the workload stops at the first one).
async fn workload(
    client: Client,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Acked>>>,
) -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut m = Model::default();
    let mut errors = Vec::new();
    let mut n = 0u64;
    client.mkdir("/w", 0o755, false).await.unwrap();
    log.lock().unwrap().push(Acked::Mkdir("/w".into()));
    // Keep going until told to stop, and do at least a few hundred operations.
    while !stop.load(Ordering::SeqCst) || n < MIN_OPS {
        n += 1;
        let live: Vec<String> = m.files.keys().cloned().collect();
        let pick = |rng: &mut rand::rngs::StdRng| live[rng.random_range(0..live.len())].clone();
        let dice = if live.is_empty() {
            0
        } else {
            rng.random_range(0..100)
        };
        let (op, result) = match dice {
            0..=29 => {
                let path = format!("/w/f{n}");
                let r = client.create(&path, 0o644, false).await;
                match r {
                    Ok(attr) => {
                        m.files.insert(path.clone(), Vec::new());
                        m.inodes.insert(path.clone(), attr.inode);
                        (Acked::Create(path), Ok(()))
                    }
                    Err(e) => (Acked::Create(path), Err(e)),
                }
            }
            30..=59 => {
                let path = pick(&mut rng);
                let size = m.files[&path].len() as u64;
                // Append, or overwrite somewhere inside.
                let offset = if rng.random_bool(0.5) || size == 0 {
                    size
                } else {
                    rng.random_range(0..size)
                };
                let len = rng.random_range(1..MAX_WRITE);
                let seed = rng.random::<u64>();
                let data = test_bytes(len, seed);
                let r = client
                    .write_at(m.inodes[&path], offset, &data, true)
                    .await
                    .map(|_| ());
                if r.is_ok() {
                    m.write(&path, offset, &data);
                }
                (
                    Acked::Write {
                        path,
                        offset,
                        len,
                        seed,
                    },
                    r,
                )
            }
            60..=74 => {
                let src = pick(&mut rng);
                let dst = format!("/w/r{n}");
                let r = client.rename(&src, &dst).await;
                if r.is_ok() {
                    let data = m.files.remove(&src).unwrap();
                    let ino = m.inodes.remove(&src).unwrap();
                    m.files.insert(dst.clone(), data);
                    m.inodes.insert(dst.clone(), ino);
                }
                (Acked::Rename(src, dst), r)
            }
            75..=89 => {
                let path = pick(&mut rng);
                let r = client.delete(&path, false).await;
                if r.is_ok() {
                    m.files.remove(&path);
                    m.inodes.remove(&path);
                }
                (Acked::Delete(path), r)
            }
            _ => {
                let path = format!("/w/d{n}");
                let r = client.mkdir(&path, 0o755, false).await.map(|_| ());
                if r.is_ok() {
                    m.dirs.insert(path.clone());
                }
                (Acked::Mkdir(path), r)
            }
        };
        match result {
            Ok(()) => log.lock().unwrap().push(op),
            Err(e) => {
                // Not acknowledged: the model cannot know whether it happened. The test
                // fails on any such error anyway.
                errors.push(format!("{op:?}: {e}"));
                break;
            }
        }
    }
    errors
}

/// The tree under /w as the cluster has it: directories, and each file's bytes.
async fn actual(client: &Client) -> (BTreeSet<String>, BTreeMap<String, Vec<u8>>) {
    let mut dirs = BTreeSet::from(["/w".to_string()]);
    let mut files = BTreeMap::new();
    for e in client.list("/w").await.unwrap() {
        let path = format!("/w/{}", e.name);
        let attr = e.attr.unwrap();
        if attr.file_type == rdfs_client::FileType::Dir as i32 {
            dirs.insert(path);
        } else {
            let bytes = client.read_at(attr.inode, 0, attr.size).await.unwrap();
            assert_eq!(bytes.len() as u64, attr.size, "{path}: short read");
            files.insert(path, bytes.to_vec());
        }
    }
    (dirs, files)
}

#[test]
fn kill_9_of_the_primary_during_a_workload_loses_nothing_and_repeats_nothing() {
    let mut c = HaCluster::start(3);
    let client = c.client();
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let work = {
        let (client, stop, log) = (client.clone(), stop.clone(), log.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(workload(client, stop, log))
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED ^ 1);
    let mut takeovers = Vec::new();
    for kill in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let primary = c.wait_in_sync(Duration::from_secs(60));
        let before = log.lock().unwrap().len();
        let epoch = c.state(primary).unwrap().epoch;
        c.kill9(primary);
        let took = c.wait_primary_is(1 - primary, TAKEOVER_LIMIT);
        let now = c.state(1 - primary).unwrap();
        assert_eq!(
            now.epoch,
            epoch + 1,
            "every takeover raises the epoch by one"
        );
        eprintln!("kill {kill}: master {primary} killed after {before} acknowledged ops; master {} took over in {took:?}", 1 - primary);
        takeovers.push(took);
        c.restart(primary);
    }
    c.wait_in_sync(Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let errors = work.join().unwrap();
    assert!(
        errors.is_empty(),
        "operations failed through a failover: {errors:?}"
    );
    let acked = log.lock().unwrap().clone();
    let model = replay(&acked);
    eprintln!(
        "{} operations acknowledged; takeovers: {:?}",
        acked.len(),
        takeovers
    );
    assert!(acked.len() as u64 >= MIN_OPS);
    for t in &takeovers {
        assert!(*t < TAKEOVER_LIMIT, "takeover took {t:?}");
    }
    // The tree equals the model built from the acknowledgement log: every acknowledged
    // operation is present, and none was applied twice (a second create, rename or delete
    // would have failed or left a different tree).
    let (dirs, files) = c.rt.block_on(actual(&client));
    assert_eq!(dirs, model.dirs);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        model.files.keys().collect::<Vec<_>>()
    );
    for (path, want) in &model.files {
        assert_eq!(
            sha256(&files[path]),
            sha256(want),
            "{path}: content differs"
        );
    }
    let writes = acked
        .iter()
        .filter(|a| matches!(a, Acked::Write { .. }))
        .count();
    let renames = acked
        .iter()
        .filter(|a| matches!(a, Acked::Rename(..)))
        .count();
    let deletes = acked
        .iter()
        .filter(|a| matches!(a, Acked::Delete(_)))
        .count();
    assert!(
        writes > 0 && renames > 0 && deletes > 0,
        "{writes} {renames} {deletes}"
    );
    let final_epoch = c.state(c.primary().unwrap()).unwrap().epoch;
    assert_eq!(final_epoch, 1 + KILLS as u64);
}
