//! The dashboard's pages, rendered on the master from the same JSON values the API serves.
//! Everything is inline (CSS, a few lines of JS, SVG charts): no external asset, so it works
//! on an air-gapped cluster. The script refetches the page every `REFRESH_MS` and swaps
//! `<main>`, counting successful refreshes in `body[data-refreshed]`.

use std::fmt::Write;

use serde_json::Value;

/// How often an open page refreshes itself.
const REFRESH_MS: u64 = 2000;
const CHART_WIDTH: f64 = 320.0;
const CHART_HEIGHT: f64 = 64.0;

const CSS: &str = "body{font:14px system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1d2630}\
header{background:#1d2630;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:center}\
header a{color:#cfe3ff;text-decoration:none}header a.on{color:#fff;font-weight:bold}\
#updated{margin-left:auto;color:#9fb0c0;font-size:12px}main{padding:16px 20px}\
.banner{padding:12px 16px;border-radius:6px;font-size:18px;font-weight:bold;margin-bottom:14px}\
.ok{background:#d6f5dd;color:#11612a}.warn{background:#ffe9c7;color:#8a4b00}.bad{background:#ffd6d6;color:#8d1111}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px}\
.card{background:#fff;border-radius:6px;padding:10px 14px;box-shadow:0 1px 2px #0002}\
.card .k{color:#5b6b7b;font-size:12px;text-transform:uppercase}.card .v{font-size:22px;font-weight:600}\
table{border-collapse:collapse;background:#fff;width:100%;margin:8px 0 18px}\
th,td{padding:5px 9px;border-bottom:1px solid #e3e8ee;text-align:left;font-size:13px}\
th{background:#e9eef3}.bar{background:#e3e8ee;border-radius:3px;height:10px;width:120px;display:inline-block}\
.bar i{display:block;height:10px;border-radius:3px;background:#3b82f6}\
.s-live{color:#11612a}.s-dead{color:#b91c1c;font-weight:bold}.s-decommissioning{color:#b45309}\
.s-decommissioned{color:#6b7280}td.m0{background:#fca5a5}td.mu{background:#fde68a}td.mok{background:#bbf7d0}\
td.mo{background:#bfdbfe}h2{font-size:16px;margin:18px 0 6px}svg{background:#fff;border-radius:4px}";

const SCRIPT: &str = "(function(){const b=document.body;b.dataset.refreshed='0';\
async function tick(){const u=document.getElementById('updated');try{\
const r=await fetch(location.pathname,{cache:'no-store'});if(!r.ok)throw new Error('HTTP '+r.status);\
const d=new DOMParser().parseFromString(await r.text(),'text/html');const m=d.getElementById('main');\
if(m)document.getElementById('main').replaceWith(m);b.dataset.refreshed=String(Number(b.dataset.refreshed)+1);\
u.textContent='updated '+new Date().toLocaleTimeString();}catch(e){u.textContent='master unreachable: '+e.message;}}\
setInterval(tick,REFRESH);tick();})();";

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < UNITS.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", UNITS[i])
    }
}

fn age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=119_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min", ms / 60_000),
    }
}

fn eta(ms: i64) -> String {
    match ms {
        0 => "now (fully replicated)".into(),
        x if x < 0 => "unknown (no copy completed in the last minute)".into(),
        x => format!("about {}", age(x as u64)),
    }
}

fn bar(used: u64, total: u64) -> String {
    let pct = if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    };
    format!(
        r#"<span class="bar"><i style="width:{:.1}%"></i></span> {pct:.1}%"#,
        pct.min(100.0)
    )
}

