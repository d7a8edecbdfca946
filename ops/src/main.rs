//! `dfs`: the rdfs command-line tool.
//!
//! User commands (`put`, `get`, `cat`, `ls`, `mkdir`, `rm`, `mv`, `stat`, `du`, `df`, `fsck`,
//! `setrep`, `append`, `records`, `snapshot`, `trash`) and operator commands (`admin ...`, in [`admin`]) talk to the
//! cluster through `rdfs-client`; server commands (`master`, `chunkserver`,
//! `cluster up`) live in [`servers`] and run their own runtime.
//!
//! Contract (SPEC "CLI contract"): every cluster command reads `--master`/`DFS_MASTER` and
//! `--timeout`/`DFS_TIMEOUT`; errors print `dfs: PATH: cause` on stderr and exit 1, never a
//! panic or Debug output; `--json` shapes are fixed; progress bars only on a terminal.

mod admin;
mod commands;
mod format;
mod ha;
mod mount;
mod records;
mod servers;
mod snapshot;
mod transfer;
mod trash;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rdfs_client::{Client, ClientConfig};

/// Default master address when neither `--master` nor `DFS_MASTER` is given.
const DEFAULT_MASTER: &str = "127.0.0.1:9000";
/// Log filter for user commands when `RUST_LOG` is unset: quiet unless something is wrong.
const USER_LOG_FILTER: &str = "warn";
/// Log filter for server commands when `RUST_LOG` is unset.
const SERVER_LOG_FILTER: &str = "info";

#[derive(Debug, Parser)]
#[command(
    name = "dfs",
    version,
    about = "rdfs: a GFS/HDFS-style distributed file system",
    propagate_version = true
)]
struct Cli {
    /// Master address(es), comma-separated; the active one is found automatically.
    #[arg(
        long = "master",
        env = "DFS_MASTER",
        default_value = DEFAULT_MASTER,
        value_delimiter = ',',
        global = true
    )]
    masters: Vec<String>,
    /// Deadline for each operation (e.g. `15s`, `500ms`).
    #[arg(
        long,
        env = "DFS_TIMEOUT",
        default_value = "15s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy local files or directories into rdfs (`cp -r` semantics; `-` reads stdin).
    Put(transfer::PutArgs),
    /// Copy files or directories out of rdfs (`cp -r` semantics; DEST `-` writes stdout).
    Get(transfer::GetArgs),
    /// Print files to stdout.
    Cat(commands::CatArgs),
    /// List a directory (or show one file).
    Ls(commands::LsArgs),
    /// Create directories.
    Mkdir(commands::MkdirArgs),
    /// Remove files (and directories with -r).
    Rm(commands::RmArgs),
    /// Rename or move a file or directory.
    Mv(commands::MvArgs),
    /// Show a file's attributes and chunks.
    Stat(commands::StatArgs),
    /// Show space used under a path, in bytes.
    Du(commands::DuArgs),
    /// Show cluster capacity and usage.
    Df(commands::DfArgs),
    /// Check the health of files and chunks (exit 1 when not healthy, unless --json).
    Fsck(commands::FsckArgs),
    /// Set the replication factor of a file or of every file under a directory.
    Setrep(admin::SetrepArgs),
    /// Operator commands: report, safemode, decommission, balance.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Append records to a file (one per input line, or --whole); creates the file if missing.
    Append(records::AppendArgs),
    /// Print the records of a file written by `append`, each once.
    Records(records::RecordsArgs),
    /// Copy-on-write snapshot of a file or directory tree (metadata only until written).
    Snapshot(snapshot::SnapshotArgs),
    /// Your trash (where `rm` moves entries): ls, restore, empty.
    Trash {
        #[command(subcommand)]
        command: trash::TrashCommand,
    },
    /// Mount the file system with FUSE (foreground; Ctrl-C or SIGTERM unmounts).
    Mount(mount::MountArgs),
    /// Run a master server.
    Master(servers::MasterArgs),
    /// Run a chunkserver (registers with --master).
    Chunkserver(servers::ChunkserverArgs),
    /// Local cluster tools.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Run a whole local cluster in the foreground.
    Up(servers::ClusterUpArgs),
}

