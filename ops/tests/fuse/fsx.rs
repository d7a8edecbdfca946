//! An fsx-style random-operation exerciser: random writes, truncates, reads (plain and
//! through mmap), mmap writes, fsyncs and close/reopen on one file, at offsets near 0,
//! across chunk boundaries and past 4 GiB, checked against an in-memory model after every
//! read. A failure prints the seed, the operation number and the last operations.
//!
//! CI runs a fixed seed for [`CI_OPS`] operations. The long run is ignored:
//! `RDFS_FSX_OPS=100000 [RDFS_FSX_SEED=n] cargo test -p rdfs-ops --test fuse -- --ignored fsx_long`
//! (`RDFS_FSX_DIR=DIR` runs it in an existing directory instead, e.g. a mount started by hand).
//! `fsx_model_agrees_with_a_local_file` runs the same exerciser on local disk, so a model
//! bug cannot pass for a file-system bug.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::*;
use crate::mount::*;

/// Operations of the CI run (fixed seed).
const CI_OPS: u64 = 1_500;
/// The CI seed.
const CI_SEED: u64 = 0x5eed_f5c0_0001;
/// Model granularity.
const PAGE: u64 = 4096;
/// Offsets are drawn around here too: past 4 GiB, where 32-bit offsets would wrap.
const FAR: u64 = 4 << 30;
/// Most bytes one ordinary read or write covers.
const MAX_IO: u64 = 256 << 10;
/// Most bytes of a large write (crosses several 1 MiB chunks).
const MAX_BIG_IO: u64 = 3 << 20;
/// Operations kept for the failure report.
const HISTORY: usize = 40;

/// splitmix64: tiny, seedable, the same on every platform and crate version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// What the file must contain: a size and sparse 4 KiB pages (absent pages are zeros).
#[derive(Default)]
struct Model {
    size: u64,
    pages: HashMap<u64, Box<[u8]>>,
}

impl Model {
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (page, within) = (pos / PAGE, (pos % PAGE) as usize);
            let n = rest.len().min(PAGE as usize - within);
            let p = self
                .pages
                .entry(page)
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
            p[within..within + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            pos += n as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    fn truncate(&mut self, size: u64) {
        if size < self.size {
            self.pages.retain(|page, _| page * PAGE < size);
            if let Some(p) = self.pages.get_mut(&(size / PAGE)) {
                p[(size % PAGE) as usize..].fill(0);
            }
        }
        self.size = size;
    }

    /// What a read of `len` bytes at `offset` returns (clipped at the size).
    fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let end = (offset + len).min(self.size);
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let (page, within) = (pos / PAGE, (pos % PAGE) as usize);
            let n = ((end - pos) as usize).min(PAGE as usize - within);
            if let Some(p) = self.pages.get(&page) {
                let at = (pos - offset) as usize;
                out[at..at + n].copy_from_slice(&p[within..within + n]);
            }
            pos += n as u64;
        }
        out
    }
}

/// One run of the exerciser on the file at `path`.
struct Fsx {
    path: PathBuf,
    rng: Rng,
    model: Model,
    file: File,
    seed: u64,
    op: u64,
    history: VecDeque<String>,
    /// Chunk indexes any write touched: the only ones the file may hold.
    touched: BTreeSet<u64>,
    chunk_size: u64,
    counts: HashMap<&'static str, u64>,
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

impl Fsx {
    fn new(path: &Path, seed: u64, chunk_size: u64) -> Fsx {
        let file = open_rw(path);
        file.set_len(0).unwrap();
        Fsx {
            path: path.to_path_buf(),
            rng: Rng(seed),
            model: Model::default(),
            file,
            seed,
            op: 0,
            history: VecDeque::with_capacity(HISTORY),
            touched: BTreeSet::new(),
            chunk_size,
            counts: HashMap::new(),
        }
    }

    /// An offset near 0, near a chunk boundary, or past 4 GiB.
    fn offset(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=5 => self.rng.below(8 << 20),
            6..=7 => {
                let boundary = (1 + self.rng.below(8)) * self.chunk_size;
                boundary - (64 << 10) + self.rng.below(128 << 10)
            }
            _ => FAR - (3 << 20) + self.rng.below(6 << 20),
        }
    }

    fn len(&mut self) -> u64 {
        match self.rng.below(20) {
            0 => 1 + self.rng.below(MAX_BIG_IO),
            1..=4 => 1 + self.rng.below(64),
            _ => 1 + self.rng.below(MAX_IO),
        }
    }

