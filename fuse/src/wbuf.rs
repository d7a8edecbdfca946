//! Write coalescing: one contiguous extent of not-yet-written bytes per inode.
//!
//! The kernel sends writes of at most `max_write` bytes (1 MiB), and small ones for small
//! `write(2)` calls; each `write_at` costs a master round trip and a chain push, so small
//! writes are gathered here into one large `write_at`. Only a single extent is kept: a write
//! that is neither inside nor right after it (or would grow it past its cap) is refused, and
//! the caller flushes the extent first. That keeps writes ordered without tracking overlaps.

/// A contiguous run of buffered bytes starting at `start`.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    start: u64,
    data: Vec<u8>,
}

impl WriteBuffer {
    /// An empty buffer.
    pub fn new() -> WriteBuffer {
        WriteBuffer::default()
    }

    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// File offset of the first buffered byte (meaningless when empty).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// File offset just past the last buffered byte, or 0 when empty.
    pub fn end(&self) -> u64 {
        if self.data.is_empty() {
            0
        } else {
            self.start + self.data.len() as u64
        }
    }

    /// Adds `bytes` at `offset` when they land inside or right after the extent and the
    /// extent stays within `cap` bytes; returns false (buffer unchanged) otherwise.
    pub fn try_add(&mut self, offset: u64, bytes: &[u8], cap: usize) -> bool {
        if bytes.is_empty() {
            return true;
        }
        if self.data.is_empty() {
            if bytes.len() > cap {
                return false;
            }
            self.start = offset;
            self.data.extend_from_slice(bytes);
            return true;
        }
        let end = self.end();
        if offset < self.start || offset > end {
            return false;
        }
        let rel = (offset - self.start) as usize;
        let new_len = rel.saturating_add(bytes.len()).max(self.data.len());
        if new_len > cap {
            return false;
        }
        let overlap = (self.data.len() - rel).min(bytes.len());
        self.data[rel..rel + overlap].copy_from_slice(&bytes[..overlap]);
        self.data.extend_from_slice(&bytes[overlap..]);
        true
    }

    /// Removes and returns the extent `(start, bytes)`, leaving the buffer empty.
    pub fn take(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data);
        Some((self.start, data))
    }

    /// Cuts buffered bytes at or beyond `size` (a truncate while data is buffered).
    pub fn truncate(&mut self, size: u64) {
        if self.data.is_empty() || size >= self.end() {
            return;
        }
        if size <= self.start {
            self.data.clear();
        } else {
            self.data.truncate((size - self.start) as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 16;

    #[test]
    fn sequential_writes_coalesce_into_one_extent() {
        let mut b = WriteBuffer::new();
        assert!(b.try_add(100, b"abc", CAP));
        assert!(b.try_add(103, b"def", CAP));
        assert_eq!((b.start(), b.end(), b.len()), (100, 106, 6));
        assert_eq!(b.take(), Some((100, b"abcdef".to_vec())));
        assert!(b.is_empty());
        assert_eq!(b.end(), 0);
        assert_eq!(b.take(), None);
    }

    #[test]
    fn overwrites_inside_the_extent_replace_bytes_in_place() {
        let mut b = WriteBuffer::new();
        assert!(b.try_add(0, b"aaaaaa", CAP));
        assert!(b.try_add(2, b"XY", CAP));
        assert!(
            b.try_add(4, b"ZZZZ", CAP),
            "overlapping the tail extends it"
        );
        assert_eq!(b.take(), Some((0, b"aaXYZZZZ".to_vec())));
    }

    #[test]
    fn gaps_writes_before_the_start_and_overflow_are_refused_unchanged() {
        let mut b = WriteBuffer::new();
        assert!(b.try_add(10, b"0123", CAP));
        assert!(!b.try_add(15, b"x", CAP), "gap after the end");
        assert!(!b.try_add(9, b"xy", CAP), "starts before the extent");
        assert!(!b.try_add(14, &[1u8; CAP], CAP), "would exceed the cap");
        assert_eq!(b.take(), Some((10, b"0123".to_vec())));
        assert!(
            !b.try_add(0, &[0u8; CAP + 1], CAP),
            "larger than the cap alone"
        );
        assert!(b.is_empty());
        assert!(b.try_add(0, &[], CAP), "an empty write is a no-op");
    }

    #[test]
    fn truncate_cuts_buffered_bytes() {
        let mut b = WriteBuffer::new();
        assert!(b.try_add(10, b"0123456789", CAP));
        b.truncate(25);
        assert_eq!(b.end(), 20);
        b.truncate(15);
        assert_eq!(b.end(), 15);
        b.truncate(5);
        assert!(b.is_empty());
    }
}
