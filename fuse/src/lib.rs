//! rdfs-fuse: the FUSE adapter over `rdfs-client` (issue 3).
//!
//! [`mount`] mounts the cluster at a directory with `fuser` (no libfuse: as root the mount
//! syscall is used directly) and serves kernel requests on a tokio runtime until
//! [`Mounted::unmount`] or an external `umount`. Inode numbers are the master's, 1:1 (the
//! root is inode 1 on both sides). What the file system does per request is in [`fs`];
//! the errno every failure becomes is in [`errno`].
//!
//! Mounted by root, the file system uses `allow_other` and `default_permissions`, so every
//! local user can use it and the kernel checks mode bits; the master checks them again
//! against the caller's uid/gid/groups.

pub mod attr;
mod caller;
pub mod errno;
pub mod fs;
pub mod readahead;
pub mod wbuf;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use rdfs_client::Client;
use tokio::runtime::Handle;

pub use fs::{FsConfig, RdfsFs};

/// Name shown as the mount's source in /proc/mounts.
pub const FS_NAME: &str = "rdfs";

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Let every local user in (`allow_other`); needs root (or `user_allow_other`).
    pub allow_other: bool,
    /// Let the kernel check permissions from mode bits (`default_permissions`).
    pub default_permissions: bool,
    /// Caching and buffering tunables.
    pub fs: FsConfig,
}

impl MountConfig {
    /// The defaults for a process running as `euid`: root mounts for everybody.
    pub fn for_euid(euid: u32) -> MountConfig {
        MountConfig {
            allow_other: euid == 0,
            default_permissions: true,
            fs: FsConfig::default(),
        }
    }
}

/// A live mount; dropping it unmounts.
pub struct Mounted {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

/// Mounts `client`'s cluster at `mountpoint`; request tasks run on `rt`. Returns once the
/// kernel has completed the FUSE handshake.
pub fn mount(
    client: Client,
    rt: Handle,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> io::Result<Mounted> {
    let notifier = Arc::new(OnceLock::new());
    let fs = RdfsFs::new(client, rt, cfg.fs.clone(), notifier.clone());
    let mut options = vec![
        MountOption::FSName(FS_NAME.to_string()),
        MountOption::Subtype(FS_NAME.to_string()),
        MountOption::RW,
        MountOption::NoDev,
        MountOption::NoSuid,
        // Reads do not update atime (no op-log record per read); saying so in the mount
        // options keeps `stat` honest about it.
        MountOption::NoAtime,
    ];
    if cfg.default_permissions {
        options.push(MountOption::DefaultPermissions);
    }
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let session = fuser::spawn_mount2(fs, mountpoint, &config)?;
    let _ = notifier.set(session.notifier());
    tracing::info!("mounted rdfs at {}", mountpoint.display());
    Ok(Mounted {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Mounted {
    /// Where the file system is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// True once the session ended (unmounted from outside, e.g. `umount`).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and waits for the session to end. A busy mount (files still open) is
    /// detached lazily: it disappears now and the session ends when the last file closes.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if !session.guard.is_finished() {
            if let Err(e) = unmount_path(&self.mountpoint, false) {
                tracing::warn!(
                    "unmount of {} failed ({e}); detaching it lazily",
                    self.mountpoint.display()
                );
                unmount_path(&self.mountpoint, true)?;
            }
        }
        session.join()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!("unmount of {} failed: {e}", self.mountpoint.display());
        }
    }
}

/// `umount` (or with `lazy`, `umount -l`) of `path`.
pub fn unmount_path(path: &Path, lazy: bool) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when `path` is a mount whose FUSE server is gone (`ENOTCONN`): what a crashed
/// `dfs mount` leaves behind. Such a mount can only be detached.
pub fn is_stale_mount(path: &Path) -> bool {
    matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}
