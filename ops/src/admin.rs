//! `dfs admin report | safemode | decommission | balance` and `dfs setrep`. The JSON of
//! `admin report --json` is the dashboard's `/api/overview` document without the rates
//! (`rdfs_master::dashboard::status_json`), so scripts, the dashboard and `/metrics` agree.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rdfs_client::Client;
use rdfs_master::balance::DEFAULT_BALANCE_THRESHOLD_PERCENT;
use rdfs_master::dashboard::{human_bytes, status_json};
use rdfs_proto::pb::{BalanceAction, BalancerInfo, ClusterStatusResponse, SafeModeAction};

use crate::format::dfs_path;

/// How often waiting commands poll the master.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Default bound on `safemode wait`, `decommission --wait`, `balance` and `setrep --wait`.
const DEFAULT_MAX_WAIT: &str = "1h";

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Cluster summary and one row per chunkserver (`--json` for scripts).
    Report(ReportArgs),
    /// Safe mode: the master deletes nothing and grants no writes while in it.
    Safemode {
        #[command(subcommand)]
        action: SafemodeCommand,
    },
    /// Drain a chunkserver (HOST:PORT of its data plane) so it can leave; needs root.
    Decommission(DecommissionArgs),
    /// Move replicas until every chunkserver's usage is within a threshold of the mean;
    /// waits until done. Needs root.
    Balance(BalanceArgs),
    /// Hand over from the primary master to its in-sync standby (clean, no lost operation).
    Failover,
    /// Show each master's role, epoch, last op seq and standby state.
    Ha(crate::ha::HaArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SafemodeCommand {
    /// Print whether the master is in safe mode.
    Get,
    /// Enter safe mode (stays until `leave`); needs root.
    Enter,
    /// Leave safe mode now; needs root.
    Leave,
    /// Wait until the master has left safe mode.
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Give up after this long.
    #[arg(long, default_value = DEFAULT_MAX_WAIT, value_parser = humantime::parse_duration)]
    max_wait: Duration,
}

#[derive(Debug, Args)]
pub struct DecommissionArgs {
    /// The chunkserver's data-plane address, as `dfs admin report` shows it.
    addr: String,
    /// Put it back in service instead.
    #[arg(long)]
    cancel: bool,
    /// Wait until it is decommissioned, printing progress.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    wait_for: WaitArgs,
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Allowed distance of each chunkserver's usage from the mean, in percentage points.
    #[arg(long, default_value_t = DEFAULT_BALANCE_THRESHOLD_PERCENT)]
    threshold: f64,
    /// Start it and return at once.
    #[arg(long)]
    no_wait: bool,
    /// Stop a running balancer.
    #[arg(long, conflicts_with = "no_wait")]
    stop: bool,
    #[command(flatten)]
    wait_for: WaitArgs,
}

#[derive(Debug, Args)]
pub struct SetrepArgs {
    /// New replication factor.
    replication: u32,
    /// File, or directory (every file under it).
    path: String,
    /// Wait until the chunks under PATH have exactly that many replicas.
    #[arg(short = 'w', long)]
    wait: bool,
    #[command(flatten)]
    wait_for: WaitArgs,
}

pub async fn run(client: &Client, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Report(a) => report(client, a).await,
        AdminCommand::Safemode { action } => safemode(client, action).await,
        AdminCommand::Decommission(a) => decommission(client, a).await,
        AdminCommand::Balance(a) => balance(client, a).await,
        AdminCommand::Failover => crate::ha::failover(client).await,
        AdminCommand::Ha(_) => anyhow::bail!("`admin ha` asks each master itself"),
    }
}

