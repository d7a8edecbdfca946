//! Issue 6 through real processes: the dashboard in headless Chromium, `/metrics` against
//! `dfs admin report --json`, decommission, balance, safe mode / setrep / fsck flags with
//! the root check, and the scrubber. Chunks are 1 MiB; repair is throttled with
//! `--max-transfers-per-source 1` where a test must watch it happen.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dash::{
    element_text, element_u64, http_get, must_json_get, parse_prometheus, png_variety, Browser,
};
use common::*;
use serde_json::Value;

/// Puts `n` files of `mib` MiB under /t; returns their sha256 by path.
fn must_put_files(c: &ProcCluster, n: usize, mib: usize) -> HashMap<String, String> {
    let work = tempfile::tempdir().unwrap();
    c.must_dfs(&["mkdir", "-p", "/t"]);
    (0..n)
        .map(|i| {
            let data = test_bytes(mib * CHUNK_SIZE as usize, 100 + i as u64);
            let local = work.path().join(format!("f{i}"));
            std::fs::write(&local, &data).unwrap();
            let path = format!("/t/f{i}");
            c.must_dfs(&["put", local.to_str().unwrap(), &path]);
            (path, sha256(&data))
        })
        .collect()
}

fn must_read_back(c: &ProcCluster, files: &HashMap<String, String>) {
    for (path, want) in files {
        let out = c.dfs(&["cat", path]);
        assert!(
            out.status.success(),
            "cat {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&sha256(&out.stdout), want, "{path}");
    }
}

fn must_healthy(c: &ProcCluster) {
    must_eventually(Duration::from_secs(60), "fsck healthy", || {
        (c.must_json(&["fsck", "--json"])["healthy"] == true).then_some(())
    });
}

fn servers(report: &Value) -> Vec<Value> {
    report["chunkservers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The address of the live chunkserver holding the most replicas (by the master).
fn fullest_server(c: &ProcCluster) -> String {
    must_eventually(Duration::from_secs(30), "chunk counts reported", || {
        let r = c.must_json(&["admin", "report", "--json"]);
        let total: u64 = servers(&r)
            .iter()
            .map(|s| s["chunks"].as_u64().unwrap())
            .sum();
        (total == 3 * r["chunks"].as_u64().unwrap()).then_some(())?;
        servers(&r)
            .iter()
            .max_by_key(|s| s["chunks"].as_u64().unwrap())
            .map(|s| s["addr"].as_str().unwrap().to_string())
    })
}

/// One chunkserver as the dashboard's JSON API shows it.
fn api_server(c: &ProcCluster, addr: &str) -> Option<Value> {
    let list = must_json_get(&c.http, "/api/chunkservers");
    list.as_array()?.iter().find(|s| s["addr"] == addr).cloned()
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn must_screenshot_not_blank(b: &Browser, url: &str, name: &str) -> PathBuf {
    let png = screenshot_dir().join(name);
    let _ = std::fs::remove_file(&png);
    b.screenshot(url, &png, 1280, 1000);
    let (colours, top_share, w, h) = png_variety(&png);
    assert_eq!((w, h), (1280, 1000), "{}", png.display());
    // A blank page is one colour; the dashboard has text, cards, bars and charts.
    assert!(colours >= 16, "{}: only {colours} colours", png.display());
    assert!(
        top_share < 0.95,
        "{}: {:.1}% one colour",
        png.display(),
        top_share * 100.0
    );
    png
}

#[test]
fn dashboard_in_headless_chromium_shows_a_death_and_the_repair() {
    let Some(browser) = Browser::find("dashboard_in_headless_chromium") else {
        return;
    };
    let mut c = ProcCluster::start_with(4, &["--max-transfers-per-source", "1"], None);
    // 60 chunks, ~45 on the server that dies: with one copy per source at a time the repair
    // lasts several seconds, long enough to watch it in the browser.
    let files = must_put_files(&c, 10, 6);
    must_healthy(&c);
    let url = format!("http://{}/", c.http);
    let budget = Duration::from_millis(2500);
    let dom = must_eventually(Duration::from_secs(30), "4 live in the browser", || {
        let d = browser.dump_dom(&url, budget);
        (element_u64(&d, "cs-live") == Some(4) && element_u64(&d, "chunks") == Some(60))
            .then_some(d)
    });
    assert_eq!(element_u64(&dom, "cs-dead"), Some(0));
    assert_eq!(element_u64(&dom, "files"), Some(10));
    assert_eq!(element_u64(&dom, "under-replicated"), Some(0));
    assert_eq!(element_text(&dom, "health").as_deref(), Some("HEALTHY"));
    assert_eq!(element_text(&dom, "standby").as_deref(), Some("none"));
    // The page's script refetched and swapped the page at least once in the browser.
    let refreshed: u64 = dom
        .split("data-refreshed=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(refreshed >= 1, "page script did not refresh: {refreshed}");
    must_screenshot_not_blank(&browser, &url, "1-healthy.png");

    let victim = fullest_server(&c);
    let i = c
        .chunkservers
        .iter()
        .position(|p| p.addr == victim)
        .unwrap();
    c.chunkservers[i].kill9();
    let degraded_now = |d: &str| {
        element_u64(d, "cs-dead") == Some(1) && element_u64(d, "under-replicated").unwrap_or(0) > 0
    };
    let dom = must_eventually(
        Duration::from_secs(60),
        "1 dead and under-replicated in the browser",
        || {
            let d = browser.dump_dom(&url, budget);
            degraded_now(&d).then_some(d)
        },
    );
    assert_eq!(element_u64(&dom, "cs-live"), Some(3));
    assert_eq!(element_text(&dom, "health").as_deref(), Some("DEGRADED"));
    assert!(element_u64(&dom, "copies-needed").unwrap() > 0);
    // Repair only ever lowers the count, so a screenshot between two degraded views is one.
    let degraded = must_screenshot_not_blank(&browser, &url, "2-degraded.png");
    let after = browser.dump_dom(&url, budget);
    assert!(
        degraded_now(&after),
        "repair finished before the screenshot could be checked"
    );
    // The block-health page lists the repair queue with the files the chunks belong to.
    let blocks = browser.dump_dom(&format!("http://{}/blocks", c.http), budget);
    assert!(blocks.contains("id=\"repair-queue\""));

    let dom = must_eventually(
        Duration::from_secs(120),
        "healthy again in the browser",
        || {
            let d = browser.dump_dom(&url, budget);
            (element_text(&d, "health").as_deref() == Some("HEALTHY")).then_some(d)
        },
    );
    assert_eq!(element_u64(&dom, "cs-live"), Some(3));
    assert_eq!(element_u64(&dom, "cs-dead"), Some(1));
    assert_eq!(element_u64(&dom, "under-replicated"), Some(0));
    assert_eq!(element_u64(&dom, "missing"), Some(0));
    let healed = must_screenshot_not_blank(&browser, &url, "3-healed.png");
    assert_ne!(
        std::fs::read(&degraded).unwrap(),
        std::fs::read(&healed).unwrap()
    );
    // Every chunk has 3 replicas on the 3 live servers again, and the data is intact.
    let fsck = c.must_json(&["fsck", "--json", "--locations"]);
    for ch in fsck["chunks_detail"].as_array().unwrap() {
        let r: Vec<&str> = ch["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(r.len(), 3, "{ch}");
        assert!(!r.contains(&victim.as_str()), "{ch}");
    }
    must_read_back(&c, &files);
    println!("screenshots in {}", screenshot_dir().display());
}

#[test]
fn metrics_parse_as_prometheus_text_and_match_admin_report() {
    let c = ProcCluster::start(3);
    must_put_files(&c, 2, 3);
    must_healthy(&c);
    // Heartbeats refresh used/chunks; compare once two reports around the scrape agree.
    let (report, fams) = must_eventually(Duration::from_secs(30), "a stable report", || {
        let before = c.must_json(&["admin", "report", "--json"]);
        let (status, text) = http_get(&c.http, "/metrics");
        assert_eq!(status, 200);
        let after = c.must_json(&["admin", "report", "--json"]);
        let key = |r: &Value| {
            servers(r)
                .iter()
                .map(|s| {
                    (
                        s["addr"].clone(),
                        s["used"].clone(),
                        s["chunks"].clone(),
                        s["capacity"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let settled = servers(&after)
            .iter()
            .map(|s| s["chunks"].as_u64().unwrap())
            .sum::<u64>()
            == 18;
        (settled
            && key(&before) == key(&after)
            && before["used"] == after["used"]
            && before["capacity"] == after["capacity"])
            .then(|| {
                (
                    after,
                    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}")),
                )
            })
    });
    let gauge = |name: &str| {
        let f = fams.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(f.kind, "gauge", "{name}");
        assert!(!f.help.is_empty(), "{name} has no HELP");
        f.get(&[]).unwrap()
    };
    for (metric, key) in [
        ("rdfs_capacity_bytes", "capacity"),
        ("rdfs_used_bytes", "used"),
        ("rdfs_files", "files"),
        ("rdfs_directories", "dirs"),
        ("rdfs_chunks", "chunks"),
        ("rdfs_epoch", "epoch"),
    ] {
        assert_eq!(
            gauge(metric),
            report[key].as_u64().unwrap() as f64,
            "{metric} vs {key}"
        );
    }
    assert_eq!(report["files"], 2);
    assert_eq!(report["chunks"], 6);
    assert_eq!(gauge("rdfs_safe_mode"), 0.0);
    let states = &fams["rdfs_chunkservers"];
    assert_eq!(states.get(&[("state", "live")]), Some(3.0));
    assert_eq!(states.get(&[("state", "dead")]), Some(0.0));
    let problems = &fams["rdfs_problem_chunks"];
    for p in ["under_replicated", "over_replicated", "corrupt", "missing"] {
        assert_eq!(
            problems.get(&[("problem", p)]),
            Some(report[p].as_u64().unwrap() as f64),
            "{p}"
        );
    }
    for s in servers(&report) {
        let addr = s["addr"].as_str().unwrap();
        for (metric, key) in [
            ("rdfs_chunkserver_capacity_bytes", "capacity"),
            ("rdfs_chunkserver_used_bytes", "used"),
            ("rdfs_chunkserver_chunks", "chunks"),
        ] {
            let v = fams[metric]
                .get(&[("addr", addr)])
                .unwrap_or_else(|| panic!("{metric}{{addr={addr}}}"));
            assert_eq!(v, s[key].as_u64().unwrap() as f64, "{metric} {addr}");
        }
        assert_eq!(s["chunks"], 6);
        assert!(s["used"].as_u64().unwrap() >= 6 * CHUNK_SIZE, "{s}");
        assert_eq!(
            fams["rdfs_chunkserver_up"].get(&[("addr", addr)]),
            Some(1.0)
        );
        let hb = fams["rdfs_chunkserver_heartbeat_age_seconds"]
            .get(&[("addr", addr)])
            .unwrap();
        assert!((0.0..2.0).contains(&hb), "heartbeat age {hb}");
    }
    let ops = &fams["rdfs_master_operations_total"];
    assert_eq!(ops.kind, "counter");
    assert!(ops.get(&[("op", "mutations")]).unwrap() >= 5.0);
    assert!(ops.get(&[("op", "write_grants")]).unwrap() >= 6.0);
    assert!(ops.get(&[("op", "heartbeats")]).unwrap() > 0.0);
    // The strict parser refuses what Prometheus would refuse.
    assert!(parse_prometheus("x 1\n").is_err(), "sample without TYPE");
    assert!(parse_prometheus("# TYPE x gauge\nx{a=\"1} 1\n").is_err());
    assert!(parse_prometheus("# TYPE x_total counter\nx_total 1\nx_total 2\n").is_err());
    assert!(parse_prometheus("# TYPE x counter\nx 1\n").is_err());
    // The JSON API behind the overview is the same document plus rates.
    let api = must_json_get(&c.http, "/api/overview");
    assert_eq!(api["cluster_id"], report["cluster_id"]);
    assert_eq!(api["chunkservers_live"], 3);
    assert!(api["rates"]["series"]["mutations"].is_array());
}

#[test]
fn decommission_drains_a_chunkserver_with_progress_on_the_dashboard() {
    let mut c = ProcCluster::start_with(4, &["--max-transfers-per-source", "1"], None);
    let files = must_put_files(&c, 4, 4);
    must_healthy(&c);
    let victim = fullest_server(&c);
    let out = c.must_dfs(&["admin", "decommission", &victim]);
    assert!(out.contains("decommissioning"), "{out}");
    // Watch the JSON API: the victim drains (remaining falls) and ends decommissioned.
    let mut seen_remaining = Vec::new();
    let mut seen_overview = false;
    must_eventually(Duration::from_secs(120), "decommissioned", || {
        let me = api_server(&c, &victim)?;
        match me["state"].as_str()? {
            "decommissioning" => {
                seen_remaining.push(me["decommission_remaining"].as_u64()?);
                if !seen_overview {
                    let o = must_json_get(&c.http, "/api/overview");
                    seen_overview = o["chunkservers_decommissioning"] == 1;
                }
                None
            }
            "decommissioned" => {
                assert_eq!(me["decommission_remaining"], 0);
                Some(())
            }
            other => panic!("unexpected state {other}"),
        }
    });
    assert!(seen_overview, "the overview counted the draining server");
    assert!(
        seen_remaining.first().is_some_and(|r| *r > 0),
        "progress seen: {seen_remaining:?}"
    );
    assert!(
        seen_remaining.windows(2).any(|w| w[1] < w[0]) || seen_remaining.len() == 1,
        "remaining fell: {seen_remaining:?}"
    );
    // Every chunk has 3 replicas on the other servers; then the victim leaves for good.
    let check = |c: &ProcCluster| {
        let fsck = c.must_json(&["fsck", "--json", "--chunks"]);
        assert_eq!(fsck["healthy"], true, "{fsck}");
        for ch in fsck["chunks_detail"].as_array().unwrap() {
            let others = ch["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| *a != victim.as_str())
                .count();
            assert_eq!(others, 3, "{ch}");
            assert_eq!(ch["live"], 3, "{ch}");
        }
    };
    check(&c);
    let i = c
        .chunkservers
        .iter()
        .position(|p| p.addr == victim)
        .unwrap();
    c.chunkservers[i].kill9();
    std::thread::sleep(Duration::from_secs(3)); // past the heartbeat timeout
    check(&c);
    let r = c.must_json(&["admin", "report", "--json"]);
    let me = servers(&r)
        .into_iter()
        .find(|s| s["addr"] == victim.as_str())
        .unwrap();
    assert_eq!(me["state"], "decommissioned");
    assert_eq!(r["under_replicated"], 0);
    must_read_back(&c, &files);
}

#[test]
fn balance_after_adding_an_empty_chunkserver_evens_usage_within_the_threshold() {
    const CAPACITY: u64 = 64 << 20;
    const THRESHOLD: f64 = 5.0;
    let mut c = ProcCluster::start_with(4, &[], Some(CAPACITY));
    let files = must_put_files(&c, 8, 3);
    must_healthy(&c);
    c.add_chunkserver();
    c.wait_live(5);
    let usage = |r: &Value| -> Vec<f64> {
        servers(r)
            .iter()
            .filter(|s| s["state"] == "live")
            .map(|s| {
                s["used"].as_u64().unwrap() as f64 * 100.0 / s["capacity"].as_u64().unwrap() as f64
            })
            .collect()
    };
    let before = c.must_json(&["admin", "report", "--json"]);
    let spread = |u: &[f64]| {
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        u.iter().map(|x| (x - mean).abs()).fold(0.0, f64::max)
    };
    assert!(spread(&usage(&before)) > THRESHOLD, "{:?}", usage(&before));
    let t = Instant::now();
    let out = c.must_dfs(&["admin", "balance", "--threshold", "5"]);
    assert!(out.contains("balanced"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let r = c.must_json(&["admin", "report", "--json"]);
        let u = usage(&r);
        if u.len() == 5 && spread(&u) <= THRESHOLD {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "usage {u:?} not within {THRESHOLD}: {out}\n{r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "balanced in {:.1}s: usage % {after:?}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        after.iter().all(|u| *u > 0.0),
        "the new server got replicas: {after:?}"
    );
    must_healthy(&c);
    let r = c.must_json(&["admin", "report", "--json"]);
    assert_eq!(r["balancer"]["result"], "balanced");
    assert!(r["balancer"]["moves_done"].as_u64().unwrap() > 0);
    must_read_back(&c, &files);
}

/// Runs `dfs` as an unprivileged user.
fn dfs_as_nobody(c: &ProcCluster, args: &[&str]) -> std::process::Output {
    Command::new(dfs_bin())
        .arg("--master")
        .arg(&c.master.addr)
        .args(args)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn safemode_setrep_and_fsck_flags_with_the_root_check() {
    let mut c = ProcCluster::start(4);
    let files = must_put_files(&c, 1, 2);
    must_healthy(&c);
    assert!(c.must_dfs(&["admin", "safemode", "get"]).contains("OFF"));
    // Mutating admin commands need root; reading does not.
    for args in [
        &["admin", "safemode", "enter"][..],
        &["admin", "decommission", &c.chunkservers[0].addr],
        &["admin", "balance"],
        &["setrep", "2", "/t/f0"],
    ] {
        let out = dfs_as_nobody(&c, args);
        assert!(!out.status.success(), "{args:?} as nobody succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("root") || err.contains("ermission"),
            "{args:?}: {err}"
        );
    }
    assert!(dfs_as_nobody(&c, &["admin", "safemode", "get"])
        .status
        .success());
    assert!(c.must_dfs(&["admin", "safemode", "enter"]).contains("ON"));
    let r = c.must_json(&["admin", "report", "--json"]);
    assert_eq!(
        (r["safe_mode"].clone(), r["safe_mode_manual"].clone()),
        (Value::Bool(true), Value::Bool(true))
    );
    let (_, text) = http_get(&c.http, "/metrics");
    assert!(text.contains("\nrdfs_safe_mode 1\n"));
    // A manual safe mode does not end by itself; `wait` gives up after its bound.
    let out = c.dfs(&["admin", "safemode", "wait", "--max-wait", "1s"]);
    assert!(!out.status.success());
    assert!(c.must_dfs(&["admin", "safemode", "leave"]).contains("OFF"));
    assert!(c.must_dfs(&["admin", "safemode", "wait"]).contains("OFF"));

    // setrep: logged, then re-replication / trimming follow.
    let replicas = |c: &ProcCluster| -> Vec<u64> {
        let f = c.must_json(&["fsck", "--json", "--chunks", "/t/f0"]);
        f["chunks_detail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| ch["replicas"].as_array().unwrap().len() as u64)
            .collect()
    };
    assert!(c
        .must_dfs(&["setrep", "-w", "2", "/t/f0"])
        .contains("1 file"));
    must_eventually(Duration::from_secs(30), "2 replicas", || {
        (replicas(&c) == vec![2, 2]).then_some(())
    });
    c.must_dfs(&["setrep", "--wait", "4", "/t"]);
    must_eventually(Duration::from_secs(30), "4 replicas", || {
        (replicas(&c) == vec![4, 4]).then_some(())
    });
    // The factor survives a master restart (replayed from the op log).
    c.restart_master();
    c.wait_live(4);
    let f = c.must_json(&["fsck", "--json", "--files", "/t"]);
    let list = f["files_detail"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0]["path"].as_str(), list[0]["replication"].as_u64()),
        (Some("/t/f0"), Some(4))
    );
    assert_eq!(list[0]["size"], 2 * CHUNK_SIZE);
    // --locations names the servers; --files lists files in text too.
    let text = c.must_dfs(&["fsck", "--files", "--locations", "/t"]);
    assert!(
        text.contains("/t/f0 2097152 bytes, 2 chunks, replication 4: OK"),
        "{text}"
    );
    assert!(text.contains(&format!(" at {}", "127.0.0.1:")), "{text}");
    let bad = c.dfs(&["setrep", "0", "/t/f0"]);
    assert!(!bad.status.success());
    must_read_back(&c, &files);
}

#[test]
fn the_scrubber_finds_an_unread_corrupt_replica_and_the_master_replaces_it() {
    let c = ProcCluster::start(3);
    let files = must_put_files(&c, 1, 1);
    must_healthy(&c);
    let st = c.must_json(&["stat", "--json", "/t/f0"]);
    let chunk = st["chunks"][0]["id"].as_u64().unwrap();
    let (i, path) = (0..3)
        .find_map(|i| c.chunk_files(i, chunk).into_iter().next().map(|p| (i, p)))
        .unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x5A;
    std::fs::write(&path, &bad).unwrap();
    let addr = c.chunkservers[i].addr.clone();
    // Nobody reads the file: only the scrubber can notice.
    let found = must_eventually(Duration::from_secs(60), "scrubber report", || {
        let me = api_server(&c, &addr)?;
        (me["corrupt_found"].as_u64()? >= 1).then_some(me)
    });
    assert_eq!(found["scrub"]["corrupt_found_total"], 1);
    assert_eq!(found["scrub"]["rate_bytes_per_sec"], 8 << 20);
    must_eventually(Duration::from_secs(60), "replaced", || {
        let f = c.must_json(&["fsck", "--json", "--chunks"]);
        (f["healthy"] == true && f["chunks_detail"][0]["replicas"].as_array()?.len() == 3)
            .then_some(())
    });
    // The fresh copy on that server is scrubbed clean in a later pass.
    must_eventually(Duration::from_secs(60), "fresh copy verified", || {
        let me = api_server(&c, &addr)?;
        (me["scrub"]["verified_bytes_total"].as_u64()? >= CHUNK_SIZE).then_some(())
    });
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the replica was replaced byte for byte"
    );
    must_read_back(&c, &files);
}