    fn note(&mut self, what: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!("#{} {what}", self.op));
    }

    fn fail(&self, why: &str) -> ! {
        let ops: Vec<&String> = self.history.iter().collect();
        panic!(
            "fsx: seed {:#x}, operation {}: {why}\nlast operations:\n{}",
            self.seed,
            self.op,
            ops.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn check(&self, what: &str, offset: u64, got: &[u8], want: &[u8]) {
        if got == want {
            return;
        }
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        self.fail(&format!(
            "{what} at {offset}: got {} bytes, want {}; first difference at file offset {}",
            got.len(),
            want.len(),
            offset + first as u64
        ));
    }

    fn step(&mut self) {
        let kind = self.rng.below(100);
        let name = match kind {
            0..=34 => self.write(),
            35..=64 => self.read(),
            65..=71 => self.map_read(),
            72..=77 => self.map_write(),
            78..=89 => self.truncate(),
            90..=93 => {
                self.note("fsync".to_string());
                self.file
                    .sync_all()
                    .unwrap_or_else(|e| self.fail(&format!("fsync: {e}")));
                "fsync"
            }
            _ => {
                self.note("close and reopen".to_string());
                self.file = open_rw(&self.path);
                let len = self.file.metadata().unwrap().len();
                if len != self.model.size {
                    self.fail(&format!(
                        "size {len} after reopen, want {}",
                        self.model.size
                    ));
                }
                "reopen"
            }
        };
        *self.counts.entry(name).or_default() += 1;
        self.op += 1;
    }

    fn write(&mut self) -> &'static str {
        let (offset, len) = (self.offset(), self.len());
        let data = self.rng.bytes(len as usize);
        self.note(format!("write {len} at {offset}"));
        self.file
            .write_all_at(&data, offset)
            .unwrap_or_else(|e| self.fail(&format!("write: {e}")));
        self.model.write(offset, &data);
        let cs = self.chunk_size;
        self.touched.extend(offset / cs..=(offset + len - 1) / cs);
        "write"
    }

    fn read(&mut self) -> &'static str {
        // Sometimes right at or past the end, to check EOF handling.
        let offset = match self.rng.below(8) {
            0 => self.model.size.saturating_sub(self.rng.below(4096)),
            _ => self.offset(),
        };
        let len = self.len();
        self.note(format!("read {len} at {offset}"));
        let mut buf = vec![0u8; len as usize];
        let mut got = 0usize;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => self.fail(&format!("read: {e}")),
            }
        }
        buf.truncate(got);
        let want = self.model.read(offset, len);
        self.check("read", offset, &buf, &want);
        "read"
    }

    /// A page-aligned mapping inside the file: (map offset, map length, offset of the
    /// range inside the mapping, range length); None when the file is empty.
    fn map_range(&mut self) -> Option<(u64, usize, usize, usize)> {
        if self.model.size == 0 {
            return None;
        }
        let mut offset = self.offset();
        if offset >= self.model.size {
            offset = self.rng.below(self.model.size);
        }
        let len = self.len().min(self.model.size - offset);
        let map_at = offset / PAGE * PAGE;
        let map_len = (offset + len - map_at) as usize;
        // Touching a mapped page past the file's end is SIGBUS, which would end the run
        // without a report: check the size the kernel has first.
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size != self.model.size {
            self.fail(&format!(
                "size {size} before mmap, want {}",
                self.model.size
            ));
        }
        Some((map_at, map_len, (offset - map_at) as usize, len as usize))
    }

    /// Maps `map_len` bytes of the file at `map_at` (shared, writable when asked), runs `f`
    /// on them, then (writable) msyncs and unmaps. The range lies inside the file's size,
    /// which nothing changes meanwhile.
    fn with_map<T>(
        &self,
        map_at: u64,
        map_len: usize,
        writable: bool,
        f: impl FnOnce(&mut [u8]) -> T,
    ) -> T {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of `map_len` bytes inside the file's size (checked
        // by `map_range`), used only through the slice below and unmapped before returning.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                map_at as libc::off_t,
            );
            if p == libc::MAP_FAILED {
                self.fail(&format!("mmap: {}", std::io::Error::last_os_error()));
            }
            let out = f(std::slice::from_raw_parts_mut(p.cast::<u8>(), map_len));
            if writable && libc::msync(p, map_len, libc::MS_SYNC) != 0 {
                self.fail(&format!("msync: {}", std::io::Error::last_os_error()));
            }
            libc::munmap(p, map_len);
            out
        }
    }

    fn map_read(&mut self) -> &'static str {
        let Some((map_at, map_len, within, len)) = self.map_range() else {
            return "mapread (empty)";
        };
        let offset = map_at + within as u64;
        self.note(format!("mapread {len} at {offset}"));
        let got = self.with_map(map_at, map_len, false, |bytes| {
            bytes[within..within + len].to_vec()
        });
        let want = self.model.read(offset, len as u64);
        self.check("mapread", offset, &got, &want);
        "mapread"
    }

    fn map_write(&mut self) -> &'static str {
        let Some((map_at, map_len, within, len)) = self.map_range() else {
            return "mapwrite (empty)";
        };
        let offset = map_at + within as u64;
        let data = self.rng.bytes(len);
        self.note(format!("mapwrite {len} at {offset}"));
        self.with_map(map_at, map_len, true, |bytes| {
            bytes[within..within + len].copy_from_slice(&data)
        });
        self.model.write(offset, &data);
        let cs = self.chunk_size;
        self.touched
            .extend(offset / cs..=(offset + len as u64 - 1) / cs);
        "mapwrite"
    }

    fn truncate(&mut self) -> &'static str {
        let size = match self.rng.below(4) {
            0 => self.model.size / 2,
            _ => self.offset(),
        };
        self.note(format!("truncate {} -> {size}", self.model.size));
        self.file
            .set_len(size)
            .unwrap_or_else(|e| self.fail(&format!("truncate: {e}")));
        self.model.truncate(size);
        "truncate"
    }

    /// Reads back every page the model holds and checks the size.
    fn verify_all(&mut self) {
        self.note("verify all".to_string());
        let len = self.file.metadata().unwrap().len();
        if len != self.model.size {
            self.fail(&format!("size {len}, want {}", self.model.size));
        }
        let mut pages: Vec<u64> = self.model.pages.keys().copied().collect();
        pages.sort();
        for page in pages {
            let mut buf = vec![0u8; PAGE as usize];
            let n = self.file.read_at(&mut buf, page * PAGE).unwrap();
            buf.truncate(n);
            let want = self.model.read(page * PAGE, PAGE);
            self.check("verify", page * PAGE, &buf, &want);
        }
    }

    fn run(&mut self, ops: u64) {
        let start = Instant::now();
        for _ in 0..ops {
            self.step();
        }
        self.verify_all();
        let mut counts: Vec<_> = self.counts.iter().collect();
        counts.sort();
        eprintln!(
            "fsx: {} operations, seed {:#x}, {:.1}s, final size {}, {counts:?}",
            self.op,
            self.seed,
            start.elapsed().as_secs_f64(),
            self.model.size
        );
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Runs the exerciser on a mount; checks that holes took no chunks.
fn run_on_mount(ops: u64, seed: u64) {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = FuseMount::start(&c, &work.path().join("mnt"));
    let mut fsx = Fsx::new(&m.path("fsx.bin"), seed, CHUNK_SIZE);
    fsx.run(ops);
    drop(std::mem::replace(
        &mut fsx.file,
        File::open(m.path("fsx.bin")).unwrap(),
    ));
    let st = c.must_json(&["stat", "--json", "/fsx.bin"]);
    assert_eq!(st["size"].as_u64(), Some(fsx.model.size));
    for chunk in st["chunks"].as_array().unwrap() {
        let index = chunk["index"].as_u64().unwrap();
        assert!(
            fsx.touched.contains(&index),
            "chunk {index} exists but no write touched it (holes must take no chunks)"
        );
    }
}

#[test]
fn fsx_fixed_seed_on_the_mount() {
    run_on_mount(CI_OPS, CI_SEED);
}

#[test]
#[ignore = "long: 100,000 operations by default (RDFS_FSX_OPS, RDFS_FSX_SEED)"]
fn fsx_long() {
    let ops = env_u64("RDFS_FSX_OPS").unwrap_or(100_000);
    let seed = env_u64("RDFS_FSX_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("fsx_long: {ops} operations, seed {seed:#x}");
    match std::env::var_os("RDFS_FSX_DIR") {
        // Any directory: a mount started by hand (its logs kept), or another file system.
        Some(dir) => Fsx::new(&Path::new(&dir).join("fsx.bin"), seed, CHUNK_SIZE).run(ops),
        None => run_on_mount(ops, seed),
    }
}

#[test]
fn fsx_model_agrees_with_a_local_file() {
    let work = tempfile::tempdir().unwrap();
    let mut fsx = Fsx::new(&work.path().join("local.bin"), CI_SEED, CHUNK_SIZE);
    fsx.run(CI_OPS);
}