/// Polls `check` until it returns `Some`, at most `max_wait`.
async fn wait_until<T, F, Fut>(what: &str, max_wait: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + max_wait;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: still not done after {}",
                humantime::format_duration(max_wait)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn pct(used: u64, cap: u64) -> f64 {
    if cap == 0 {
        0.0
    } else {
        used as f64 * 100.0 / cap as f64
    }
}

fn eta_text(ms: i64) -> String {
    match ms {
        0 => "none needed".into(),
        x if x < 0 => "unknown".into(),
        x => humantime::format_duration(Duration::from_secs((x as u64).div_ceil(1000))).to_string(),
    }
}

async fn report(client: &Client, args: ReportArgs) -> anyhow::Result<()> {
    let s = client.cluster_status().await.context("cluster status")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", status_json(&s))?;
        return Ok(());
    }
    print_summary(&mut out, &s)?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<22} {:<16} {:>10} {:>10} {:>6} {:>7} {:>9} {:>10} {:>7} {:>10}",
        "Chunkserver",
        "State",
        "Capacity",
        "Used",
        "Use%",
        "Chunks",
        "Heartbeat",
        "BlkReport",
        "Corrupt",
        "Scrubbed"
    )?;
    for c in &s.chunkservers {
        let state = if c.state == "decommissioning" {
            format!("draining({})", c.decommission_remaining)
        } else {
            c.state.clone()
        };
        let scrub = c.scrub.unwrap_or_default();
        writeln!(
            out,
            "{:<22} {:<16} {:>10} {:>10} {:>5.1}% {:>7} {:>8.1}s {:>9.1}s {:>7} {:>10}",
            c.addr,
            state,
            human_bytes(c.capacity),
            human_bytes(c.used),
            pct(c.used, c.capacity),
            c.chunks,
            c.last_heartbeat_ms as f64 / 1000.0,
            c.last_block_report_ms as f64 / 1000.0,
            c.corrupt_found,
            human_bytes(scrub.verified_bytes_total),
        )?;
    }
    Ok(())
}

fn print_summary(out: &mut impl Write, s: &ClusterStatusResponse) -> anyhow::Result<()> {
    let healthy = s.under_replicated + s.over_replicated + s.corrupt + s.missing == 0;
    let count = |st: &str| s.chunkservers.iter().filter(|c| c.state == st).count();
    let standby = s.standby.clone().unwrap_or_default();
    writeln!(
        out,
        "Cluster {} (chunk size {}, replication {})",
        s.cluster_id,
        human_bytes(s.chunk_size),
        s.replication
    )?;
    writeln!(
        out,
        "Status: {}{}",
        if healthy { "HEALTHY" } else { "UNHEALTHY" },
        if s.safe_mode { " (safe mode)" } else { "" }
    )?;
    writeln!(
        out,
        "Capacity {} · used {} ({:.1}%) · free {}",
        human_bytes(s.capacity),
        human_bytes(s.used),
        pct(s.used, s.capacity),
        human_bytes(s.capacity.saturating_sub(s.used))
    )?;
    writeln!(
        out,
        "Files {} · directories {} · chunks {}",
        s.files, s.dirs, s.chunks
    )?;
    writeln!(
        out,
        "Chunkservers: {} live, {} dead, {} decommissioning, {} decommissioned",
        count("live"),
        count("dead"),
        count("decommissioning"),
        count("decommissioned")
    )?;
    writeln!(
        out,
        "Chunks: {} under-replicated, {} over-replicated, {} corrupt, {} missing",
        s.under_replicated, s.over_replicated, s.corrupt, s.missing
    )?;
    writeln!(
        out,
        "Repair: {} copies needed, {} in flight, time to full redundancy {}",
        s.repair_copies_needed,
        s.repairs_in_flight,
        eta_text(s.repair_eta_ms)
    )?;
    writeln!(
        out,
        "Safe mode: {} · epoch {} · standby: {} · last op seq {} · last checkpoint seq {}",
        match (s.safe_mode, s.safe_mode_manual) {
            (false, _) => "off",
            (true, true) => "ON (operator)",
            (true, false) => "ON",
        },
        s.epoch,
        standby.state,
        s.last_op_seq,
        s.last_checkpoint_seq
    )?;
    if let Some(b) = &s.balancer {
        if b.running || !b.result.is_empty() {
            writeln!(out, "Balancer: {}", balancer_text(b))?;
        }
    }
    Ok(())
}

fn balancer_text(b: &BalancerInfo) -> String {
    let state = if b.running {
        "running"
    } else {
        b.result.as_str()
    };
    format!(
        "{state}; {} moves done, {} in flight; max deviation {:.1} points (threshold {:.1})",
        b.moves_done, b.moves_in_flight, b.max_deviation_percent, b.threshold_percent
    )
}

