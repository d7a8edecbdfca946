//! The control-plane side of the client: a list of master addresses, sticking with the one
//! that answers, and one retry loop that every metadata call goes through.
//!
//! Invariants: every attempt has a deadline (the caller's whole-operation deadline, capped
//! per attempt when there is another master to try); retryable errors (`ErrorCode::is_retryable`,
//! including safe mode) are retried with capped exponential backoff until the deadline;
//! `NotPrimary` and transport failures move on to the next address (straight to the one a
//! `NotPrimary` answer names, when it is in the list). Every answer carries the master's
//! epoch: the highest seen is remembered, and a master answering with a lower one (a
//! deposed primary) is treated like a `NotPrimary` — a failover is retried through, never
//! surfaced for a call that can be retried.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rdfs_proto::limits::MAX_GRPC_MESSAGE_BYTES;
use rdfs_proto::pb::master_client::MasterClient;
use rdfs_proto::pb::master_ha_client::MasterHaClient;
use rdfs_proto::ErrorCode;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ClientError, Result};

/// First pause after a retryable error; doubled up to [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Longest pause between retries, so a recovering master is noticed quickly.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Cap on one TCP connect to a master, so one dead address cannot eat the whole deadline.
const MASTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Cap on one attempt when another master could answer instead (a hung primary).
const MASTER_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long every master may refuse connections outright before a call gives up. A master
/// restart takes well under this; an address nobody listens on should fail in seconds, not
/// after the whole deadline. Masters that answer (even "not primary") keep the full deadline.
const UNREACHABLE_GIVE_UP: Duration = Duration::from_secs(4);

/// Metadata keys the master sets (see `rdfs_master::ha`).
const EPOCH_KEY: &str = "rdfs-epoch";
const PRIMARY_HINT_KEY: &str = "rdfs-primary-hint";

/// The masters a client may talk to, and which one answered last.
pub(crate) struct Masters {
    clients: Vec<(String, MasterClient<Channel>)>,
    /// The same channels, for the `MasterHa` service.
    channels: Vec<Channel>,
    current: AtomicUsize,
    /// Highest master epoch seen in any answer.
    epoch: AtomicU64,
}

