//! The high-availability harness: two real `dfs master` processes (master 0 starts as the
//! primary, master 1 as its hot standby) and real chunkservers that report to both, with
//! short failover timings; a TCP proxy the test can cut; and probes that record which
//! master acknowledged what, and when.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rdfs_client::{Client, ClientConfig};

use super::Proc;

/// Failover timeout of both masters (also the witness lease): short, for CI.
pub const FAILOVER_TIMEOUT: &str = "1s";
/// What a takeover may take on a loaded CI machine (the target is 10 s).
pub const TAKEOVER_LIMIT: Duration = Duration::from_secs(30);
/// Deadline of the clients the tests run workloads with: long enough to ride out any
/// takeover, so a failover never surfaces as an error.
pub const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What a master says about itself (`ClusterStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterState {
    pub role: String,
    pub epoch: u64,
    pub last_op_seq: u64,
    pub lease_valid: bool,
    /// The attached standby's state, as the primary sees it ("none" when none).
    pub standby_state: String,
    pub standby_acked: u64,
}

pub struct HaCluster {
    pub dir: tempfile::TempDir,
    /// `None` while killed.
    pub masters: [Option<Proc>; 2],
    /// Each master keeps its address across restarts.
    pub addrs: [String; 2],
    pub chunkservers: Vec<Proc>,
    /// Master incarnations started so far (log file names).
    starts: [u32; 2],
    pub rt: tokio::runtime::Runtime,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl HaCluster {
    /// Master 0 primary, master 1 its standby, `chunkservers` chunkservers; waits until the
    /// standby is in sync.
    pub fn start(chunkservers: usize) -> HaCluster {
        Self::start_via(chunkservers, |primary| primary.to_string())
    }

    /// Like [`HaCluster::start`], with the standby following the primary through a
    /// [`Proxy`] the test controls.
    pub fn start_with_proxy(chunkservers: usize) -> (HaCluster, Proxy) {
        let mut proxy = None;
        let c = Self::start_via(chunkservers, |primary| {
            let p = Proxy::start(primary.to_string());
            let addr = p.addr.clone();
            proxy = Some(p);
            addr
        });
        (c, proxy.expect("the route was asked for"))
    }

    /// Like [`HaCluster::start`], with the standby reaching the primary at the address
    /// `route` returns for the primary's (a proxy in front of it).
    pub fn start_via(chunkservers: usize, route: impl FnOnce(&str) -> String) -> HaCluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut c = HaCluster {
            dir: tempfile::tempdir().unwrap(),
            masters: [None, None],
            addrs: [String::new(), String::new()],
            chunkservers: Vec::new(),
            starts: [0, 0],
            rt,
        };
        c.spawn_master(0, "127.0.0.1:0", None);
        let via = route(&c.addrs[0]);
        c.spawn_master(1, "127.0.0.1:0", Some(&via));
        for i in 0..chunkservers {
            let args = strings(&[
                "--master",
                &c.master_list(),
                "chunkserver",
                "--data",
                c.dir.path().join(format!("cs{i}")).to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--block-report-interval",
                "2s",
            ]);
            let log = c.dir.path().join(format!("cs{i}.log"));
            c.chunkservers
                .push(Proc::spawn(&format!("cs{i}"), &args, &log));
        }
        c.wait_in_sync(Duration::from_secs(60));
        c
    }

    fn spawn_master(&mut self, i: usize, listen: &str, standby_of: Option<&str>) {
        self.starts[i] += 1;
        let mut args = super::master_args(&self.dir.path().join(format!("m{i}")), listen);
        args.extend(strings(&["--failover-timeout", FAILOVER_TIMEOUT]));
        if let Some(p) = standby_of {
            args.extend(strings(&["--standby-of", p]));
        }
        let log = self.dir.path().join(format!("m{i}.{}.log", self.starts[i]));
        let p = Proc::spawn(&format!("m{i}"), &args, &log);
        self.addrs[i] = p.addr.clone();
        self.masters[i] = Some(p);
    }

    /// `a,b`: what clients and chunkservers are given.
    pub fn master_list(&self) -> String {
        self.addrs
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.masters[i].take() {
            p.kill9();
        }
    }

    pub fn signal(&self, i: usize, sig: Signal) {
        if let Some(p) = &self.masters[i] {
            p.signal(sig);
        }
    }

    /// Kills master `i` and waits until its address is free again; returns the address.
    fn stop_for_restart(&mut self, i: usize) -> String {
        self.kill9(i);
        let addr = self.addrs[i].clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(&addr).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        addr
    }

    /// Starts master `i` again on its address, without `--standby-of`: it finds out from
    /// the witnesses whether it is still the primary.
    pub fn restart(&mut self, i: usize) {
        let addr = self.stop_for_restart(i);
        self.spawn_master(i, &addr, None);
    }

    /// Starts master `i` again on its address as a standby of master `j` (what `dfs cluster
    /// up` does with its two data directories whichever of them was primary last).
    pub fn restart_as_standby_of(&mut self, i: usize, j: usize) {
        let addr = self.stop_for_restart(i);
        let primary = self.addrs[j].clone();
        self.spawn_master(i, &addr, Some(&primary));
    }

    /// Master `i`'s own account of itself (`None`: it does not answer).
    pub fn state(&self, i: usize) -> Option<MasterState> {
        let mut cfg = ClientConfig::new(vec![self.addrs[i].clone()]);
        cfg.timeout = Duration::from_secs(1);
        let s = self
            .rt
            .block_on(async move { Client::connect(cfg).await?.cluster_status().await })
            .ok()?;
        let standby = s.standby.unwrap_or_default();
        Some(MasterState {
            role: s.role,
            epoch: s.epoch,
            last_op_seq: s.last_op_seq,
            lease_valid: s.lease_valid,
            standby_state: standby.state,
            standby_acked: standby.acked_seq,
        })
    }

    /// The master that is primary and holds its lease, if any.
    pub fn primary(&self) -> Option<usize> {
        (0..2).find(|i| {
            self.masters[*i].is_some()
                && self
                    .state(*i)
                    .is_some_and(|s| s.role == "primary" && s.lease_valid)
        })
    }

    /// Waits until master `i` is the primary; returns how long that took.
    pub fn wait_primary_is(&self, i: usize, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self
                .state(i)
                .is_some_and(|s| s.role == "primary" && s.lease_valid)
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "master {i} did not become primary within {limit:?}\n{}",
                self.dump_logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a primary reports its standby in sync, both at the same seq.
    pub fn wait_in_sync(&self, limit: Duration) -> usize {
        let started = Instant::now();
        loop {
            if let Some(p) = self.primary() {
                let (a, b) = (self.state(p), self.state(1 - p));
                if let (Some(a), Some(b)) = (a, b) {
                    if a.standby_state == "in_sync"
                        && b.role == "standby"
                        && a.last_op_seq == b.last_op_seq
                        && a.epoch == b.epoch
                    {
                        return p;
                    }
                }
            }
            assert!(
                started.elapsed() < limit,
                "no primary with an in-sync standby within {limit:?}\n{}",
                self.dump_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client of both masters with the workload deadline.
    pub fn client(&self) -> Client {
        let mut cfg = ClientConfig::new(vec![self.addrs[0].clone(), self.addrs[1].clone()]);
        cfg.timeout = WORKLOAD_TIMEOUT;
        self.rt.block_on(Client::connect(cfg)).unwrap()
    }

    /// Every log of this cluster (all incarnations), the tail of each.
    pub fn dump_logs(&self) -> String {
        let mut out = String::new();
        let mut logs: Vec<_> = super::walk(self.dir.path())
            .into_iter()
            .filter(|p| {
                p.extension().is_some_and(|e| e == "log") && p.parent() == Some(self.dir.path())
            })
            .collect();
        logs.sort();
        for p in logs {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out.push_str(&format!("==== {}\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Everything master `i` logged, over all its incarnations.
    pub fn master_log(&self, i: usize) -> String {
        (1..=self.starts[i])
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("m{i}.{n}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A TCP forwarder the test can cut: while blocked, every connection through it is shut
/// down and new ones are closed at once (a partition between the two ends); while
/// stalled, bytes are held back without closing anything (a link that goes silent).
pub struct Proxy {
    pub addr: String,
    blocked: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let blocked = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (b, st, o) = (blocked.clone(), stalled.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if b.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut open = o.lock().unwrap();
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        open.push(c);
                    }
                }
                drop(open);
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    st.clone(),
                );
                pipe(server, client, st.clone());
            }
        });
        Proxy {
            addr,
            blocked,
            stalled,
            open,
        }
    }

    /// Cuts every connection (bytes held back are lost) and refuses new ones.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Holds every byte back from now on, closing nothing.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.blocked.store(false, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` into `to` on a thread until either end closes; while `stalled`, holds what
/// it read (dropped if the connection is cut meanwhile).
fn pipe(mut from: TcpStream, mut to: TcpStream, stalled: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    while stalled.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// One mutation a probe sent to one master and what came back.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub master: usize,
    pub path: String,
    pub sent: Instant,
    pub answered: Instant,
    pub acked: bool,
    /// The epoch of the master that answered (highest seen by the probe's client).
    pub epoch: u64,
}

/// Sends a mutation (`mkdir /probe/m<i>-<n>`) to master `i` alone, over and over, until
/// `stop`; each attempt may take at most `attempt`.
pub fn probe(
    addr: String,
    master: usize,
    stop: Arc<AtomicBool>,
    attempt: Duration,
) -> std::thread::JoinHandle<Vec<ProbeResult>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let path = format!("/probe/m{master}-{n}");
            let mut cfg = ClientConfig::new(vec![addr.clone()]);
            cfg.timeout = attempt;
            let sent = Instant::now();
            let (acked, epoch) = rt.block_on(async {
                let Ok(c) = Client::connect(cfg).await else {
                    return (false, 0);
                };
                let ok = c.mkdir(&path, 0o755, false).await.is_ok();
                (ok, c.master_epoch())
            });
            out.push(ProbeResult {
                master,
                path,
                sent,
                answered: Instant::now(),
                acked,
                epoch,
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        out
    })
}

/// Checks that at no moment did two masters acknowledge: every acknowledgement of an epoch
/// was sent before any acknowledgement of a later epoch was received, and each epoch's
/// acknowledgements all came from one master.
pub fn assert_no_overlap(results: &[ProbeResult]) {
    let acked: Vec<&ProbeResult> = results.iter().filter(|r| r.acked).collect();
    for a in &acked {
        for b in &acked {
            if a.epoch == b.epoch {
                assert_eq!(
                    a.master, b.master,
                    "two masters acknowledged in epoch {}: {a:?} and {b:?}",
                    a.epoch
                );
            }
            if a.epoch < b.epoch {
                assert!(
                    a.sent < b.answered,
                    "epoch {} acknowledged {} (sent {:?} after) epoch {} had acknowledged {}",
                    a.epoch,
                    a.path,
                    a.sent.duration_since(b.answered),
                    b.epoch,
                    b.path
                );
            }
        }
    }
}
