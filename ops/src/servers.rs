//! Server subcommands: `dfs master`, `dfs chunkserver`, `dfs cluster up`.
//!
//! Each builds its own tokio runtime, binds its listener before the server starts (so a
//! busy port is a clear error, and `--listen 127.0.0.1:0` works: the bound address is
//! printed as the first stdout line, which tests and scripts read), and stops cleanly on
//! SIGTERM/SIGINT through a cancellation token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio_util::sync::CancellationToken;

/// Default control-plane address of `dfs master` and of `dfs cluster up`.
pub const DEFAULT_MASTER_ADDR: &str = "127.0.0.1:9000";
/// `dfs cluster up` serves the dashboard on the master's port + this (9080 by default).
const CLUSTER_HTTP_PORT_OFFSET: u16 = 80;
/// `dfs cluster up` puts chunkserver N on the master's port + this + N (port 0: any port).
const CLUSTER_CHUNKSERVER_PORT_OFFSET: u16 = 100;
/// Where `dfs cluster up` keeps state when `--data` is not given (relative to the cwd).
const CLUSTER_DEFAULT_DATA_DIR: &str = ".dfs-local";
/// How long `dfs cluster up` waits for each child to print its listen line.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Stdout lines of a child kept for `cluster up` to read (the listen and dashboard lines).
const CHILD_STDOUT_LINES_KEPT: usize = 4;
/// How long children get to exit after SIGTERM before they are killed.
const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct MasterArgs {
    /// Data directory (initialised when empty; a foreign one is refused).
    #[arg(long)]
    pub data: PathBuf,
    /// Control-plane (gRPC) listen address; port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_MASTER_ADDR)]
    pub listen: String,
    /// Serve the web dashboard, its JSON API and Prometheus `/metrics` here (e.g.
    /// 127.0.0.1:9080); the bound address is the second stdout line.
    #[arg(long)]
    pub http: Option<String>,
    /// Chunk size in bytes, fixed when the data directory is initialised.
    #[arg(long)]
    pub chunk_size: Option<u64>,
    /// Replication factor for new files.
    #[arg(long)]
    pub replication: Option<u32>,
    /// A chunkserver silent this long is declared dead (e.g. `10s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Option<Duration>,
    /// Interval between chunkserver heartbeats.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Interval between full block reports.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub block_report_interval: Option<Duration>,
    /// Primary lease length.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
    /// Interval between checkpoints.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Option<Duration>,
    /// How long `dfs rm` keeps entries in the trash before they are purged (`0s`: no trash).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub trash_grace: Option<Duration>,
    /// Concurrent replica copies one chunkserver may send (repair, decommission and
    /// balancer throttle; default 4).
    #[arg(long)]
    pub max_transfers_per_source: Option<u32>,
    /// Run as a hot standby of the primary at HOST:PORT (its data directory is initialised
    /// from the primary's checkpoint and log).
    #[arg(long, value_name = "HOST:PORT")]
    pub standby_of: Option<String>,
    /// Time without a healthy primary before the standby takes over; also the witness
    /// lease the primary holds from the chunkservers (default 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub failover_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ChunkserverArgs {
    /// Data directory (initialised when empty).
    #[arg(long)]
    pub data: PathBuf,
    /// Data-plane listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: String,
    /// Bytes this chunkserver offers (default: the file system's free space).
    #[arg(long)]
    pub capacity: Option<u64>,
    /// Interval between full block reports.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub block_report_interval: Option<Duration>,
    /// Bound on the background scrubber's reads in bytes per second (0 turns it off).
    #[arg(long, default_value_t = rdfs_chunkserver::scrub::DEFAULT_SCRUB_RATE_BYTES_PER_SEC)]
    pub scrub_rate: u64,
}

