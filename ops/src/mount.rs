//! `dfs mount MOUNTPOINT`: mounts the cluster with FUSE and serves it in the foreground
//! until SIGINT/SIGTERM or an external `umount`, then unmounts cleanly.
//!
//! The first stdout line is `rdfs mounted at MOUNTPOINT` once the kernel handshake is done
//! (scripts and `dfs cluster up --mount` wait for it). A mount left behind by a crashed
//! `dfs mount` (`Transport endpoint is not connected`) is detached before mounting again.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rdfs_client::{Client, ClientConfig};
use rdfs_fuse::MountConfig;

/// How often the foreground loop checks whether the mount was removed from outside.
const SESSION_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// Directory to mount the file system on.
    pub mountpoint: PathBuf,
    /// How long the kernel caches attributes and names (e.g. `1s`, `0s` for none).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub attr_ttl: Duration,
}

/// Runs `dfs mount` (builds its own runtime: the FUSE session thread blocks).
pub fn mount(args: MountArgs, masters: Vec<String>, timeout: Duration) -> anyhow::Result<()> {
    let mountpoint = args.mountpoint.clone();
    let shown = mountpoint.display().to_string();
    if rdfs_fuse::is_stale_mount(&mountpoint) {
        tracing::warn!("{shown}: a previous mount is dead; detaching it");
        rdfs_fuse::unmount_path(&mountpoint, true)
            .with_context(|| format!("{shown}: detach the dead mount"))?;
    }
    let meta = std::fs::metadata(&mountpoint).with_context(|| shown.clone())?;
    anyhow::ensure!(meta.is_dir(), "{shown}: not a directory");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rdfs-fuse")
        .build()
        .context("start the async runtime")?;
    let euid = nix::unistd::geteuid().as_raw();
    let addrs = masters.join(",");
    let mut cfg = ClientConfig::new(masters);
    cfg.timeout = timeout;
    cfg.uid = euid;
    cfg.gid = nix::unistd::getegid().as_raw();
    let client = runtime
        .block_on(Client::connect(cfg))
        .map_err(|e| anyhow::Error::new(e).context(format!("master {addrs}")))?;

    let mut mcfg = MountConfig::for_euid(euid);
    mcfg.fs.attr_ttl = args.attr_ttl;
    let mounted = rdfs_fuse::mount(client, runtime.handle().clone(), &mountpoint, &mcfg)
        .with_context(|| format!("{shown}: mount"))?;
    println!("rdfs mounted at {shown}");
    let _ = std::io::stdout().flush();

    let why = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        loop {
            tokio::select! {
                _ = term.recv() => return Ok::<_, anyhow::Error>("SIGTERM"),
                _ = int.recv() => return Ok("SIGINT"),
                _ = tokio::time::sleep(SESSION_POLL) => {
                    if mounted.is_finished() {
                        return Ok("unmounted from outside");
                    }
                }
            }
        }
    })?;
    tracing::info!("{why}: unmounting {shown}");
    // Unmount on this thread while the runtime's workers keep answering the kernel (a
    // busy mount is detached and served until its last file closes).
    mounted
        .unmount()
        .with_context(|| format!("{shown}: unmount"))?;
    tracing::info!("{shown} unmounted");
    Ok(())
}
