//! High availability: the hot standby, the witness lease, failover and fencing.
//!
//! A master runs in one [`Role`] at a time. The **primary** acknowledges a mutation only when
//! (1) its record is durable locally, (2) it holds the witness lease (a majority of the
//! witness membership granted it less than `valid_for` ago by its own clock), and (3) when a
//! standby is required ([`Sync::Syncing`] / [`Sync::InSync`]), that standby has acknowledged
//! the record as durable. A standby stops being required only after the primary recorded
//! "standby out of sync at (epoch, seq)" on a majority of witnesses ([`Sync::Dropping`]),
//! and a standby may promote only when a majority says it is in sync and the primary's
//! lease has expired. The argument for why this is safe is in ARCHITECTURE.md ("Failover").
//!
//! Modules: [`witness`] (the trait and the chunkserver majority), `manager` (the primary's
//! renewal task and the handover), `stream` (the primary's side of the op-log stream),
//! [`standby`] (following, catching up, promotion).
//!
//! Clock assumption: only durations measured on one host (`Instant`), with a rate drift
//! between hosts far below the safety margin (`valid_for` is 3/4 of the lease).

pub(crate) mod manager;
pub mod standby;
pub(crate) mod stream;
pub mod witness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdfs_proto::dataplane::{StandbyMark, WitnessOp};
use rdfs_proto::ids::Epoch;
use rdfs_proto::ErrorCode;
use tokio::sync::Notify;
use tonic::Status;

use witness::{Members, Round, Witness};

/// Metadata key of the primary's address on a `NotPrimary` status.
pub const PRIMARY_HINT_METADATA_KEY: &str = "rdfs-primary-hint";
/// Metadata key of the answering master's epoch on every response.
pub const EPOCH_METADATA_KEY: &str = "rdfs-epoch";
/// Default time without a healthy primary before the standby takes over; also the witness
/// lease length.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest failover timeout accepted (rounds must fit several times in a lease).
pub const MIN_FAILOVER_TIMEOUT: Duration = Duration::from_millis(300);
/// The primary counts its lease as valid for this fraction of its length from the moment it
/// sent the renewal: the margin covers clock-rate drift between hosts (see ARCHITECTURE.md).
const VALID_NUM: u32 = 3;
const VALID_DEN: u32 = 4;
/// Renewals per lease length.
const RENEWALS_PER_LEASE: u32 = 5;
/// How far behind the durable seq a catching-up standby may be when acknowledgements start
/// waiting for it. Under a steady stream of mutations an exact `acked == durable` at the
/// moment of a renewal round may never happen (the standby chases a moving target); once
/// acknowledgements wait for it, the target stops running away and it closes the gap, or
/// the ack timeout drops it again.
const CATCH_UP_SLACK_RECORDS: u64 = 1024;

/// Every duration of the failover protocol, derived from one knob (`--failover-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A standby that has not heard a healthy primary this long tries to take over.
    pub failover_timeout: Duration,
    /// Witness lease length (each witness's clock).
    pub lease: Duration,
    /// How long the primary counts a granted lease, from the renewal's send time.
    pub valid_for: Duration,
    /// Renewal period; also the keepalive period of the op-log stream.
    pub renew_every: Duration,
    /// A required standby that has not acknowledged a waiting record this long is dropped
    /// (marked out of sync first).
    pub ack_timeout: Duration,
    /// Deadline of one witness answer.
    pub rpc_timeout: Duration,
}

impl Timing {
    pub fn from_failover_timeout(t: Duration) -> Timing {
        let t = t.max(MIN_FAILOVER_TIMEOUT);
        let renew_every = t / RENEWALS_PER_LEASE;
        Timing {
            failover_timeout: t,
            lease: t,
            valid_for: t * VALID_NUM / VALID_DEN,
            renew_every,
            ack_timeout: t / 2,
            rpc_timeout: (renew_every * 2).min(t / 2),
        }
    }
}