fn page(title: &str, active: &str, body: &str) -> String {
    let nav = [
        ("/", "Overview"),
        ("/chunkservers", "Chunkservers"),
        ("/blocks", "Block health"),
        ("/metrics", "Metrics"),
    ]
    .iter()
    .map(|(href, name)| {
        let on = if *name == active { " class=\"on\"" } else { "" };
        format!(r#"<a href="{href}"{on}>{name}</a>"#)
    })
    .collect::<String>();
    let script = SCRIPT.replace("REFRESH", &REFRESH_MS.to_string());
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>rdfs · {}</title>\
<style>{CSS}</style></head><body><header><b>rdfs</b>{nav}<span id=\"updated\"></span></header>\
<main id=\"main\">{body}</main><script>{script}</script></body></html>",
        esc(title)
    )
}

fn card(out: &mut String, id: &str, key: &str, value: &str) {
    let _ = write!(
        out,
        r#"<div class="card"><div class="k">{key}</div><div class="v" id="{id}">{value}</div></div>"#
    );
}

/// A sparkline of one rate series (`[[unix_ms, per_sec], ...]`).
fn chart(name: &str, points: &[Value]) -> String {
    let mut vals: Vec<f64> = points
        .iter()
        .map(|p| p[1].as_f64().unwrap_or(0.0))
        .collect();
    // One sample (the first interval after start) draws as a flat line, not nothing.
    if vals.len() == 1 {
        vals.push(vals[0]);
    }
    let max = vals.iter().copied().fold(0.0_f64, f64::max).max(1e-9);
    let last = vals.last().copied().unwrap_or(0.0);
    let step = if vals.len() > 1 {
        CHART_WIDTH / (vals.len() - 1) as f64
    } else {
        0.0
    };
    let pts: String = vals
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1} ",
                i as f64 * step,
                CHART_HEIGHT - 4.0 - v / max * (CHART_HEIGHT - 8.0)
            )
        })
        .collect();
    format!(
        r##"<div class="card"><div class="k">{} /s · now {last:.1} · peak {max:.1}</div><svg width="100%" height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" preserveAspectRatio="none"><polyline fill="none" stroke="#3b82f6" stroke-width="2" points="{pts}"/></svg></div>"##,
        esc(&name.replace('_', " "))
    )
}

