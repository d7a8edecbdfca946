//! Output helpers shared by the commands: path handling, `ls -l` mode strings, times, and the
//! fixed `--json` shapes.

use std::time::{Duration, UNIX_EPOCH};

use rdfs_client::{FileAttr, FileType};
use serde_json::{json, Value};

/// Whether `attr` is a directory.
pub fn is_dir(attr: &FileAttr) -> bool {
    attr.file_type == FileType::Dir as i32
}

/// `"file"`, `"dir"` or `"symlink"` (the JSON `type` field).
pub fn type_name(attr: &FileAttr) -> &'static str {
    match FileType::try_from(attr.file_type) {
        Ok(FileType::Dir) => "dir",
        Ok(FileType::Symlink) => "symlink",
        _ => "file",
    }
}

/// An rdfs path as given by the user; a relative one is taken from the root.
pub fn dfs_path(arg: &str) -> String {
    if arg.starts_with('/') {
        arg.to_string()
    } else {
        format!("/{arg}")
    }
}

/// Last component of an rdfs path (`""` for the root).
pub fn dfs_basename(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// `-rw-r--r--` style mode string, with setuid/setgid/sticky shown as `s`/`S`/`t`/`T`.
pub fn mode_string(attr: &FileAttr) -> String {
    let kind = match type_name(attr) {
        "dir" => 'd',
        "symlink" => 'l',
        _ => '-',
    };
    let m = attr.mode;
    let mut s = String::with_capacity(10);
    s.push(kind);
    for (shift, special, special_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (m >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (m & special != 0, exec) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Seconds since the epoch of a nanosecond timestamp (floor; before 1970 stays negative).
pub fn secs(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000)
}

/// RFC 3339 UTC time to the second (`2026-12-03T19:07:33Z`).
pub fn time_string(ns: i64) -> String {
    if ns < 0 {
        return "1970-01-01T00:00:00Z".to_string();
    }
    let t = UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// One `ls --json` element: `{name, path, type, size, mode, uid, gid, mtime}` and extras.
pub fn entry_json(name: &str, path: &str, attr: &FileAttr) -> Value {
    json!({
        "name": name,
        "path": path,
        "type": type_name(attr),
        "size": attr.size,
        "mode": attr.mode,
        "uid": attr.uid,
        "gid": attr.gid,
        "mtime": secs(attr.mtime_ns),
        "mtime_ns": attr.mtime_ns,
        "inode": attr.inode,
        "replication": attr.replication,
    })
}

/// One `ls -l` line: mode string, exact size, mtime, name.
pub fn long_line(name: &str, attr: &FileAttr) -> String {
    format!(
        "{} {:>14} {} {}",
        mode_string(attr),
        attr.size,
        time_string(attr.mtime_ns),
        name
    )
}

/// Human size (`1.5 GiB`) for plain-text summaries; JSON always carries exact bytes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: FileType, mode: u32) -> FileAttr {
        FileAttr {
            file_type: kind as i32,
            mode,
            ..FileAttr::default()
        }
    }

    #[test]
    fn mode_strings_match_ls() {
        assert_eq!(mode_string(&attr(FileType::File, 0o644)), "-rw-r--r--");
        assert_eq!(mode_string(&attr(FileType::Dir, 0o755)), "drwxr-xr-x");
        assert_eq!(mode_string(&attr(FileType::Dir, 0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string(&attr(FileType::File, 0o4644)), "-rwSr--r--");
        assert_eq!(mode_string(&attr(FileType::File, 0o2755)), "-rwxr-sr-x");
    }

    #[test]
    fn paths_and_names() {
        assert_eq!(dfs_path("a/b"), "/a/b");
        assert_eq!(dfs_path("/a"), "/a");
        assert_eq!(dfs_basename("/a/b"), "b");
        assert_eq!(dfs_basename("/a/b/"), "b");
        assert_eq!(dfs_basename("/"), "");
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(secs(1_500_000_000), 1);
        assert_eq!(secs(-1), -1);
        assert_eq!(time_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_string(86_400_000_000_000), "1970-01-02T00:00:00Z");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn json_entries_have_the_fixed_fields() {
        let mut a = attr(FileType::File, 0o640);
        a.size = 42;
        a.uid = 7;
        a.gid = 8;
        a.mtime_ns = 3_000_000_001;
        let v = entry_json("f", "/d/f", &a);
        assert_eq!(v["name"], "f");
        assert_eq!(v["path"], "/d/f");
        assert_eq!(v["type"], "file");
        assert_eq!(v["size"], 42);
        assert_eq!(v["mode"], 0o640);
        assert_eq!(v["uid"], 7);
        assert_eq!(v["gid"], 8);
        assert_eq!(v["mtime"], 3);
    }
}