/// What a master is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Recovering or switching roles: only status is answered.
    Starting,
    /// Following the primary at `primary`.
    Standby {
        primary: String,
    },
    Primary,
    /// Handing over to the standby at `to` (`dfs admin failover`): no new mutations.
    HandingOver {
        to: String,
    },
    /// A primary of a newer epoch exists at `holder`; this one acknowledges nothing more.
    Deposed {
        holder: String,
    },
}

/// The primary's view of its standby, which decides whether acknowledgements wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// The first lease rounds: "no standby in sync" is not yet recorded on a majority.
    Starting,
    /// No standby attached; acknowledgements do not wait for one.
    Detached,
    /// A standby is attached and catching up; acknowledgements do not wait for it.
    CatchingUp,
    /// Acknowledgements wait for the standby; once it has every record up to `from` it is
    /// marked in sync.
    Syncing { from: u64 },
    /// Marked in sync on a majority: acknowledgements wait for it.
    InSync,
    /// Being marked out of sync; acknowledgements wait until a majority holds that mark.
    Dropping,
}

impl Sync {
    pub fn name(self) -> &'static str {
        match self {
            Sync::Starting => "starting",
            Sync::Detached => "detached",
            Sync::CatchingUp => "catching_up",
            Sync::Syncing { .. } => "syncing",
            Sync::InSync => "in_sync",
            Sync::Dropping => "dropping",
        }
    }

    fn requires_standby(self) -> bool {
        matches!(self, Sync::Syncing { .. } | Sync::InSync)
    }
}

/// The attached standby.
#[derive(Debug, Clone)]
pub struct Link {
    pub id: String,
    pub addr: String,
    /// Every record up to here is durable on the standby.
    pub acked: u64,
    /// Which Follow stream (a reconnect gets a new one).
    pub conn: u64,
    pub last_ack: Instant,
    /// Manual failover: tell the standby to take over once it has everything.
    pub take_over: bool,
}

struct Inner {
    role: Role,
    /// Until when this primary may acknowledge (by its clock).
    lease_until: Option<Instant>,
    sync: Sync,
    link: Option<Link>,
    /// The mark sent with every renewal; `None` until the first round taught us the serials.
    mark: Option<StandbyMark>,
    /// A majority holds `mark`.
    mark_held: bool,
    /// Highest mark serial seen at our epoch.
    max_serial: u64,
    /// The lowest record waiting for the standby's acknowledgement, and since when.
    waiting: Option<(u64, Instant)>,
    /// The last standby's acknowledged seq: segments after it are kept for its return.
    retain: Option<u64>,
    next_conn: u64,
    /// The lease was given up for a handover: renewals stop.
    released: bool,
}

/// Whether a record may be acknowledged now.
#[derive(Debug)]
pub enum Ack {
    Yes,
    Wait,
    No(Status),
}

/// High-availability state of one master incarnation.
pub struct Ha {
    /// Stable id of this master's data directory (witness holder / standby id).
    pub me_id: String,
    /// Where clients, chunkservers and the other master reach this one.
    pub me_addr: String,
    pub timing: Timing,
    pub witness: Arc<dyn Witness>,
    /// Witness membership with addresses (the chunkserver witness asks these).
    pub members: Arc<Members>,
    inner: Mutex<Inner>,
    /// Wakes acknowledgements waiting on the lease, the standby or the sync state.
    changed: Notify,
    /// Wakes the renewal task early (a standby caught up or went away).
    pub(crate) poke: Notify,
    /// The epoch this master serves in (response metadata, renewals).
    epoch: AtomicU64,
    /// Cancelled when this primary learns it was deposed (its runtime then rejoins as a
    /// standby of the new primary).
    pub deposed: tokio_util::sync::CancellationToken,
}