#[derive(Debug, Args)]
pub struct ClusterUpArgs {
    /// Where the cluster keeps its state (default: `.dfs-local` in the current directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Number of chunkservers.
    #[arg(long, default_value_t = 3)]
    pub chunkservers: u32,
    /// Master listen address.
    #[arg(long, default_value = DEFAULT_MASTER_ADDR)]
    pub listen: String,
    /// Chunk size in bytes for a new cluster.
    #[arg(long)]
    pub chunk_size: Option<u64>,
    /// Also mount the cluster here with FUSE (`dfs mount`), unmounted on stop.
    #[arg(long)]
    pub mount: Option<PathBuf>,
    /// Run without the hot standby master (by default one listens on the master's port + 1).
    #[arg(long)]
    pub no_standby: bool,
    /// Failover timeout of both masters.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub failover_timeout: Option<Duration>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")
}

/// A token cancelled on the first SIGTERM or SIGINT.
fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    Ok(token)
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: listen on {addr}"))?;
    let local = listener.local_addr().context("read the bound address")?;
    // The first stdout line is the contract with tests and `dfs cluster up`.
    println!("rdfs {what} listening on {local}");
    Ok(listener)
}

/// Runs `dfs master` until SIGTERM/SIGINT.
pub fn master(args: MasterArgs) -> anyhow::Result<()> {
    let mut cfg = rdfs_master::MasterConfig::new(args.data.clone());
    if let Some(v) = args.chunk_size {
        cfg.chunk_size_bytes = v;
    }
    if let Some(v) = args.replication {
        cfg.replication = v;
        cfg.min_replicas = cfg.min_replicas.min(v);
    }
    if let Some(v) = args.heartbeat_timeout {
        cfg.heartbeat_timeout = v;
    }
    if let Some(v) = args.heartbeat_interval {
        cfg.heartbeat_interval = v;
    }
    if let Some(v) = args.block_report_interval {
        cfg.block_report_interval = v;
    }
    if let Some(v) = args.lease {
        cfg.lease_duration = v;
    }
    if let Some(v) = args.checkpoint_interval {
        cfg.checkpoint_interval = v;
    }
    if let Some(v) = args.trash_grace {
        cfg.trash_grace = v;
    }
    if let Some(v) = args.max_transfers_per_source {
        cfg.max_transfers_per_source = v;
    }
    if let Some(v) = args.failover_timeout {
        cfg.failover_timeout = v;
    }
    cfg.standby_of = args.standby_of.clone();
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    runtime()?.block_on(async move {
        let listener = bind(&args.listen, "master").await?;
        let http = match &args.http {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("dashboard: listen on {addr}"))?;
                let local = l.local_addr().context("read the bound address")?;
                // The second stdout line: `dfs cluster up` and tests read the URL from it.
                println!("rdfs master dashboard on http://{local}/");
                Some(l)
            }
            None => None,
        };
        let shutdown = shutdown_on_signals()?;
        rdfs_master::run_with_http(cfg, listener, http, shutdown)
            .await
            .with_context(|| format!("master on {}", args.data.display()))
    })
}

/// Runs `dfs chunkserver` until SIGTERM/SIGINT.
pub fn chunkserver(args: ChunkserverArgs, masters: Vec<String>) -> anyhow::Result<()> {
    if masters.is_empty() {
        bail!("no master address: pass --master HOST:PORT or set DFS_MASTER");
    }
    let mut cfg = rdfs_chunkserver::ChunkserverConfig::new(args.data.clone(), masters);
    cfg.capacity_bytes = args.capacity;
    cfg.scrub_rate_bytes_per_sec = args.scrub_rate;
    if let Some(v) = args.block_report_interval {
        cfg.block_report_interval = v;
    }
    runtime()?.block_on(async move {
        let listener = bind(&args.listen, "chunkserver").await?;
        let shutdown = shutdown_on_signals()?;
        rdfs_chunkserver::run(cfg, listener, shutdown)
            .await
            .with_context(|| format!("chunkserver on {}", args.data.display()))
    })
}

/// A child server process of `dfs cluster up`.
struct ChildServer {
    name: String,
    child: Child,
    addr: String,
    /// Further stdout lines (the master's dashboard URL), as the child prints them.
    more: std::sync::mpsc::Receiver<String>,
    log: PathBuf,
}