impl Masters {
    /// Builds lazily-connecting clients for every address (no I/O here).
    pub(crate) fn new(addrs: &[String], timeout: Duration) -> Result<Masters> {
        let mut clients = Vec::with_capacity(addrs.len());
        let mut channels = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let addr = addr.trim();
            if addr.is_empty() {
                continue;
            }
            let uri = if addr.contains("://") {
                addr.to_string()
            } else {
                format!("http://{addr}")
            };
            let endpoint = Endpoint::from_shared(uri).map_err(|e| {
                ClientError::remote(
                    addr,
                    ErrorCode::InvalidArgument,
                    format!("master address: {e}"),
                )
            })?;
            let channel = endpoint
                .connect_timeout(MASTER_CONNECT_TIMEOUT.min(timeout))
                .timeout(timeout)
                .connect_lazy();
            channels.push(channel.clone());
            let client = MasterClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
            clients.push((addr.to_string(), client));
        }
        if clients.is_empty() {
            return Err(ClientError::remote(
                "",
                ErrorCode::InvalidArgument,
                "no master address given",
            ));
        }
        Ok(Masters {
            clients,
            channels,
            current: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        })
    }

    /// Highest master epoch this client has seen.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Checks an answer's epoch: a lower one than seen comes from a deposed master.
    fn fresh_epoch(&self, meta: &tonic::metadata::MetadataMap) -> bool {
        let Some(e) = meta
            .get(EPOCH_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return true;
        };
        let seen = self.epoch.fetch_max(e, Ordering::Relaxed);
        e >= seen
    }

    /// Moves `current` to the master a `NotPrimary` answer named, if it is one of ours;
    /// otherwise to the next address after `index`.
    fn move_on(&self, index: usize, hint: Option<&str>) {
        let to = hint
            .and_then(|h| self.clients.iter().position(|(a, _)| a == h))
            .unwrap_or((index + 1) % self.clients.len());
        // Compare-exchange so concurrent callers failing on the same master move only once.
        let _ = self
            .current
            .compare_exchange(index, to, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// `MasterHa` clients on the same channels (admin calls such as failover).
    pub(crate) fn ha_client(&self, index: usize) -> MasterHaClient<Channel> {
        MasterHaClient::new(self.channels[index % self.channels.len()].clone())
    }

    /// Address `index` of the list.
    pub(crate) fn addr(&self, index: usize) -> &str {
        &self.clients[index % self.clients.len()].0
    }

    pub(crate) fn current_index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.clients.len()
    }

    /// Addresses, for error messages.
    pub(crate) fn addrs(&self) -> String {
        let names: Vec<&str> = self.clients.iter().map(|(a, _)| a.as_str()).collect();
        names.join(",")
    }

    /// Runs `f` against the current master until it succeeds, fails for good, or `deadline`
    /// passes. `what` names the operation and `path` the object, for error messages.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &str,
        path: &str,
        deadline: Instant,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut(MasterClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = RETRY_BACKOFF_INITIAL;
        let mut last_err: Option<ClientError> = None;
        let many = self.clients.len() > 1;
        let started = Instant::now();
        let mut only_refused = true;
        loop {
            let now = Instant::now();
            let refused_too_long = only_refused
                && last_err.is_some()
                && now.duration_since(started) >= UNREACHABLE_GIVE_UP;
            if now >= deadline || refused_too_long {
                return Err(deadline_error(what, &self.addrs(), last_err));
            }
            let index = self.current.load(Ordering::Relaxed) % self.clients.len();
            let (addr, client) = &self.clients[index];
            let mut attempt = deadline - now;
            if many {
                attempt = attempt.min(MASTER_ATTEMPT_TIMEOUT);
            }
            let mut hint = None;
            let err = match tokio::time::timeout(attempt, f(client.clone())).await {
                Ok(Ok(resp)) if self.fresh_epoch(resp.metadata()) => return Ok(resp.into_inner()),
                Ok(Ok(_)) => ClientError::remote(
                    path,
                    ErrorCode::NotPrimary,
                    format!(
                        "master {addr} answered from an older epoch than {}",
                        self.epoch()
                    ),
                ),
                Ok(Err(status)) => {
                    self.fresh_epoch(status.metadata());
                    hint = status
                        .metadata()
                        .get(PRIMARY_HINT_KEY)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    ClientError::from_status(path, addr, &status)
                }
                Err(_) => ClientError::Timeout(format!("master {addr} did not answer {what}")),
            };
            let code = err.code();
            if !code.is_retryable() {
                return Err(err);
            }
            if let (ErrorCode::NotPrimary, Some(h)) = (code, hint.as_deref()) {
                if self.clients.len() == 1 && h != addr.as_str() {
                    // The only master we know is a standby: waiting cannot help.
                    return Err(ClientError::remote(
                        path,
                        ErrorCode::NotPrimary,
                        format!(
                            "master {addr} is a standby; the primary is at {h} (give both: --master {h},{addr} or DFS_MASTER)"
                        ),
                    ));
                }
            }
            only_refused &= is_refused(&err);
            tracing::debug!(master = %addr, %what, %path, error = %err, "retrying");
            if matches!(
                code,
                ErrorCode::NotPrimary | ErrorCode::Unavailable | ErrorCode::Timeout
            ) {
                // This address cannot serve us now: try the one named, or the next.
                self.move_on(index, hint.as_deref());
                if code == ErrorCode::NotPrimary && hint.is_some() {
                    // Told where to go: go there without waiting.
                    last_err = Some(err);
                    continue;
                }
            }
            last_err = Some(err);
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }
}

/// A transport-level failure to reach a master at all (nothing listening, no route), as
/// opposed to a master that answered or one that is slow.
fn is_refused(err: &ClientError) -> bool {
    match err {
        ClientError::Unavailable(detail) => {
            let d = detail.to_ascii_lowercase();
            d.contains("connect") || d.contains("refused") || d.contains("dns")
        }
        _ => false,
    }
}

/// The error reported when the deadline passes: the last retryable error when it says more
/// (master unreachable, safe mode), otherwise a plain timeout.
fn deadline_error(what: &str, addrs: &str, last: Option<ClientError>) -> ClientError {
    match last {
        Some(ClientError::Unavailable(detail)) => ClientError::Unavailable(format!(
            "cannot reach the master at {addrs} ({detail}); is it running? \
             (set --master or DFS_MASTER)"
        )),
        Some(err @ ClientError::Remote { .. }) => err,
        Some(other) => ClientError::Timeout(format!("{what}: {other}")),
        None => ClientError::Timeout(format!("{what}: no answer from {addrs}")),
    }
}

/// Sleeps for the current backoff (bounded by the deadline) and doubles it.
pub(crate) async fn backoff_sleep(backoff: &mut Duration, deadline: Instant) {
    let pause = (*backoff).min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(pause).await;
    *backoff = (*backoff * 2).min(RETRY_BACKOFF_MAX);
}

/// The first backoff pause, for data-plane retry loops.
pub(crate) const fn initial_backoff() -> Duration {
    RETRY_BACKOFF_INITIAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_master_fails_within_the_deadline_naming_it() {
        // Port 1 on loopback refuses connections.
        let masters = Masters::new(&["127.0.0.1:1".to_string()], Duration::from_secs(1))
            .expect("valid address");
        let start = Instant::now();
        let deadline = start + Duration::from_millis(600);
        let res: Result<rdfs_proto::pb::StatResponse> = masters
            .call("stat", "/x", deadline, |mut c| async move {
                c.stat(rdfs_proto::pb::StatRequest::default()).await
            })
            .await;
        let err = res.expect_err("nothing listens on port 1");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }

    #[test]
    fn no_addresses_is_an_invalid_argument() {
        let err = Masters::new(&[" ".to_string()], Duration::from_secs(1))
            .err()
            .expect("empty list refused");
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }
}