pub fn overview(v: &Value) -> String {
    let mut b = String::new();
    let healthy = v["healthy"].as_bool().unwrap_or(false);
    let safe = v["safe_mode"].as_bool().unwrap_or(false);
    let (class, text) = match (safe, healthy) {
        (true, _) => ("warn", "SAFE MODE"),
        (false, true) => ("ok", "HEALTHY"),
        (false, false) if n(v, "missing") > 0 => ("bad", "DATA MISSING"),
        _ => ("warn", "DEGRADED"),
    };
    let repair = &v["repair"];
    let _ = write!(
        b,
        r#"<div class="banner {class}"><span id="health">{text}</span> <small>· repair: <span id="copies-needed">{}</span> copies needed, {} in flight, time to full redundancy: <span id="eta">{}</span></small></div><div class="grid">"#,
        n(repair, "copies_needed"),
        n(repair, "in_flight"),
        eta(repair["eta_ms"].as_i64().unwrap_or(-1))
    );
    let cap = n(v, "capacity");
    let used = n(v, "used");
    card(&mut b, "capacity", "Capacity", &human_bytes(cap));
    card(
        &mut b,
        "used",
        "Used",
        &format!("{}<br>{}", human_bytes(used), bar(used, cap)),
    );
    card(&mut b, "free", "Free", &human_bytes(n(v, "free")));
    for (id, key) in [
        ("files", "Files"),
        ("dirs", "Directories"),
        ("chunks", "Chunks"),
    ] {
        card(&mut b, id, key, &n(v, id).to_string());
    }
    for state in ["live", "dead", "decommissioning", "decommissioned"] {
        let id = format!("cs-{state}");
        card(
            &mut b,
            &id,
            &format!("Chunkservers {state}"),
            &n(v, &format!("chunkservers_{state}")).to_string(),
        );
    }
    for (id, key) in [
        ("under_replicated", "Under-replicated"),
        ("over_replicated", "Over-replicated"),
        ("corrupt", "Corrupt"),
        ("missing", "Missing"),
    ] {
        card(&mut b, &id.replace('_', "-"), key, &n(v, id).to_string());
    }
    let safe_text = match (safe, v["safe_mode_manual"].as_bool().unwrap_or(false)) {
        (false, _) => "off".to_string(),
        (true, true) => "ON (operator)".to_string(),
        (true, false) => format!(
            "ON ({} of {} chunks reported)",
            n(v, "safe_mode_reported_chunks"),
            n(v, "chunks")
        ),
    };
    card(&mut b, "safe-mode", "Safe mode", &safe_text);
    card(&mut b, "epoch", "Epoch", &n(v, "epoch").to_string());
    let sb = &v["standby"];
    let standby = if s(sb, "state") == "none" {
        "none".to_string()
    } else {
        format!(
            "{} {} · lag {} ops",
            esc(s(sb, "state")),
            esc(s(sb, "addr")),
            n(sb, "lag_ops")
        )
    };
    card(&mut b, "standby", "Standby", &standby);
    card(
        &mut b,
        "last-op-seq",
        "Last op seq",
        &n(v, "last_op_seq").to_string(),
    );
    card(
        &mut b,
        "checkpoint",
        "Last checkpoint (seq)",
        &n(v, "last_checkpoint_seq").to_string(),
    );
    card(&mut b, "uptime", "Master uptime", &age(n(v, "uptime_ms")));
    let scan_ms = n(v, "last_scan_us") as f64 / 1000.0;
    card(
        &mut b,
        "scan",
        "Last scan (lock held)",
        &format!("{scan_ms:.1} ms"),
    );
    let bal = &v["balancer"];
    let balancer = match (bal["running"].as_bool().unwrap_or(false), s(bal, "result")) {
        (true, _) => format!(
            "running · {} moved · max deviation {:.1} pts",
            n(bal, "moves_done"),
            bal["max_deviation_percent"].as_f64().unwrap_or(0.0)
        ),
        (false, "") => "idle".into(),
        (false, r) => format!("{} · {} moved", esc(r), n(bal, "moves_done")),
    };
    card(&mut b, "balancer", "Balancer", &balancer);
    b.push_str("</div><h2>Operation rates (last hour)</h2><div class=\"grid\">");
    if let Some(series) = v["rates"]["series"].as_object() {
        for (name, pts) in series {
            b.push_str(&chart(
                name,
                pts.as_array().map(Vec::as_slice).unwrap_or(&[]),
            ));
        }
    }
    b.push_str("</div><p><a href=\"/api/overview\">JSON</a></p>");
    page("overview", "Overview", &b)
}

fn scrub_cell(sc: &Value) -> String {
    let total = n(sc, "pass_chunks_total");
    let done = n(sc, "pass_chunks_done");
    if n(sc, "rate_bytes_per_sec") == 0 {
        return "off".into();
    }
    format!(
        "{} · pass {} · {} verified",
        bar(done, total.max(1)),
        n(sc, "passes_completed") + 1,
        human_bytes(n(sc, "verified_bytes_total"))
    )
}

fn server_row(out: &mut String, c: &Value) {
    let state = s(c, "state");
    let drain = if state == "decommissioning" {
        format!(" ({} left)", n(c, "decommission_remaining"))
    } else {
        String::new()
    };
    let _ = write!(
        out,
        r#"<tr><td><a href="/chunkservers/{id}">{addr}</a></td><td class="s-{state}">{state}{drain}</td><td>{cap}</td><td>{used} {bar}</td><td>{chunks}</td><td>{hb}</td><td>{br} ago · {brn} chunks</td><td>{bad}</td><td>{scrub}</td></tr>"#,
        id = n(c, "id"),
        addr = esc(s(c, "addr")),
        state = esc(state),
        cap = human_bytes(n(c, "capacity")),
        used = human_bytes(n(c, "used")),
        bar = bar(n(c, "used"), n(c, "capacity")),
        chunks = n(c, "chunks"),
        hb = age(n(c, "last_heartbeat_ms")),
        br = age(n(c, "last_block_report_ms")),
        brn = n(c, "last_block_report_chunks"),
        bad = n(c, "corrupt_found"),
        scrub = scrub_cell(&c["scrub"]),
    );
}