/// Spawns `dfs ARGS...`, waits for its listen line and returns it with the bound address.
fn spawn_child(name: &str, args: &[String], log: &Path) -> anyhow::Result<ChildServer> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("find the dfs executable")?;
    // Append: a second `cluster up` on the same directory (refused by the data-directory
    // lock) must not truncate the logs of the cluster that is running.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    // SAFETY: prctl is async-signal-safe; it makes the child die with its parent, so a
    // killed `cluster up` never leaves orphan servers holding the ports.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("start {name}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(CHILD_STDOUT_LINES_KEPT);
    std::thread::spawn(move || {
        // Keep draining so the child never blocks on a full pipe; lines past the first
        // few nobody reads are dropped.
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.try_send(line);
        }
    });
    match rx.recv_timeout(CHILD_START_TIMEOUT) {
        Ok(line) => {
            let addr = line.rsplit(' ').next().unwrap_or_default().to_string();
            Ok(ChildServer {
                name: name.to_string(),
                child,
                addr,
                more: rx,
                log: log.to_path_buf(),
            })
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!(
                "{name} did not start (log {}):\n{}",
                log.display(),
                tail.lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
    }
}

fn stop_children(children: &mut [ChildServer]) {
    for c in children.iter() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + CHILD_STOP_TIMEOUT;
    for c in children.iter_mut().rev() {
        loop {
            match c.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!("dfs: {} did not stop in time; killing it", c.name);
                    let _ = c.child.kill();
                    let _ = c.child.wait();
                    break;
                }
            }
        }
    }
}

/// Runs `dfs cluster up` in the foreground until Ctrl-C/SIGTERM.
pub fn cluster_up(args: ClusterUpArgs) -> anyhow::Result<()> {
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(CLUSTER_DEFAULT_DATA_DIR));
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let data = data
        .canonicalize()
        .with_context(|| format!("resolve {}", data.display()))?;
    let _lock = lock_cluster_dir(&data)?;
    let mut children = Vec::new();
    let result = start_cluster(&args, &data, &mut children).and_then(|()| {
        print_banner(&data, &children);
        wait_for_signal_or_child_exit(&mut children)
    });
    stop_children(&mut children);
    if result.is_ok() {
        println!("rdfs cluster stopped; state kept in {}", data.display());
    }
    result
}

/// Holds `<data>/cluster.lock` for the life of `cluster up`, so a second one on the same
/// directory fails before it starts anything (or touches the running cluster's logs).
fn lock_cluster_dir(data: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = data.join("cluster.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; the lock lives as long as the returned File.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "{}: another `dfs cluster up` is already running on this directory",
            data.display()
        );
    }
    Ok(file)
}

