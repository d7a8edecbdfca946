//! Read-ahead for sequential reads on one open handle: a run of contiguous windows of
//! `window` bytes, the ones ahead of the reader already being fetched (each by its own task,
//! so several chunk reads are in flight, as `dfs get` does).
//!
//! The kernel sends read-ahead requests of up to 1 MiB asynchronously and may deliver them
//! slightly out of order; one window behind the reader is kept, so a late request for bytes
//! just consumed is still served from memory instead of being mistaken for random access.
//!
//! Invariants: windows are contiguous (`windows[i].start == windows[0].start + i * window`);
//! a fetched window shorter than `window` ends the file, and nothing is fetched after it.

use std::collections::VecDeque;

use bytes::Bytes;
use rdfs_client::ClientError;
use tokio::task::JoinHandle;

/// A window's bytes, fetched or being fetched.
pub type Fetch = JoinHandle<Result<Bytes, ClientError>>;

enum State {
    Pending(Fetch),
    Ready(Bytes),
}

struct Window {
    start: u64,
    state: State,
}

/// Read-ahead state of one handle.
pub struct ReadAhead {
    window: u64,
    /// Windows kept fetched or in flight ahead of the one being read.
    depth: usize,
    /// Write generation of the inode the windows were fetched at (older means stale).
    generation: u64,
    windows: VecDeque<Window>,
    /// End of the last read, to recognise sequential access.
    last_end: u64,
}

impl ReadAhead {
    /// Read-ahead in windows of `window` bytes, `depth` of them ahead of the reader.
    pub fn new(window: u64, depth: usize) -> ReadAhead {
        debug_assert!(window > 0 && depth > 0);
        ReadAhead {
            window: window.max(1),
            depth: depth.max(1),
            generation: 0,
            windows: VecDeque::new(),
            last_end: 0,
        }
    }

    /// Forgets every window fetched before a write or truncate (`generation` changed).
    pub fn sync_generation(&mut self, generation: u64) {
        if self.generation != generation {
            self.clear();
            self.generation = generation;
        }
    }

    /// Whether a read at `offset` continues a sequential pattern (and should use windows).
    pub fn is_sequential(&self, offset: u64) -> bool {
        offset == self.last_end || self.index_of(offset).is_some()
    }

    /// Records a read served without windows (random access), which ends at `end`.
    pub fn note_direct(&mut self, end: u64) {
        self.clear();
        self.last_end = end;
    }

    /// Serves `size` bytes at `offset` from the windows, fetching with `fetch(start, len)`
    /// what is missing and topping up the windows ahead. Returns fewer bytes only at the end
    /// of the file.
    pub async fn read<F>(&mut self, offset: u64, size: u64, fetch: F) -> Result<Bytes, ClientError>
    where
        F: Fn(u64, u64) -> Fetch,
    {
        if self.index_of(offset).is_none() {
            // Not inside the run: start a new one here.
            self.clear();
            self.windows.push_back(Window {
                start: offset,
                state: State::Pending(fetch(offset, self.window)),
            });
        }
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut pos = offset;
        let end = offset.saturating_add(size);
        while pos < end {
            let i = match self.index_of(pos) {
                Some(i) => i,
                None => {
                    // Past the last window: extend the run (it is contiguous by construction).
                    let start = self.run_end();
                    if pos != start || self.ends_file() {
                        break;
                    }
                    self.windows.push_back(Window {
                        start,
                        state: State::Pending(fetch(start, self.window)),
                    });
                    self.windows.len() - 1
                }
            };
            let bytes = self.ready(i).await?;
            let w_start = self.windows[i].start;
            let from = (pos - w_start) as usize;
            if from >= bytes.len() {
                break; // end of file inside this window
            }
            let to = (from as u64 + (end - pos)).min(bytes.len() as u64) as usize;
            pos += (to - from) as u64;
            pieces.push(bytes.slice(from..to));
            if (bytes.len() as u64) < self.window && to == bytes.len() {
                break; // this window ends the file
            }
        }
        self.last_end = pos;
        self.trim_behind(pos);
        self.top_up(pos, &fetch);
        Ok(join(pieces))
    }

    /// Index of the window holding `offset`.
    fn index_of(&self, offset: u64) -> Option<usize> {
        let first = self.windows.front()?.start;
        if offset < first {
            return None;
        }
        let i = ((offset - first) / self.window) as usize;
        (i < self.windows.len()).then_some(i)
    }

    /// Offset just past the last window of the run.
    fn run_end(&self) -> u64 {
        self.windows.back().map_or(0, |w| w.start + self.window)
    }

    /// Whether a fetched window already showed the end of the file.
    fn ends_file(&self) -> bool {
        self.windows
            .iter()
            .any(|w| matches!(&w.state, State::Ready(b) if (b.len() as u64) < self.window))
    }

    /// The bytes of window `i`, waiting for its fetch.
    async fn ready(&mut self, i: usize) -> Result<Bytes, ClientError> {
        let w = &mut self.windows[i];
        if let State::Pending(handle) = &mut w.state {
            let bytes = match handle.await {
                Ok(res) => res?,
                Err(join) => {
                    return Err(ClientError::Protocol(format!(
                        "read-ahead task failed: {join}"
                    )))
                }
            };
            w.state = State::Ready(bytes);
        }
        match &w.state {
            State::Ready(b) => Ok(b.clone()),
            State::Pending(_) => Err(ClientError::Protocol("read-ahead window lost".into())),
        }
    }