const SERVER_HEAD: &str = "<tr><th>Address</th><th>State</th><th>Capacity</th><th>Used</th><th>Chunks</th><th>Last heartbeat</th><th>Last block report</th><th>Corrupt found</th><th>Scrubber</th></tr>";

pub fn chunkservers(list: &[Value]) -> String {
    let mut b = format!(
        "<h2>Chunkservers ({})</h2><table id=\"chunkservers\">{SERVER_HEAD}",
        list.len()
    );
    for c in list {
        server_row(&mut b, c);
    }
    b.push_str("</table><p><a href=\"/api/chunkservers\">JSON</a></p>");
    page("chunkservers", "Chunkservers", &b)
}

fn chunk_table(out: &mut String, id: &str, rows: &[Value]) {
    let _ = write!(out, "<table id=\"{id}\"><tr><th>Chunk</th><th>File</th><th>Index</th><th>Version</th><th>Live / expected</th><th>Problem</th><th>Copies in flight</th><th>Replicas</th></tr>");
    for c in rows {
        let replicas: Vec<String> = c["replicas"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(esc).collect())
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            n(c, "chunk_id"),
            esc(s(c, "path")),
            n(c, "index"),
            n(c, "version"),
            n(c, "live"),
            n(c, "expected"),
            esc(s(c, "problem")),
            n(c, "in_flight"),
            replicas.join(", ")
        );
    }
    out.push_str("</table>");
}

