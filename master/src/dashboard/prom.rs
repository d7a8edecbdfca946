//! Prometheus text exposition (format 0.0.4) of the cluster status and the operation
//! counters: `rdfs_` prefix, units in names (`_bytes`, `_seconds`), `_total` on counters,
//! one HELP and TYPE line per family.

use std::fmt::Write;

use rdfs_proto::pb::ClusterStatusResponse;

use crate::metrics::{Metrics, RATES};

use super::json::state_counts;

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn gauge(out: &mut String, name: &'static str, help: &str, value: f64) {
    family(out, name, "gauge", help).sample(&[], value);
}

pub fn render(s: &ClusterStatusResponse, metrics: &Metrics) -> String {
    let mut out = String::new();
    let o = &mut out;
    gauge(
        o,
        "rdfs_capacity_bytes",
        "Capacity offered by live chunkservers.",
        s.capacity as f64,
    );
    gauge(
        o,
        "rdfs_used_bytes",
        "Bytes used on live chunkservers.",
        s.used as f64,
    );
    gauge(o, "rdfs_files", "Files in the namespace.", s.files as f64);
    gauge(
        o,
        "rdfs_directories",
        "Directories in the namespace.",
        s.dirs as f64,
    );
    gauge(
        o,
        "rdfs_chunks",
        "Chunks referenced by files.",
        s.chunks as f64,
    );
    let mut f = family(o, "rdfs_chunkservers", "gauge", "Chunkservers by state.");
    for (state, n) in state_counts(s) {
        f.sample(&[("state", state)], n as f64);
    }
    let problems = [
        ("under_replicated", s.under_replicated),
        ("over_replicated", s.over_replicated),
        ("corrupt", s.corrupt),
        ("missing", s.missing),
    ];
    let mut f = family(
        o,
        "rdfs_problem_chunks",
        "gauge",
        "Chunks with a replication problem, by problem.",
    );
    for (problem, n) in problems {
        f.sample(&[("problem", problem)], n as f64);
    }
    gauge(
        o,
        "rdfs_repair_copies_needed",
        "Replica copies still needed for full redundancy.",
        s.repair_copies_needed as f64,
    );
    gauge(
        o,
        "rdfs_repair_copies_in_flight",
        "Replica copies ordered and not yet reported.",
        s.repairs_in_flight as f64,
    );
    let eta = if s.repair_eta_ms < 0 {
        -1.0
    } else {
        s.repair_eta_ms as f64 / 1000.0
    };
    gauge(
        o,
        "rdfs_repair_eta_seconds",
        "Estimated time to full redundancy (-1: unknown).",
        eta,
    );
    gauge(
        o,
        "rdfs_safe_mode",
        "1 while the master is in safe mode.",
        f64::from(u8::from(s.safe_mode)),
    );
    gauge(o, "rdfs_epoch", "Master epoch.", s.epoch as f64);
    gauge(
        o,
        "rdfs_oplog_last_seq",
        "Sequence number of the last op-log record.",
        s.last_op_seq as f64,
    );
    gauge(
        o,
        "rdfs_checkpoint_last_seq",
        "Op-log sequence number the newest checkpoint covers.",
        s.last_checkpoint_seq as f64,
    );
    let lag = s.standby.as_ref().map_or(0, |x| x.lag_ops);
    gauge(
        o,
        "rdfs_standby_lag_ops",
        "Op-log records the standby is behind (0 with no standby).",
        lag as f64,
    );
    gauge(
        o,
        "rdfs_master_scan_duration_seconds",
        "How long the last replication scan held the master's state lock.",
        s.last_scan_us as f64 / 1e6,
    );
    gauge(
        o,
        "rdfs_master_uptime_seconds",
        "Seconds since the master started.",
        s.uptime_ms as f64 / 1000.0,
    );
    let mut f = family(
        o,
        "rdfs_master_operations_total",
        "counter",
        "Operations handled by the master, by kind.",
    );
    for r in RATES {
        f.sample(&[("op", r.name())], metrics.total(r) as f64);
    }
    per_server(o, s);
    out
}

fn per_server(o: &mut String, s: &ClusterStatusResponse) {
    type Get = fn(&rdfs_proto::pb::ChunkserverStatus) -> f64;
    let families: [(&'static str, &str, &str, Get); 10] = [
        (
            "rdfs_chunkserver_up",
            "gauge",
            "1 while the chunkserver heartbeats.",
            |c| f64::from(u8::from(c.state == "live" || c.state == "decommissioning")),
        ),
        (
            "rdfs_chunkserver_capacity_bytes",
            "gauge",
            "Bytes the chunkserver offers.",
            |c| c.capacity as f64,
        ),
        (
            "rdfs_chunkserver_used_bytes",
            "gauge",
            "Bytes the chunkserver uses.",
            |c| c.used as f64,
        ),
        (
            "rdfs_chunkserver_chunks",
            "gauge",
            "Replicas the chunkserver holds.",
            |c| c.chunks as f64,
        ),
        (
            "rdfs_chunkserver_heartbeat_age_seconds",
            "gauge",
            "Seconds since the last heartbeat.",
            |c| c.last_heartbeat_ms as f64 / 1000.0,
        ),
        (
            "rdfs_chunkserver_block_report_age_seconds",
            "gauge",
            "Seconds since the last full block report.",
            |c| c.last_block_report_ms as f64 / 1000.0,
        ),
        (
            "rdfs_chunkserver_corrupt_replicas",
            "gauge",
            "Replicas this chunkserver reported corrupt since it registered.",
            |c| c.corrupt_found as f64,
        ),
        (
            "rdfs_chunkserver_decommission_remaining_chunks",
            "gauge",
            "Chunks a draining chunkserver still holds that lack replicas elsewhere.",
            |c| c.decommission_remaining as f64,
        ),
        (
            "rdfs_chunkserver_scrub_verified_bytes_total",
            "counter",
            "Bytes the scrubber verified since the chunkserver started.",
            |c| c.scrub.map_or(0, |x| x.verified_bytes_total) as f64,
        ),
        (
            "rdfs_chunkserver_scrub_passes_total",
            "counter",
            "Full scrub passes completed since the chunkserver started.",
            |c| c.scrub.map_or(0, |x| x.passes_completed) as f64,
        ),
    ];
    for (name, kind, help, get) in families {
        let mut f = family(o, name, kind, help);
        for c in &s.chunkservers {
            f.sample(&[("addr", &c.addr)], get(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_and_type_and_labels_are_escaped() {
        let s = ClusterStatusResponse {
            capacity: 10,
            chunkservers: vec![rdfs_proto::pb::ChunkserverStatus {
                addr: "a\"b".into(),
                state: "live".into(),
                used: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&s, &Metrics::default());
        assert!(text.contains("# TYPE rdfs_capacity_bytes gauge\nrdfs_capacity_bytes 10\n"));
        assert!(text.contains("rdfs_chunkserver_used_bytes{addr=\"a\\\"b\"} 3\n"));
        assert!(text.contains("rdfs_chunkservers{state=\"live\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
        }
    }
}