impl Ha {
    pub fn new(
        me_id: String,
        me_addr: String,
        timing: Timing,
        witness: Arc<dyn Witness>,
        members: Arc<Members>,
        role: Role,
        epoch: Epoch,
    ) -> Ha {
        Ha {
            me_id,
            me_addr,
            timing,
            witness,
            members,
            inner: Mutex::new(Inner {
                role,
                lease_until: None,
                sync: Sync::Starting,
                link: None,
                mark: None,
                mark_held: false,
                max_serial: 0,
                waiting: None,
                retain: None,
                next_conn: 1,
                released: false,
            }),
            changed: Notify::new(),
            poke: Notify::new(),
            epoch: AtomicU64::new(epoch.0),
            deposed: tokio_util::sync::CancellationToken::new(),
        }
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    pub fn set_epoch(&self, e: Epoch) {
        self.epoch.fetch_max(e.0, Ordering::AcqRel);
    }

    pub fn role(&self) -> Role {
        self.inner.lock().role.clone()
    }

    pub fn sync(&self) -> Sync {
        self.inner.lock().sync
    }

    pub fn is_primary(&self) -> bool {
        matches!(self.inner.lock().role, Role::Primary)
    }

    pub fn set_role(&self, role: Role) {
        tracing::info!(role = ?role, epoch = %self.epoch(), "master role");
        let deposed = matches!(role, Role::Deposed { .. });
        self.inner.lock().role = role;
        self.changed.notify_waiters();
        self.poke.notify_one();
        if deposed {
            self.deposed.cancel();
        }
    }

    /// The newer primary, once deposed.
    pub fn deposed_by(&self) -> Option<String> {
        match &self.inner.lock().role {
            Role::Deposed { holder } => Some(holder.clone()),
            _ => None,
        }
    }

    /// A `NotPrimary` status naming where the primary is, when known.
    pub fn not_primary(&self) -> Status {
        let (msg, hint) = match &self.inner.lock().role {
            Role::Standby { primary } => ("this master is a standby".to_string(), primary.clone()),
            Role::HandingOver { to } => ("this master is handing over".to_string(), to.clone()),
            Role::Deposed { holder } => ("this master was deposed".to_string(), holder.clone()),
            Role::Starting => ("this master is starting".to_string(), String::new()),
            Role::Primary => ("this master is the primary".to_string(), String::new()),
        };
        let text = if hint.is_empty() {
            msg
        } else {
            format!("{msg}; the primary is at {hint}")
        };
        let mut status = ErrorCode::NotPrimary.status(text);
        if let Ok(v) = hint.parse() {
            if !hint.is_empty() {
                status.metadata_mut().insert(PRIMARY_HINT_METADATA_KEY, v);
            }
        }
        status
    }

    /// New mutations are accepted only by the primary.
    pub fn check_primary(&self) -> Result<(), Status> {
        if self.is_primary() {
            Ok(())
        } else {
            Err(self.not_primary())
        }
    }

    /// Whether the lease is held now (or not needed: no witnesses yet).
    pub fn lease_valid(&self, now: Instant) -> bool {
        let inner = self.inner.lock();
        self.members.is_empty() || inner.lease_until.is_some_and(|u| now < u)
    }

    /// Decides whether record `seq` (durable locally) may be acknowledged now.
    pub fn can_ack(&self, seq: u64, now: Instant) -> Ack {
        let no_witness = self.members.is_empty();
        let mut inner = self.inner.lock();
        match inner.role {
            Role::Primary | Role::HandingOver { .. } => {}
            _ => {
                drop(inner);
                return Ack::No(self.not_primary());
            }
        }
        if !no_witness && inner.lease_until.is_none_or(|u| now >= u) {
            return Ack::Wait;
        }
        match inner.sync {
            Sync::Starting | Sync::Dropping => Ack::Wait,
            // After a membership change the in-sync mark must reach a majority of the new
            // membership first, or the standby could not take over if we died now.
            Sync::InSync if !inner.mark_held => Ack::Wait,
            Sync::Detached | Sync::CatchingUp => Ack::Yes,
            Sync::Syncing { .. } | Sync::InSync => {
                if inner.link.as_ref().is_some_and(|l| l.acked >= seq) {
                    Ack::Yes
                } else {
                    let w = inner.waiting.get_or_insert((seq, now));
                    w.0 = w.0.min(seq);
                    Ack::Wait
                }
            }
        }
    }

    /// Waits (bounded) until something that [`Ha::can_ack`] depends on changes.
    pub async fn wait_change(&self, max: Duration) {
        let notified = self.changed.notified();
        let _ = tokio::time::timeout(max, notified).await;
    }

    /// A standby's Follow stream starts: returns its connection number, or `Busy` when
    /// another standby is attached and required.
    pub fn attach(&self, id: &str, addr: &str, acked: u64) -> Result<u64, Status> {
        let mut inner = self.inner.lock();
        if let Some(l) = &inner.link {
            if l.id != id && inner.sync != Sync::CatchingUp {
                return Err(ErrorCode::Busy.status(format!(
                    "another standby ({}) is attached; one standby at a time",
                    l.addr
                )));
            }
        }
        if inner.sync == Sync::Dropping || (inner.link.is_none() && inner.sync.requires_standby()) {
            return Err(ErrorCode::Busy.status("the previous standby is being marked out of sync"));
        }
        let conn = inner.next_conn;
        inner.next_conn += 1;
        let same = inner.link.as_ref().is_some_and(|l| l.id == id);
        let acked = if same {
            // The same standby reconnecting keeps what it had (its log is durable).
            inner.link.as_ref().map_or(acked, |l| l.acked.max(acked))
        } else {
            acked
        };
        inner.link = Some(Link {
            id: id.to_string(),
            addr: addr.to_string(),
            acked,
            conn,
            last_ack: Instant::now(),
            take_over: false,
        });
        if inner.sync == Sync::Detached {
            inner.sync = Sync::CatchingUp;
        }
        inner.retain = Some(acked);
        tracing::info!(standby = %addr, acked, sync = inner.sync.name(), "standby attached");
        drop(inner);
        self.poke.notify_one();
        Ok(conn)
    }

    /// The standby of stream `conn` has every record up to `seq` durably.
    pub fn on_ack(&self, conn: u64, seq: u64) {
        let mut inner = self.inner.lock();
        let Some(link) = inner.link.as_mut().filter(|l| l.conn == conn) else {
            return;
        };
        link.acked = link.acked.max(seq);
        link.last_ack = Instant::now();
        let acked = link.acked;
        inner.retain = Some(acked);
        if inner.waiting.is_some_and(|(seq, _)| seq <= acked) {
            inner.waiting = None;
        }
        let poke = matches!(inner.sync, Sync::CatchingUp | Sync::Syncing { .. });
        drop(inner);
        self.changed.notify_waiters();
        if poke {
            self.poke.notify_one();
        }
    }

    /// Stream `conn` ended.
    pub fn detach(&self, conn: u64) {
        let mut inner = self.inner.lock();
        if inner.link.as_ref().is_some_and(|l| l.conn == conn) {
            let link = inner.link.take();
            if inner.sync == Sync::CatchingUp {
                inner.sync = Sync::Detached;
            }
            tracing::info!(standby = ?link.map(|l| l.addr), sync = inner.sync.name(), "standby detached");
        }
        drop(inner);
        self.changed.notify_waiters();
        self.poke.notify_one();
    }

    /// The attached standby (for the stream's sender and status).
    pub fn link(&self) -> Option<Link> {
        self.inner.lock().link.clone()
    }

    /// Lowest seq a standby may still need from the segments (None: no standby known).
    pub fn retain_from(&self) -> Option<u64> {
        self.inner.lock().retain.map(|s| s + 1)
    }

    /// Prepares the next renewal round; `None` when this master must not renew (not the
    /// primary any more, or the lease was given up for a handover).
    pub(crate) fn plan_round(&self, now: Instant, durable: u64) -> Option<WitnessOp> {
        let mut inner = self.inner.lock();
        if inner.released || !matches!(inner.role, Role::Primary | Role::HandingOver { .. }) {
            return None;
        }
        let epoch = self.epoch();
        self.step_sync(&mut inner, now, durable, epoch);
        Some(WitnessOp::Renew {
            epoch,
            holder_id: self.me_id.clone(),
            holder_addr: self.me_addr.clone(),
            lease_ms: self.timing.lease.as_millis() as u64,
            mark: inner.mark.clone(),
        })
    }

    /// Sync-state moves that happen before a round (they choose the mark it carries).
    fn step_sync(&self, inner: &mut Inner, now: Instant, durable: u64, epoch: Epoch) {
        let acked = inner.link.as_ref().map(|l| l.acked);
        match inner.sync {
            Sync::Syncing { .. } | Sync::InSync => {
                let stalled = inner
                    .waiting
                    .is_some_and(|(_, t)| now.duration_since(t) > self.timing.ack_timeout);
                if acked.is_none() || stalled {
                    let at = acked.or(inner.retain).unwrap_or(0);
                    tracing::warn!(
                        acked = at,
                        stalled,
                        "standby not keeping up: marking it out of sync"
                    );
                    inner.sync = Sync::Dropping;
                    inner.waiting = None;
                    self.new_mark(inner, epoch, String::new(), at);
                }
            }
            Sync::CatchingUp => {
                if acked.is_some_and(|a| a.saturating_add(CATCH_UP_SLACK_RECORDS) >= durable) {
                    inner.sync = Sync::Syncing { from: durable };
                    tracing::info!(
                        durable,
                        "standby caught up: acknowledgements now wait for it"
                    );
                }
            }
            Sync::Starting | Sync::Detached | Sync::Dropping => {}
        }
        if let (Sync::Syncing { from }, Some(a)) = (inner.sync, acked) {
            let id = inner
                .link
                .as_ref()
                .map(|l| l.id.clone())
                .unwrap_or_default();
            let marked = inner.mark.as_ref().is_some_and(|m| m.in_sync == id);
            if a >= from && !marked {
                self.new_mark(inner, epoch, id, 0);
            }
        }
    }

    fn new_mark(&self, inner: &mut Inner, epoch: Epoch, in_sync: String, out_of_sync_at: u64) {
        let serial = inner
            .max_serial
            .max(inner.mark.as_ref().map_or(0, |m| m.serial))
            + 1;
        inner.max_serial = serial;
        inner.mark = Some(StandbyMark {
            epoch,
            serial,
            in_sync,
            out_of_sync_at,
        });
        inner.mark_held = false;
    }

    /// Applies a renewal round sent at `sent`. Returns the newer primary if deposed.
    pub(crate) fn finish_round(
        &self,
        sent: Instant,
        round: &Round,
        durable: u64,
    ) -> Option<String> {
        let mut inner = self.inner.lock();
        if let Some((epoch, holder)) = &round.newer {
            tracing::warn!(newer_epoch = %epoch, %holder, epoch = %self.epoch(), "a newer primary exists: deposed");
            inner.role = Role::Deposed {
                holder: holder.clone(),
            };
            inner.lease_until = None;
            drop(inner);
            self.changed.notify_waiters();
            self.deposed.cancel();
            return Some(holder.clone());
        }
        let had = inner.lease_until.is_some_and(|u| Instant::now() < u);
        if round.won() {
            inner.lease_until = Some(sent + self.timing.valid_for);
            if !had {
                tracing::info!(
                    granted = round.granted,
                    members = round.members,
                    "witness lease held"
                );
            }
        } else if had {
            tracing::warn!(granted = round.granted, members = round.members, refusals = ?round.refusals, "witness lease not renewed");
        }
        inner.max_serial = inner.max_serial.max(round.max_serial);
        let epoch = self.epoch();
        match inner.mark.clone() {
            None if round.won() => {
                // We now know the serials: record that no standby is in sync (yet).
                self.new_mark(&mut inner, epoch, String::new(), durable);
            }
            None => {}
            Some(m) if round.won() && round.marked() => {
                if !inner.mark_held {
                    tracing::info!(in_sync = %m.in_sync, out_of_sync_at = m.out_of_sync_at, serial = m.serial, "standby mark recorded on a majority");
                }
                inner.mark_held = true;
                let attached = inner.link.is_some();
                inner.sync = match inner.sync {
                    Sync::Starting | Sync::Dropping if attached => Sync::CatchingUp,
                    Sync::Starting | Sync::Dropping => Sync::Detached,
                    Sync::Syncing { .. } if !m.in_sync.is_empty() => Sync::InSync,
                    s => s,
                };
            }
            Some(m) if round.max_serial >= m.serial && !round.marked() => {
                // A majority holds a newer mark of an earlier run at this epoch: go above it.
                let (in_sync, at) = (m.in_sync.clone(), m.out_of_sync_at);
                self.new_mark(&mut inner, epoch, in_sync, at);
            }
            Some(_) => {}
        }
        drop(inner);
        self.changed.notify_waiters();
        None
    }

    /// A witness joined: the lease and the mark must be renewed over the new membership
    /// before the next acknowledgement (a lease granted by the old membership would let the
    /// primary acknowledge before the new member knows which standby is in sync).
    pub fn membership_changed(&self) {
        let mut inner = self.inner.lock();
        inner.lease_until = None;
        inner.mark_held = false;
        drop(inner);
        self.poke.notify_one();
    }

    /// Whether the current mark still needs a round (renew again at once).
    pub(crate) fn mark_pending(&self) -> bool {
        !self.inner.lock().mark_held
    }

    /// Starts as a freshly promoted primary: the promotion granted the lease, and at the new
    /// epoch no standby is in sync yet (the witnesses' marks are of the old epoch).
    pub(crate) fn promoted(&self, epoch: Epoch, lease_until: Instant) {
        self.set_epoch(epoch);
        let mut inner = self.inner.lock();
        inner.role = Role::Primary;
        inner.lease_until = Some(lease_until);
        inner.sync = Sync::Detached;
        inner.mark = None;
        inner.mark_held = false;
        inner.max_serial = 0;
        inner.link = None;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Stops renewing and forgets the lease (handover).
    pub(crate) fn release(&self) {
        let mut inner = self.inner.lock();
        inner.released = true;
        inner.lease_until = None;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Renews again after a handover the standby did not complete.
    pub(crate) fn resume(&self) {
        let mut inner = self.inner.lock();
        inner.released = false;
        inner.role = Role::Primary;
        if let Some(l) = inner.link.as_mut() {
            l.take_over = false;
        }
        drop(inner);
        self.changed.notify_waiters();
        self.poke.notify_one();
    }

    /// Asks the sender of the standby's stream to tell it to take over.
    pub(crate) fn request_take_over(&self) -> Option<Link> {
        let mut inner = self.inner.lock();
        let link = inner.link.as_mut()?;
        link.take_over = true;
        let l = link.clone();
        drop(inner);
        self.changed.notify_waiters();
        Some(l)
    }

    /// The standby as the status page shows it ("none" when no standby is attached).
    pub fn standby_info(&self, durable: u64, now: Instant) -> rdfs_proto::pb::StandbyInfo {
        let inner = self.inner.lock();
        let Some(l) = inner.link.as_ref() else {
            return rdfs_proto::pb::StandbyInfo {
                state: "none".into(),
                ..Default::default()
            };
        };
        let lag = durable.saturating_sub(l.acked);
        let state = match inner.sync {
            Sync::Dropping => "out_of_sync",
            s => s.name(),
        };
        rdfs_proto::pb::StandbyInfo {
            state: state.to_string(),
            addr: l.addr.clone(),
            lag_ops: lag,
            acked_seq: l.acked,
            lag_ms: if lag == 0 {
                0
            } else {
                now.saturating_duration_since(l.last_ack).as_millis() as u64
            },
        }
    }

    /// Role name for status pages.
    pub fn role_name(&self) -> &'static str {
        match self.inner.lock().role {
            Role::Primary => "primary",
            Role::Standby { .. } => "standby",
            Role::HandingOver { .. } => "handing_over",
            Role::Deposed { .. } => "deposed",
            Role::Starting => "starting",
        }
    }

    /// Where the primary is, as this master knows it.
    pub fn primary_addr(&self) -> String {
        match &self.inner.lock().role {
            Role::Standby { primary } => primary.clone(),
            Role::Deposed { holder } => holder.clone(),
            Role::HandingOver { to } => to.clone(),
            Role::Primary => self.me_addr.clone(),
            Role::Starting => String::new(),
        }
    }

    /// Wakes everything waiting on this incarnation (it is being replaced).
    pub fn wake_all(&self) {
        self.changed.notify_waiters();
        self.poke.notify_one();
    }
}

#[cfg(test)]
mod tests;
