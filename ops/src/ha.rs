//! `dfs admin failover` and `dfs admin ha`: the hot-standby tools.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdfs_client::{Client, ClientConfig};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct HaArgs {
    /// One JSON array of the masters: addr, role, epoch, last_op_seq, lease_valid, standby.
    #[arg(long)]
    pub json: bool,
}

/// Hands over from the primary to its in-sync standby and prints the new primary.
pub async fn failover(client: &Client) -> anyhow::Result<()> {
    let r = client.failover().await.context("failover")?;
    println!("new primary: {} (epoch {})", r.new_primary, r.epoch);
    Ok(())
}

/// Asks every master in the list, one by one, what it is.
pub async fn status(masters: &[String], timeout: Duration, args: HaArgs) -> anyhow::Result<()> {
    let mut rows: Vec<Value> = Vec::new();
    for addr in masters {
        let mut cfg = ClientConfig::new(vec![addr.clone()]);
        cfg.timeout = timeout;
        let answer = match Client::connect(cfg).await {
            Ok(c) => c.cluster_status().await,
            Err(e) => Err(e),
        };
        rows.push(match answer {
            Ok(s) => json!({
                "addr": addr,
                "role": s.role,
                "epoch": s.epoch,
                "last_op_seq": s.last_op_seq,
                "lease_valid": s.lease_valid,
                "witnesses": s.witnesses,
                "primary": s.primary_addr,
                "standby": s.standby.filter(|b| b.state != "none").map(|b| json!({
                    "addr": b.addr,
                    "state": b.state,
                    "acked_seq": b.acked_seq,
                    "lag_ops": b.lag_ops,
                    "lag_ms": b.lag_ms,
                })),
            }),
            Err(e) => json!({"addr": addr, "role": "unreachable", "error": e.to_string()}),
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", Value::Array(rows))?;
        return Ok(());
    }
    for r in &rows {
        let standby = match &r["standby"] {
            Value::Object(b) => format!(
                "  standby {} {} (lag {} ops, {} ms)",
                b["addr"].as_str().unwrap_or("?"),
                b["state"].as_str().unwrap_or("?"),
                b["lag_ops"],
                b["lag_ms"]
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<22} {:<12} epoch {:<4} seq {:<10}{standby}",
            r["addr"].as_str().unwrap_or("?"),
            r["role"].as_str().unwrap_or("?"),
            r["epoch"],
            r["last_op_seq"],
        )?;
    }
    Ok(())
}