/// Marks an error already printed to stderr (commands over several paths report each one).
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("errors were reported")
    }
}

impl std::error::Error for AlreadyReported {}

/// Prints one error as `dfs: PATH: cause` (the path is the outermost anyhow context).
pub fn report(err: &anyhow::Error) {
    eprintln!("dfs: {err:#}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_server = matches!(
        cli.command,
        Command::Master(_) | Command::Chunkserver(_) | Command::Cluster { .. } | Command::Mount(_)
    );
    init_tracing(if is_server {
        SERVER_LOG_FILTER
    } else {
        USER_LOG_FILTER
    });
    let result = match cli.command {
        // Servers build their own runtime: call them outside ours.
        Command::Master(args) => servers::master(args),
        Command::Chunkserver(args) => servers::chunkserver(args, cli.masters),
        Command::Cluster {
            command: ClusterCommand::Up(args),
        } => servers::cluster_up(args),
        Command::Mount(args) => mount::mount(args, cli.masters, cli.timeout),
        Command::Admin {
            command: admin::AdminCommand::Ha(args),
        } => {
            let (masters, timeout) = (cli.masters, cli.timeout);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
                .and_then(|rt| rt.block_on(ha::status(&masters, timeout, args)))
        }
        command => {
            restore_sigpipe();
            run_user_command(command, cli.masters, cli.timeout)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if err.downcast_ref::<AlreadyReported>().is_none() {
                report(&err);
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // try_init: never panic if something already installed a subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Rust ignores SIGPIPE, which turns `dfs cat f | head` into a "Broken pipe" error; a
/// command-line tool should end quietly like `cat` does.
fn restore_sigpipe() {
    // SAFETY: resetting a signal disposition to its default at startup, before any thread
    // is spawned, has no memory-safety implications.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// SIGPIPE is back to its default for stdout (above), but a socket write to a peer that
/// closed (a server that resets the connection) must be an error, not a silent death: the
/// runtime's threads, where connections are driven, block it (signal masks are per thread,
/// and a blocked SIGPIPE leaves the write to fail with EPIPE).
fn block_sigpipe_in_this_thread() {
    sigpipe_mask(libc::SIG_BLOCK);
}

/// Blocks or unblocks (`how`) SIGPIPE for the calling thread.
pub(crate) fn sigpipe_mask(how: libc::c_int) {
    // SAFETY: plain libc calls on a local, zero-initialised signal set; changing this
    // thread's own signal mask has no memory-safety implications.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

fn run_user_command(
    command: Command,
    masters: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(block_sigpipe_in_this_thread)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let addrs = masters.join(",");
        let mut cfg = ClientConfig::new(masters);
        cfg.timeout = timeout;
        cfg.uid = nix::unistd::getuid().as_raw();
        cfg.gid = nix::unistd::getgid().as_raw();
        let client = Client::connect(cfg)
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("master {addrs}")))?;
        match command {
            Command::Put(args) => transfer::put(&client, args).await,
            Command::Get(args) => transfer::get(&client, args).await,
            Command::Cat(args) => commands::cat(&client, args).await,
            Command::Ls(args) => commands::ls(&client, args).await,
            Command::Mkdir(args) => commands::mkdir(&client, args).await,
            Command::Rm(args) => commands::rm(&client, args).await,
            Command::Mv(args) => commands::mv(&client, args).await,
            Command::Stat(args) => commands::stat(&client, args).await,
            Command::Du(args) => commands::du(&client, args).await,
            Command::Df(args) => commands::df(&client, args).await,
            Command::Fsck(args) => commands::fsck(&client, args).await,
            Command::Setrep(args) => admin::setrep(&client, args).await,
            Command::Admin { command } => admin::run(&client, command).await,
            Command::Append(args) => records::append(&client, args).await,
            Command::Records(args) => records::records(&client, args).await,
            Command::Snapshot(args) => snapshot::snapshot(&client, args).await,
            Command::Trash { command } => trash::run(&client, command).await,
            Command::Master(_)
            | Command::Chunkserver(_)
            | Command::Cluster { .. }
            | Command::Mount(_) => {
                anyhow::bail!("server commands do not run inside the client runtime")
            }
        }
    })
}
