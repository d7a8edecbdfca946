//! Helpers for dashboard tests: a minimal HTTP GET, a strict Prometheus text-format parser,
//! and headless Chromium (Debian's `chromium`, installed by `.ci/run`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// GET `path` from `addr` over HTTP/1.1; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

pub fn must_json_get(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON {e}: {body}"))
}

/// One metric family of a Prometheus exposition.
#[derive(Debug, Default, Clone)]
pub struct Family {
    pub kind: String,
    pub help: String,
    pub samples: Vec<(BTreeMap<String, String>, f64)>,
}

impl Family {
    /// The value of the sample whose labels include all of `want`.
    pub fn get(&self, want: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(l, _)| {
                want.iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or(format!("bad label in {s:?}"))?;
        if !valid_name(name) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {s:?}")),
            }
        };
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return Err(format!("junk after label value in {s:?}")),
        };
    }
    Ok(out)
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Parses the text format strictly: every sample belongs to a family declared by a TYPE
/// line before it (HELP and TYPE at most once each), names and labels are well formed,
/// no series repeats, counters end in `_total`.
pub fn parse_prometheus(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut seen_series = std::collections::HashSet::new();
    for (no, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", no + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            let f = families.entry(name.to_string()).or_default();
            if !f.help.is_empty() {
                return Err(at("second HELP".into()));
            }
            f.help = help.to_string();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without kind".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(at("counter name without _total".into()));
            }
            let f = families.entry(name.to_string()).or_default();
            if !f.kind.is_empty() || !f.samples.is_empty() {
                return Err(at("TYPE repeated or after samples".into()));
            }
            f.kind = kind.to_string();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
        let value = parse_value(value).map_err(at)?;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(
                    l.strip_suffix('}')
                        .ok_or_else(|| at("unclosed labels".into()))?,
                )
                .map_err(at)?,
            ),
            None => (series, BTreeMap::new()),
        };
        if !valid_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let f = families
            .get_mut(name)
            .filter(|f| !f.kind.is_empty())
            .ok_or_else(|| at("sample without a TYPE line".into()))?;
        if !seen_series.insert((name.to_string(), labels.clone())) {
            return Err(at("duplicate series".into()));
        }
        f.samples.push((labels, value));
    }
    Ok(families)
}

/// Headless Chromium with the flags that work on these machines (no network beyond
/// loopback, no sandbox as root), a fresh profile per call.
pub struct Browser {
    bin: PathBuf,
}

/// How long one Chromium run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

impl Browser {
    /// The browser, or `None` (after a loud message) when Chromium is not installed and
    /// this is not CI. Under CI (`CI` set) a missing Chromium fails the test.
    pub fn find(test: &str) -> Option<Browser> {
        let bin = [
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
        match bin {
            Some(bin) => Some(Browser { bin }),
            None if std::env::var_os("CI").is_some() => {
                panic!("{test}: chromium is not installed but CI is set: .ci/run must install it")
            }
            None => {
                eprintln!("\n!!!!!!!! {test}: SKIPPED: chromium is not installed (apt-get install chromium); CI runs it !!!!!!!!\n");
                None
            }
        }
    }

    fn run(&self, extra: &[String], url: &str) -> String {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "chromium {extra:?} {url} failed: {st}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {extra:?} {url} timed out");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reader.join().unwrap()
    }

    /// The DOM after the page's scripts ran for `budget` of virtual time.
    pub fn dump_dom(&self, url: &str, budget: Duration) -> String {
        self.run(
            &[
                format!("--virtual-time-budget={}", budget.as_millis()),
                "--dump-dom".to_string(),
            ],
            url,
        )
    }

    pub fn screenshot(&self, url: &str, png: &Path, width: u32, height: u32) {
        self.run(
            &[
                format!("--window-size={width},{height}"),
                "--virtual-time-budget=2000".to_string(),
                format!("--screenshot={}", png.display()),
            ],
            url,
        );
        assert!(png.exists(), "no screenshot at {}", png.display());
    }
}

/// Text of the element with `id` (inner text up to the next tag).
pub fn element_text(dom: &str, id: &str) -> Option<String> {
    let open = format!("id=\"{id}\"");
    let at = dom.find(&open)?;
    let start = at + dom[at..].find('>')? + 1;
    let end = start + dom[start..].find('<')?;
    Some(dom[start..end].trim().to_string())
}

pub fn element_u64(dom: &str, id: &str) -> Option<u64> {
    element_text(dom, id)?.parse().ok()
}

/// Decodes a PNG and checks it is not blank: (distinct colours, share of the commonest).
pub fn png_variety(path: &Path) -> (usize, f64, u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let px = info.color_type.samples();
    let mut counts: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for p in bytes.chunks(px) {
        *counts.entry(p).or_default() += 1;
    }
    let total = bytes.len() / px;
    let top = counts.values().copied().max().unwrap_or(0);
    (
        counts.len(),
        top as f64 / total as f64,
        info.width,
        info.height,
    )
}