fn start_cluster(
    args: &ClusterUpArgs,
    data: &Path,
    children: &mut Vec<ChildServer>,
) -> anyhow::Result<()> {
    let s = |p: &Path| p.display().to_string();
    let mut margs = vec![
        "master".into(),
        "--data".into(),
        s(&data.join("master")),
        "--listen".into(),
        args.listen.clone(),
    ];
    if let Some(cs) = args.chunk_size {
        margs.extend(["--chunk-size".into(), cs.to_string()]);
    }
    margs.extend(["--http".into(), http_addr_for(&args.listen)?]);
    if let Some(t) = args.failover_timeout {
        margs.extend([
            "--failover-timeout".into(),
            humantime::format_duration(t).to_string(),
        ]);
    }
    let master = spawn_child("master", &margs, &data.join("logs/master.log"))?;
    let master_addr = master.addr.clone();
    children.push(master);
    let master_port: u16 = master_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("master address has no port")?;
    let base_port = if args.listen.ends_with(":0") {
        0
    } else {
        master_port
    };
    let mut masters = vec![master_addr.clone()];
    if !args.no_standby {
        let host = master_addr
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .context("master address has no host")?;
        let port = if base_port == 0 {
            0
        } else {
            base_port
                .checked_add(1)
                .context("standby port out of range")?
        };
        let mut sargs = vec![
            "master".into(),
            "--data".into(),
            s(&data.join("standby")),
            "--listen".into(),
            format!("{host}:{port}"),
            "--standby-of".into(),
            master_addr.clone(),
            "--http".into(),
            http_addr_for(&format!("{host}:{port}"))?,
        ];
        if let Some(t) = args.failover_timeout {
            sargs.extend([
                "--failover-timeout".into(),
                humantime::format_duration(t).to_string(),
            ]);
        }
        let standby = spawn_child("standby", &sargs, &data.join("logs/standby.log"))?;
        masters.push(standby.addr.clone());
        children.push(standby);
    }
    let master_list = masters.join(",");
    for i in 1..=args.chunkservers {
        let port = if base_port == 0 {
            0
        } else {
            base_port
                .checked_add(CLUSTER_CHUNKSERVER_PORT_OFFSET + i as u16)
                .context("chunkserver port out of range")?
        };
        let cargs = vec![
            "--master".into(),
            master_list.clone(),
            "chunkserver".into(),
            "--data".into(),
            s(&data.join(format!("cs{i}"))),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        let name = format!("chunkserver {i}");
        children.push(spawn_child(
            &name,
            &cargs,
            &data.join(format!("logs/cs{i}.log")),
        )?);
    }
    if let Some(dir) = &args.mount {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let margs = vec!["--master".into(), master_list, "mount".into(), s(dir)];
        children.push(spawn_child("mount", &margs, &data.join("logs/mount.log"))?);
    }
    Ok(())
}

/// The dashboard address for a master listening on `listen`: same host, port + 80
/// (port 0 stays 0: any free port).
fn http_addr_for(listen: &str) -> anyhow::Result<String> {
    let (host, port) = listen
        .rsplit_once(':')
        .with_context(|| format!("{listen}: no port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("{listen}: bad port"))?;
    let http_port = if port == 0 {
        0
    } else {
        port.checked_add(CLUSTER_HTTP_PORT_OFFSET)
            .context("dashboard port out of range")?
    };
    Ok(format!("{host}:{http_port}"))
}

fn print_banner(data: &Path, children: &[ChildServer]) {
    let masters: Vec<&str> = children
        .iter()
        .filter(|c| c.name == "master" || c.name == "standby")
        .map(|c| c.addr.as_str())
        .collect();
    let master = masters.join(",");
    let dashboard = children
        .first()
        .and_then(|c| c.more.recv_timeout(CHILD_START_TIMEOUT).ok())
        .and_then(|l| l.rsplit(' ').next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    println!("rdfs local cluster is up");
    println!("  {:<14} {dashboard}", "dashboard:");
    for c in children {
        println!("  {:<14} {}", format!("{}:", c.name), c.addr);
    }
    println!("  data and logs: {}", data.display());
    println!();
    println!("In another terminal:");
    println!("  export DFS_MASTER={master}");
    println!("  dfs mkdir -p /demo && dfs put README.md /demo/ && dfs ls -l /demo");
    println!("  dfs cat /demo/README.md | head; dfs stat --json /demo/README.md; dfs fsck");
    println!("  dfs admin report; open {dashboard} in a browser");
    if masters.len() > 1 {
        println!("  dfs admin ha                # which master is primary; dfs admin failover hands over");
    }
    println!();
    println!("Press Ctrl-C to stop the cluster.");
}

fn wait_for_signal_or_child_exit(children: &mut [ChildServer]) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    // Block SIGINT/SIGTERM and poll for them, so the children get a clean SIGTERM from us.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("block signals")?;
    let mut reported = vec![false; children.len()];
    loop {
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        // SAFETY: `set` is a valid sigset; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            println!("\nstopping the cluster...");
            return Ok(());
        }
        // A dead child is reported, not fatal: the rest of the cluster keeps serving, which
        // is the point of a replicated file system (kill one and watch `dfs fsck` heal it).
        for (c, seen) in children.iter_mut().zip(reported.iter_mut()) {
            if *seen {
                continue;
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                *seen = true;
                eprintln!(
                    "dfs: {} ({}) exited ({status}); see {}. The rest of the cluster keeps running; Ctrl-C stops it.",
                    c.name,
                    c.addr,
                    c.log.display()
                );
            }
        }
        if reported.iter().all(|r| *r) {
            anyhow::bail!("every server of the cluster has exited");
        }
    }
}