pub fn chunkserver(c: &Value) -> String {
    let mut b = format!(
        "<h2>Chunkserver {}</h2><table>{SERVER_HEAD}",
        esc(s(c, "addr"))
    );
    server_row(&mut b, c);
    b.push_str("</table><div class=\"grid\">");
    let sc = &c["scrub"];
    for (id, key, val) in [
        (
            "queued",
            "Queued commands",
            n(c, "queued_commands").to_string(),
        ),
        (
            "transfers",
            "Copies it is sending",
            n(c, "active_transfers").to_string(),
        ),
        (
            "drain-left",
            "Decommission: chunks left",
            n(c, "decommission_remaining").to_string(),
        ),
        (
            "scrub-passes",
            "Scrub passes completed",
            n(sc, "passes_completed").to_string(),
        ),
        (
            "scrub-pass",
            "Scrub pass progress",
            format!(
                "{} / {}",
                n(sc, "pass_chunks_done"),
                n(sc, "pass_chunks_total")
            ),
        ),
        (
            "scrub-rate",
            "Scrub rate bound",
            format!("{}/s", human_bytes(n(sc, "rate_bytes_per_sec"))),
        ),
        (
            "scrub-corrupt",
            "Corrupt found by scrubber",
            n(sc, "corrupt_found_total").to_string(),
        ),
    ] {
        card(&mut b, id, key, &val);
    }
    let _ = write!(
        b,
        "</div><h2>Chunks held ({}; first {} listed)</h2>",
        n(c, "chunks_held"),
        c["chunk_list"].as_array().map_or(0, Vec::len)
    );
    chunk_table(
        &mut b,
        "chunks",
        c["chunk_list"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    let _ = write!(
        b,
        "<p><a href=\"/api/chunkservers/{}\">JSON</a></p>",
        n(c, "id")
    );
    page(&format!("chunkserver {}", s(c, "addr")), "Chunkservers", &b)
}

fn matrix(out: &mut String, cells: &[Value]) {
    let max_live = cells.iter().map(|c| n(c, "live")).max().unwrap_or(0);
    let mut expected: Vec<u64> = cells.iter().map(|c| n(c, "expected")).collect();
    expected.dedup();
    out.push_str("<table id=\"matrix\"><tr><th>expected \\ live</th>");
    for live in 0..=max_live {
        let _ = write!(out, "<th>{live}</th>");
    }
    out.push_str("</tr>");
    for e in expected {
        let _ = write!(out, "<tr><th>{e}</th>");
        for live in 0..=max_live {
            let count = cells
                .iter()
                .find(|c| n(c, "expected") == e && n(c, "live") == live)
                .map_or(0, |c| n(c, "chunks"));
            let class = match live {
                _ if count == 0 => "",
                0 => "m0",
                l if l < e => "mu",
                l if l == e => "mok",
                _ => "mo",
            };
            let _ = write!(
                out,
                "<td class=\"{class}\">{}</td>",
                if count == 0 {
                    String::new()
                } else {
                    count.to_string()
                }
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

pub fn blocks(v: &Value) -> String {
    let mut b = String::new();
    let healthy = v["healthy"].as_bool().unwrap_or(false);
    let repair = &v["repair"];
    let _ = write!(
        b,
        r#"<div class="banner {}">{} · {} copies needed, {} in flight, {:.2} copies/s, time to full redundancy: {}</div><div class="grid">"#,
        if healthy { "ok" } else { "warn" },
        if healthy { "HEALTHY" } else { "REPAIRING" },
        n(repair, "copies_needed"),
        n(repair, "in_flight"),
        repair["copies_per_sec"].as_f64().unwrap_or(0.0),
        eta(repair["eta_ms"].as_i64().unwrap_or(-1))
    );
    for (id, key) in [
        ("chunks", "Chunks"),
        ("under_replicated", "Under-replicated"),
        ("over_replicated", "Over-replicated"),
        ("corrupt", "Corrupt"),
        ("missing", "Missing"),
    ] {
        card(&mut b, &id.replace('_', "-"), key, &n(v, id).to_string());
    }
    b.push_str("</div><h2>Replication matrix (chunks by expected and live replicas)</h2>");
    matrix(
        &mut b,
        v["matrix"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    let _ = write!(
        b,
        "<h2>Repair queue, in repair order ({} chunks; first {} listed)</h2>",
        n(v, "repair_queue_total"),
        v["repair_queue"].as_array().map_or(0, Vec::len)
    );
    chunk_table(
        &mut b,
        "repair-queue",
        v["repair_queue"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]),
    );
    let _ = write!(
        b,
        "<h2>Problem chunks ({}; first {} listed)</h2>",
        n(v, "problems_total"),
        v["problems"].as_array().map_or(0, Vec::len)
    );
    chunk_table(
        &mut b,
        "problems",
        v["problems"].as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    b.push_str("<p><a href=\"/api/blocks\">JSON</a></p>");
    page("block health", "Block health", &b)
}

pub fn not_found(what: &str) -> String {
    page(
        "not found",
        "",
        &format!("<div class=\"banner bad\">{}: not found</div>", esc(what)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn points_attr(svg: &str) -> Vec<(f64, f64)> {
        let pts = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        pts.split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn charts_scale_to_the_peak_and_a_single_sample_still_draws() {
        let one = chart("mutations", &[json!([1, 5.0])]);
        assert_eq!(points_attr(&one), vec![(0.0, 4.0), (CHART_WIDTH, 4.0)]);
        let two = chart("heartbeats", &[json!([1, 0.0]), json!([2, 10.0])]);
        assert_eq!(
            points_attr(&two),
            vec![(0.0, CHART_HEIGHT - 4.0), (CHART_WIDTH, 4.0)]
        );
        assert!(two.contains("heartbeats /s · now 10.0 · peak 10.0"));
        assert!(esc("<a&\"b>") == "&lt;a&amp;&quot;b&gt;");
    }
}