async fn safemode(client: &Client, cmd: SafemodeCommand) -> anyhow::Result<()> {
    let action = match &cmd {
        SafemodeCommand::Get | SafemodeCommand::Wait(_) => SafeModeAction::Get,
        SafemodeCommand::Enter => SafeModeAction::Enter,
        SafemodeCommand::Leave => SafeModeAction::Leave,
    };
    let print = |r: &rdfs_proto::pb::SafeModeResponse| {
        let detail = if r.manual {
            " (entered by an operator)".to_string()
        } else if r.safe_mode {
            format!(
                " ({} of {} chunks reported)",
                r.reported_chunks, r.total_chunks
            )
        } else {
            String::new()
        };
        println!(
            "Safe mode is {}{detail}",
            if r.safe_mode { "ON" } else { "OFF" }
        );
    };
    if let SafemodeCommand::Wait(w) = cmd {
        let r = wait_until("safemode wait", w.max_wait, || async {
            let r = client
                .safe_mode(SafeModeAction::Get)
                .await
                .context("safemode")?;
            Ok((!r.safe_mode).then_some(r))
        })
        .await?;
        print(&r);
        return Ok(());
    }
    let r = client.safe_mode(action).await.context("safemode")?;
    print(&r);
    Ok(())
}

async fn decommission(client: &Client, a: DecommissionArgs) -> anyhow::Result<()> {
    let r = client
        .decommission(&a.addr, a.cancel)
        .await
        .with_context(|| a.addr.clone())?;
    println!(
        "{}: {} ({} chunks still need replicas elsewhere)",
        a.addr, r.state, r.remaining
    );
    if !a.wait || a.cancel {
        return Ok(());
    }
    wait_until(&a.addr, a.wait_for.max_wait, || async {
        let s = client.cluster_status().await.context("cluster status")?;
        let c = s
            .chunkservers
            .iter()
            .find(|c| c.addr == a.addr && c.state != "dead")
            .or_else(|| s.chunkservers.iter().find(|c| c.addr == a.addr))
            .with_context(|| format!("{}: no longer known to the master", a.addr))?;
        if c.state == "decommissioned" {
            println!("{}: decommissioned; it can be stopped", a.addr);
            return Ok(Some(()));
        }
        println!(
            "{}: {} ({} chunks left)",
            a.addr, c.state, c.decommission_remaining
        );
        Ok(None)
    })
    .await
}

async fn balance(client: &Client, a: BalanceArgs) -> anyhow::Result<()> {
    if a.stop {
        let b = client
            .balance(BalanceAction::Stop, a.threshold)
            .await
            .context("balance")?;
        println!("Balancer: {}", balancer_text(&b));
        return Ok(());
    }
    let b = client
        .balance(BalanceAction::Start, a.threshold)
        .await
        .context("balance")?;
    println!(
        "Balancer started (threshold {:.1} points)",
        b.threshold_percent
    );
    if a.no_wait {
        return Ok(());
    }
    let b = wait_until("balance", a.wait_for.max_wait, || async {
        let b = client
            .balance(BalanceAction::Status, a.threshold)
            .await
            .context("balance")?;
        println!("Balancer: {}", balancer_text(&b));
        Ok((!b.running).then_some(b))
    })
    .await?;
    if b.result != "balanced" {
        bail!("balance: {}", b.result);
    }
    Ok(())
}

pub async fn setrep(client: &Client, a: SetrepArgs) -> anyhow::Result<()> {
    let path = dfs_path(&a.path);
    let files = client
        .set_replication(&path, a.replication)
        .await
        .with_context(|| path.clone())?;
    println!(
        "Replication {} set on {files} file(s) under {path}",
        a.replication
    );
    if !a.wait {
        return Ok(());
    }
    wait_until(&path, a.wait_for.max_wait, || async {
        let f = client
            .fsck(&path, false)
            .await
            .with_context(|| path.clone())?;
        Ok((f.healthy).then_some(()))
    })
    .await?;
    println!("{path}: every chunk has {} replicas", a.replication);
    Ok(())
}
