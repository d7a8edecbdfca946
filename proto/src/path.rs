//! Path and name rules shared by the master, the client and the CLI.
//!
//! Names are 1–255 bytes, contain no `/` and no NUL, and are not `.` or `..`.
//! Paths are absolute, `/`-separated; empty components (`//`) are ignored.

use crate::limits::{MAX_NAME_LEN, MAX_PATH_DEPTH, MAX_PATH_LEN};
use crate::ErrorCode;

/// Checks one directory-entry name.
pub fn validate_name(name: &str) -> Result<(), ErrorCode> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(ErrorCode::InvalidName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ErrorCode::NameTooLong);
    }
    Ok(())
}

/// Splits an absolute path into validated components. `/` gives an empty list.
pub fn components(path: &str) -> Result<Vec<&str>, ErrorCode> {
    if !path.starts_with('/') {
        return Err(ErrorCode::InvalidArgument);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(ErrorCode::NameTooLong);
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > MAX_PATH_DEPTH {
        return Err(ErrorCode::InvalidArgument);
    }
    for p in &parts {
        validate_name(p)?;
    }
    Ok(parts)
}

/// Normalises a path: leading `/`, no trailing or doubled `/`.
pub fn normalize(path: &str) -> Result<String, ErrorCode> {
    let parts = components(path)?;
    Ok(format!("/{}", parts.join("/")))
}

/// Joins a directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert_eq!(validate_name(&"a".repeat(255)), Ok(()));
        assert_eq!(validate_name(&"a".repeat(256)), Err(ErrorCode::NameTooLong));
        assert_eq!(validate_name(""), Err(ErrorCode::InvalidName));
        assert_eq!(validate_name("."), Err(ErrorCode::InvalidName));
        assert_eq!(validate_name(".."), Err(ErrorCode::InvalidName));
        assert_eq!(validate_name("a\0b"), Err(ErrorCode::InvalidName));
    }

    #[test]
    fn paths_split_and_normalise() {
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(components("//a///b/").unwrap(), vec!["a", "b"]);
        assert_eq!(components("a/b"), Err(ErrorCode::InvalidArgument));
        assert_eq!(normalize("/x//y/").unwrap(), "/x/y");
        assert_eq!(components("/a/../b"), Err(ErrorCode::InvalidName));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/d", "a"), "/d/a");
    }
}
