//! Who is asking: a FUSE request carries uid, gid and pid only, but the master checks
//! permissions with supplementary groups too, so they are read from `/proc/PID/status`
//! (cached briefly per pid: one process makes many requests in a row).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdfs_client::Caller;

/// How long a pid's groups are trusted (a process rarely changes its groups).
const GROUPS_TTL: Duration = Duration::from_secs(2);
/// Pids remembered at once; the cache is emptied when it fills.
const GROUPS_CACHE_ENTRIES: usize = 4096;

/// (pid, uid, gid) of a request.
type Requester = (u32, u32, u32);

/// Caches supplementary groups per requester, with when they were read.
#[derive(Default)]
pub struct GroupCache {
    entries: Mutex<HashMap<Requester, (Vec<u32>, Instant)>>,
}

impl GroupCache {
    /// The caller for a request from `pid` running as `uid`/`gid`.
    pub fn caller(&self, pid: u32, uid: u32, gid: u32) -> Caller {
        let key = (pid, uid, gid);
        if let Some((groups, at)) = self.entries.lock().get(&key) {
            if at.elapsed() < GROUPS_TTL {
                return Caller {
                    uid,
                    gid,
                    groups: groups.clone(),
                };
            }
        }
        let mut groups = if pid == 0 {
            Vec::new()
        } else {
            read_groups(pid).unwrap_or_default()
        };
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        let mut entries = self.entries.lock();
        if entries.len() >= GROUPS_CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (groups.clone(), Instant::now()));
        Caller { uid, gid, groups }
    }
}

/// Supplementary groups of `pid` (None when the process is gone or unreadable).
fn read_groups(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_groups(&status)
}

/// The `Groups:` line of a `/proc/PID/status` text.
fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse::<u32>().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_line_is_parsed() {
        let text = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 1000 \nVmPeak:\t1 kB\n";
        assert_eq!(parse_groups(text), Some(vec![4, 24, 1000]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(vec![]));
        assert_eq!(parse_groups("Name: x\n"), None);
    }

    #[test]
    fn the_primary_gid_is_always_a_member() {
        let cache = GroupCache::default();
        let c = cache.caller(0, 65534, 65534);
        assert_eq!(c.groups, vec![65534]);
        let me = cache.caller(std::process::id(), 0, 12345);
        assert!(me.groups.contains(&12345));
    }
}