    /// Drops windows wholly more than one window behind `pos`.
    fn trim_behind(&mut self, pos: u64) {
        while let Some(front) = self.windows.front() {
            if front.start + 2 * self.window <= pos {
                self.windows.pop_front();
            } else {
                break;
            }
        }
    }

    /// Starts fetches until `depth` windows lie ahead of the one holding `pos`.
    fn top_up<F>(&mut self, pos: u64, fetch: &F)
    where
        F: Fn(u64, u64) -> Fetch,
    {
        let Some(current) = self
            .index_of(pos)
            .or_else(|| self.windows.len().checked_sub(1))
        else {
            return;
        };
        while self.windows.len() - 1 - current < self.depth && !self.ends_file() {
            let start = self.run_end();
            self.windows.push_back(Window {
                start,
                state: State::Pending(fetch(start, self.window)),
            });
        }
    }

    /// Drops every window (aborting fetches in flight).
    pub fn clear(&mut self) {
        for w in self.windows.drain(..) {
            if let State::Pending(handle) = w.state {
                handle.abort();
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.clear();
    }
}

fn join(mut pieces: Vec<Bytes>) -> Bytes {
    match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.pop().unwrap_or_default(),
        _ => {
            let total = pieces.iter().map(Bytes::len).sum();
            let mut joined = Vec::with_capacity(total);
            for p in &pieces {
                joined.extend_from_slice(p);
            }
            Bytes::from(joined)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A file of `len` bytes (byte i = i % 251) and a fetcher counting its calls.
    fn file(len: u64) -> (impl Fn(u64, u64) -> Fetch, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let fetch = move |start: u64, n: u64| -> Fetch {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let end = (start + n).min(len);
                let bytes: Vec<u8> = (start.min(end)..end).map(|i| (i % 251) as u8).collect();
                Ok(Bytes::from(bytes))
            })
        };
        (fetch, calls)
    }

    fn expect(offset: u64, len: u64) -> Vec<u8> {
        (offset..offset + len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn sequential_reads_come_from_windows_fetched_ahead() {
        let (fetch, calls) = file(10_000);
        let mut ra = ReadAhead::new(1000, 3);
        let mut pos = 0;
        while pos < 10_000 {
            let got = ra.read(pos, 300, &fetch).await.unwrap();
            assert_eq!(&got[..], &expect(pos, got.len() as u64)[..], "at {pos}");
            assert!(!got.is_empty());
            pos += got.len() as u64;
        }
        assert_eq!(pos, 10_000);
        // One fetch per window (10), plus at most `depth` past the end (cheap: clipped).
        let n = calls.load(Ordering::SeqCst);
        assert!((10..=13).contains(&n), "{n} fetches");
        assert!(
            ra.read(10_000, 300, &fetch).await.unwrap().is_empty(),
            "EOF"
        );
    }

    #[tokio::test]
    async fn a_read_spanning_windows_and_the_end_of_file_is_exact() {
        let (fetch, _) = file(2_500);
        let mut ra = ReadAhead::new(1000, 2);
        let got = ra.read(900, 1_200, &fetch).await.unwrap();
        assert_eq!(&got[..], &expect(900, 1_200)[..]);
        let got = ra.read(2_100, 1_000, &fetch).await.unwrap();
        assert_eq!(&got[..], &expect(2_100, 400)[..], "short only at EOF");
    }

    #[tokio::test]
    async fn a_late_request_just_behind_the_reader_is_still_served() {
        let (fetch, calls) = file(10_000);
        let mut ra = ReadAhead::new(1000, 2);
        ra.read(0, 1000, &fetch).await.unwrap();
        ra.read(1000, 200, &fetch).await.unwrap();
        let before = calls.load(Ordering::SeqCst);
        assert!(ra.is_sequential(500), "the window behind is kept");
        let got = ra.read(500, 100, &fetch).await.unwrap();
        assert_eq!(&got[..], &expect(500, 100)[..]);
        assert_eq!(calls.load(Ordering::SeqCst), before, "no new fetch");
    }

    #[tokio::test]
    async fn a_jump_starts_a_new_run_and_a_generation_change_drops_windows() {
        let (fetch, calls) = file(100_000);
        let mut ra = ReadAhead::new(1000, 2);
        ra.read(0, 100, &fetch).await.unwrap();
        assert!(!ra.is_sequential(50_000));
        let got = ra.read(50_000, 100, &fetch).await.unwrap();
        assert_eq!(&got[..], &expect(50_000, 100)[..]);
        let n = calls.load(Ordering::SeqCst);
        ra.sync_generation(7);
        assert!(!ra.is_sequential(50_100) || ra.windows.is_empty());
        let got = ra.read(50_100, 100, &fetch).await.unwrap();
        assert_eq!(&got[..], &expect(50_100, 100)[..]);
        assert!(
            calls.load(Ordering::SeqCst) > n,
            "refetched after the write"
        );
    }
}
