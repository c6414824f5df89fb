//! Cluster membership administration: etcd's `Cluster` service semantics (and `MoveLeader`) on
//! openraft's membership API.
//!
//! Any member accepts a request; only the leader executes it, so a follower forwards it over the
//! peer `Admin` RPC (an opaque bincode [`AdminRequest`]). On the leader, one request runs at a
//! time (openraft refuses a change while the previous one is uncommitted) and is checked by pure
//! functions ([`plan`]) against the current membership before anything is proposed; the checks
//! and their error strings are etcd's, including its "strict reconfiguration" rules.
//!
//! Mapping onto openraft (every change is a membership log entry, joint consensus where the
//! voter set changes):
//! - add learner → `AddNodes`; add voter → `AddVoters` (see [`plan`] for why it is immediate,
//!   as in etcd, rather than learner-then-promote); promote → `AddVoterIds`;
//! - remove → `RemoveVoters` (voter) or `RemoveNodes` (learner), with `retain = false`;
//! - update peer URLs and publishing a member's name and client URLs → `SetNodes`.
//!
//! Each member owns a publisher task ([`Admin::start`]): once it runs, it writes its name and
//! client URLs into its node of the membership (etcd's "publish"), which is what turns an
//! "unstarted" member into a started one; and when a committed membership no longer contains
//! it, it reports that it was removed, so the server can stop as etcd's does.

use crate::error::{StoreError, StoreResult};
use crate::ids::MemberId;
use crate::member::{member_id_of, never_sent, Member, Replicator};
use crate::raft::network::{decode, encode, PeerNetwork};
use crate::raft::MemberNode;
use berth_proto::berthraftpb::Payload;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Membership, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Status;

/// How long one administration request may take, forwarding and retries included. A voter
/// change commits two entries (joint, then uniform); this leaves room for an election too.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause before retrying when the leader just changed or a previous change is uncommitted.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How often a member compares what the membership records about it with its configuration.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(300);
/// etcd's `readyPercent`: a learner may be promoted once it has 90% of the leader's log.
const LEARNER_READY_PERCENT: u64 = 90;
/// etcd's default `--experimental-max-learners`.
const MAX_LEARNERS: usize = 1;
/// MoveLeader: the bound on the transferee catching up, and then on it winning the election.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the transferee re-triggers its election while its peers' leader leases run out.
const CAMPAIGN_RETRY: Duration = Duration::from_millis(100);
/// How long a removed member keeps running before it reports its removal: long enough to answer
/// the request that removed it and, if it led, to tell the others the removal committed.
const REMOVED_GRACE: Duration = Duration::from_secs(1);
/// A joining member's bound on learning the cluster id from the existing members.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One member as etcd's Cluster API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: MemberId,
    /// Empty until the member has started and published itself ("unstarted" in etcdctl).
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl MemberInfo {
    /// etcd's notion of a started member: one that has published its name.
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }

    fn node(&self) -> MemberNode {
        MemberNode { name: self.name.clone(), peer_urls: self.peer_urls.clone(), client_urls: self.client_urls.clone() }
    }
}

/// The members of a membership config, ordered by id. In a joint config every member of either
/// side is a voter.
pub fn members_of(membership: &Membership<u64, MemberNode>) -> Vec<MemberInfo> {
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| MemberInfo {
            id: MemberId(*id),
            name: node.name.clone(),
            peer_urls: node.peer_urls.clone(),
            client_urls: node.client_urls.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

/// A request one member sends another over the peer `Admin` RPC; the first six are also what
/// the gRPC Cluster and Maintenance services ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    Add {
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    Remove {
        id: MemberId,
    },
    Update {
        id: MemberId,
        peer_urls: Vec<String>,
    },
    Promote {
        id: MemberId,
    },
    /// A member announcing its name and client URLs once it runs.
    Publish {
        id: MemberId,
        name: String,
        client_urls: Vec<String>,
    },
    MoveLeader {
        target: MemberId,
    },
    /// From the leader to a MoveLeader target: campaign until elected or `timeout_ms` passes.
    Campaign {
        timeout_ms: u64,
    },
    /// From a member joining an existing cluster to any member: who is the cluster?
    ClusterInfo,
    /// From the leader to a member it just removed: a removed follower is no longer replicated
    /// to, so it may never apply the membership that removes it and would not know otherwise.
    YouWereRemoved,
}

/// What an administration request answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOutput {
    /// The membership after a change, and the member an add created.
    Members {
        added: Option<MemberInfo>,
        members: Vec<MemberInfo>,
    },
    Done,
    ClusterInfo {
        cluster_id: u64,
        members: Vec<MemberInfo>,
    },
}

/// Why a request did not run. Only `NotLeader` is retried elsewhere: nothing was proposed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum AdminError {
    NotLeader,
    Store(StoreError),
}

type AdminReply = Result<AdminOutput, AdminError>;

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

// ---- pure planning ----------------------------------------------------------------------------

/// Replication progress the leader knows, for etcd's learner-readiness rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The leader's own last log index.
    pub leader_index: u64,
    /// The highest index known to be replicated to each other member.
    pub matched: BTreeMap<u64, u64>,
}

/// What the leader does for a request: answer at once, or propose a membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Answer(AdminOutput),
    Change { change: ChangeMembers<u64, MemberNode>, added: Option<MemberInfo> },
}

/// Decides, from the current members alone, what a membership request does or which etcd error
/// it fails with. `token` is the cluster token new member ids derive from.
///
/// Adding a voter is immediate (`AddVoters`: joint consensus straight to the larger voter set),
/// as etcd does, rather than adding a learner, waiting for it to catch up and promoting it.
/// The operator's workflow is `member add`, *then* start the new member with the printed
/// settings, so a MemberAdd that waited for the new member to catch up would wait for something
/// that cannot happen yet. Availability is kept by etcd's strict reconfiguration check instead:
/// a voter is added only if the started members are a quorum of the new voter set, so the
/// cluster keeps committing while the new member is still unstarted (e.g. 3 started of 4).
/// Operators who want no quorum change until the member has caught up add a learner and
/// promote it, which is refused until it holds 90% of the leader's log, as in etcd.
pub fn plan(members: &[MemberInfo], req: &AdminRequest, token: &str, progress: &Progress) -> StoreResult<Plan> {
    let find = |id: MemberId| members.iter().find(|m| m.id == id).ok_or(StoreError::MemberNotFound);
    match req {
        AdminRequest::Add { peer_urls, is_learner } => {
            check_urls(peer_urls)?;
            if members.iter().any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u))) {
                return Err(StoreError::PeerUrlExists);
            }
            let id = member_id_of(peer_urls, token);
            if members.iter().any(|m| m.id == id) {
                return Err(StoreError::MemberIdExists);
            }
            if *is_learner && members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
                return Err(StoreError::TooManyLearners);
            }
            if !*is_learner && !ready_to_add_voter(members) {
                return Err(StoreError::NotEnoughStartedMembers);
            }
            let added = MemberInfo {
                id,
                name: String::new(),
                peer_urls: peer_urls.clone(),
                client_urls: Vec::new(),
                is_learner: *is_learner,
            };
            let nodes = BTreeMap::from([(id.0, added.node())]);
            let change = if *is_learner { ChangeMembers::AddNodes(nodes) } else { ChangeMembers::AddVoters(nodes) };
            Ok(Plan::Change { change, added: Some(added) })
        }
        AdminRequest::Remove { id } => {
            let m = find(*id)?;
            let ids = BTreeSet::from([id.0]);
            if m.is_learner {
                return Ok(Plan::Change { change: ChangeMembers::RemoveNodes(ids), added: None });
            }
            if !ready_to_remove_voter(members, *id) {
                return Err(StoreError::NotEnoughStartedMembers);
            }
            Ok(Plan::Change { change: ChangeMembers::RemoveVoters(ids), added: None })
        }
        AdminRequest::Update { id, peer_urls } => {
            let m = find(*id)?;
            check_urls(peer_urls)?;
            if members.iter().any(|o| o.id != *id && o.peer_urls.iter().any(|u| peer_urls.contains(u))) {
                return Err(StoreError::PeerUrlExists);
            }
            let node = MemberNode { peer_urls: peer_urls.clone(), ..m.node() };
            Ok(Plan::Change { change: ChangeMembers::SetNodes(BTreeMap::from([(id.0, node)])), added: None })
        }
        AdminRequest::Promote { id } => {
            let m = find(*id)?;
            if !m.is_learner {
                return Err(StoreError::MemberNotLearner);
            }
            let matched = progress.matched.get(&id.0).copied().unwrap_or(0);
            // Integer form of etcd's `match < leaderMatch * 0.9`.
            if u128::from(matched) * 100 < u128::from(progress.leader_index) * u128::from(LEARNER_READY_PERCENT) {
                return Err(StoreError::LearnerNotReady);
            }
            if !ready_to_promote(members) {
                return Err(StoreError::NotEnoughStartedMembers);
            }
            Ok(Plan::Change { change: ChangeMembers::AddVoterIds(BTreeSet::from([id.0])), added: None })
        }
        AdminRequest::Publish { id, name, client_urls } => {
            let m = find(*id)?;
            if m.name == *name && m.client_urls == *client_urls {
                return Ok(Plan::Answer(AdminOutput::Done));
            }
            let node = MemberNode { name: name.clone(), client_urls: client_urls.clone(), ..m.node() };
            Ok(Plan::Change { change: ChangeMembers::SetNodes(BTreeMap::from([(id.0, node)])), added: None })
        }
        AdminRequest::MoveLeader { .. }
        | AdminRequest::Campaign { .. }
        | AdminRequest::ClusterInfo
        | AdminRequest::YouWereRemoved => Err(StoreError::Internal(format!("{req:?} is not a membership change"))),
    }
}

/// etcd's URL rule for members: non-empty, each `http(s)://host:port` with nothing after it.
fn check_urls(urls: &[String]) -> StoreResult<()> {
    let valid = |url: &String| {
        let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
            return false;
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        match rest.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok(),
            None => false,
        }
    };
    if urls.is_empty() || !urls.iter().all(valid) {
        return Err(StoreError::MemberBadUrls);
    }
    Ok(())
}

fn voters(members: &[MemberInfo]) -> impl Iterator<Item = &MemberInfo> {
    members.iter().filter(|m| !m.is_learner)
}

/// etcd's `IsReadyToAddVotingMember`: the started voters must be a quorum of the voter set
/// after the add (a one-member cluster may always grow to two, to allow restoring from backup).
fn ready_to_add_voter(members: &[MemberInfo]) -> bool {
    let total = voters(members).count() + 1;
    let started = voters(members).filter(|m| m.is_started()).count();
    (started == 1 && total == 2) || started > total / 2
}

/// etcd's `IsReadyToRemoveVotingMember`: the remaining started voters must be a quorum of the
/// remaining voter set.
fn ready_to_remove_voter(members: &[MemberInfo], id: MemberId) -> bool {
    let remaining: Vec<&MemberInfo> = voters(members).filter(|m| m.id != id).collect();
    let started = remaining.iter().filter(|m| m.is_started()).count();
    started > remaining.len() / 2
}

/// etcd's `IsReadyToPromoteMember`: counting the learner as a started voter, the started voters
/// must be a quorum of the voter set after the promotion.
fn ready_to_promote(members: &[MemberInfo]) -> bool {
    let total = voters(members).count() + 1;
    let started = voters(members).filter(|m| m.is_started()).count() + 1;
    started > total / 2
}

// ---- the member's administration state and tasks ----------------------------------------------

/// What a member needs for administration, owned by the member (see `member::Inner`).
pub(crate) struct Admin {
    token: String,
    cluster_id: u64,
    /// This member's name and client URLs, as configured; published into the membership.
    name: String,
    client_urls: Vec<String>,
    /// Serializes changes on the leader: openraft refuses one while another is uncommitted, and
    /// a plan is only valid against the membership it was made from.
    lock: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
    removed: watch::Sender<bool>,
    publisher: Mutex<Option<JoinHandle<()>>>,
}

impl Admin {
    pub(crate) fn new(token: String, cluster_id: u64, name: String, client_urls: Vec<String>) -> Admin {
        Admin {
            token,
            cluster_id,
            name,
            client_urls,
            lock: tokio::sync::Mutex::new(()),
            stop: watch::channel(false).0,
            removed: watch::channel(false).0,
            publisher: Mutex::new(None),
        }
    }

    /// Starts the publisher task (once the peer transport serves, so the leader can reach us).
    pub(crate) fn start(self: &Arc<Admin>, rep: Replicator) {
        let mut slot = self.publisher.lock().expect("publisher lock");
        if slot.is_none() {
            *slot = Some(tokio::spawn(publish_loop(rep, self.clone(), self.stop.subscribe())));
        }
    }

    /// Stops the publisher task and waits for it.
    pub(crate) async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self.publisher.lock().expect("publisher lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Stops serving after a short grace (see [`REMOVED_GRACE`]), as a removed etcd member does.
    async fn report_removed(&self, id: MemberId) {
        tracing::warn!(member = %id, "this member was removed from the cluster");
        let mut stop = self.stop.subscribe();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(REMOVED_GRACE) => {}
        }
        self.removed.send_replace(true);
    }

    /// Resolves once a committed membership no longer contains this member.
    pub(crate) async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|removed| *removed).await;
    }
}

/// Keeps this member's published name and client URLs current, and notices its removal.
async fn publish_loop(rep: Replicator, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    let mut seen_self = false;
    let mut ticker = tokio::time::interval(PUBLISH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = ticker.tick() => {}
        }
        // The applied (hence committed) membership: an uncommitted one may still be undone.
        let node = rep.kv.read().membership.membership().get_node(&rep.id.0).cloned();
        match node {
            Some(node) => {
                seen_self = true;
                if node.name == admin.name && node.client_urls == admin.client_urls {
                    continue;
                }
                let req = AdminRequest::Publish {
                    id: rep.id,
                    name: admin.name.clone(),
                    client_urls: admin.client_urls.clone(),
                };
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    result = execute_with(&rep, &admin, req) => match result {
                        Ok(_) => tracing::info!(member = %rep.id, urls = ?admin.client_urls, "published client URLs"),
                        Err(e) => tracing::info!(member = %rep.id, "publishing failed, will retry: {e}"),
                    }
                }
            }
            // A joining member knows no membership until the leader's log or snapshot arrives;
            // only one that was a member and no longer is has been removed.
            None if seen_self => {
                admin.report_removed(rep.id).await;
                return;
            }
            None => {}
        }
    }
}

// ---- executing requests -------------------------------------------------------------------------

/// Runs a membership or MoveLeader request on the leader, forwarding it if this member does not
/// lead, and returns the outcome.
pub async fn execute(member: &Member, req: AdminRequest) -> StoreResult<AdminOutput> {
    execute_with(&member.inner.rep, &member.inner.admin, req).await
}

async fn execute_with(rep: &Replicator, admin: &Admin, req: AdminRequest) -> StoreResult<AdminOutput> {
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    loop {
        let (leader, url) = rep.leader(deadline).await?;
        let reply = if leader == rep.id.0 {
            on_leader(rep, admin, &req, deadline).await
        } else {
            forward(&rep.network, &url, &req, deadline).await
        };
        match reply {
            Ok(out) => return Ok(out),
            Err(AdminError::NotLeader) => {}
            Err(AdminError::Store(e)) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Timeout);
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Sends `req` to the member at `url` and decodes its reply.
async fn forward(network: &PeerNetwork, url: &str, req: &AdminRequest, deadline: Instant) -> AdminReply {
    let call = async {
        let mut client = network.client(url).map_err(Status::unavailable)?;
        let mut request = tonic::Request::new(encode(req)?);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        decode::<AdminReply>(client.admin(request).await?.into_inner())
    };
    match call.await {
        Ok(reply) => reply,
        // Nothing reached the leader, so trying again (perhaps at a new leader) is safe.
        Err(status) if never_sent(&status) => Err(AdminError::NotLeader),
        // It may or may not have run: report the unknown outcome, as etcd does.
        Err(_) => Err(AdminError::Store(StoreError::Timeout)),
    }
}

/// Serves an administration request another member forwarded to this one.
pub async fn handle_peer(member: &Member, payload: Payload) -> Result<Payload, Status> {
    let req: AdminRequest = decode(payload)?;
    let (rep, admin) = (&member.inner.rep, &member.inner.admin);
    let reply = match req {
        AdminRequest::Campaign { timeout_ms } => campaign(rep, Duration::from_millis(timeout_ms)).await,
        AdminRequest::ClusterInfo => {
            let members = members_of(rep.kv.read().membership.membership());
            Ok(AdminOutput::ClusterInfo { cluster_id: admin.cluster_id, members })
        }
        AdminRequest::YouWereRemoved => {
            // Answer first; the server stops after the grace period.
            let admin = member.inner.admin.clone();
            let id = rep.id;
            let mut slot = admin.publisher.lock().expect("publisher lock");
            // The publisher task is this member's one administration task: replace it by the
            // removal report, so shutdown still finds (and waits for) whatever runs.
            if let Some(publisher) = slot.take() {
                publisher.abort();
            }
            let reporter = admin.clone();
            *slot = Some(tokio::spawn(async move { reporter.report_removed(id).await }));
            Ok(AdminOutput::Done)
        }
        req => on_leader(rep, admin, &req, Instant::now() + ADMIN_TIMEOUT).await,
    };
    encode(&reply)
}

fn is_leader(rep: &Replicator) -> bool {
    let m = rep.raft.metrics();
    let m = m.borrow();
    m.state == ServerState::Leader && m.current_leader == Some(rep.id.0)
}

/// Executes `req` on this member, which must be the leader.
async fn on_leader(rep: &Replicator, admin: &Admin, req: &AdminRequest, deadline: Instant) -> AdminReply {
    let _serialized = tokio::time::timeout_at(deadline, admin.lock.lock()).await.map_err(|_| StoreError::Timeout)?;
    if let AdminRequest::MoveLeader { target } = req {
        return move_leader(rep, *target, deadline).await;
    }
    loop {
        let (membership, progress) = {
            let m = rep.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader || m.current_leader != Some(rep.id.0) {
                return Err(AdminError::NotLeader);
            }
            let matched =
                m.replication.iter().flatten().map(|(id, log_id)| (*id, log_id.map_or(0, |l| l.index))).collect();
            (
                m.membership_config.membership().clone(),
                Progress { leader_index: m.last_log_index.unwrap_or(0), matched },
            )
        };
        let (change, added) = match plan(&members_of(&membership), req, &admin.token, &progress)? {
            Plan::Answer(out) => return Ok(out),
            Plan::Change { change, added } => (change, added),
        };
        tracing::info!(?req, "changing the cluster membership");
        match tokio::time::timeout_at(deadline, rep.raft.change_membership(change, false)).await {
            Ok(Ok(resp)) => {
                let members = members_of(resp.membership.as_ref().unwrap_or(&membership));
                if let AdminRequest::Remove { id } = req {
                    tell_removed(rep, &membership, *id).await;
                }
                return Ok(AdminOutput::Members { added, members });
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => return Err(AdminError::NotLeader),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            )))) => {
                // The previous change (perhaps by an earlier leader) is not committed yet.
                if Instant::now() + RETRY_PAUSE >= deadline {
                    return Err(AdminError::Store(StoreError::Timeout));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok(Err(RaftError::APIError(e))) => return Err(AdminError::Store(StoreError::Internal(e.to_string()))),
            Ok(Err(RaftError::Fatal(_))) => return Err(AdminError::Store(StoreError::Stopped)),
            Err(_) => return Err(AdminError::Store(StoreError::Timeout)),
        }
    }
}

/// Tells a member it was removed (best effort, briefly: it may be down for good).
async fn tell_removed(rep: &Replicator, before: &Membership<u64, MemberNode>, id: MemberId) {
    if id == rep.id {
        return; // The leader applies its own removal.
    }
    let Some(url) = before.get_node(&id.0).and_then(|n| n.peer_urls.first()) else { return };
    let deadline = Instant::now() + Duration::from_secs(1);
    if let Err(e) = forward(&rep.network, url, &AdminRequest::YouWereRemoved, deadline).await {
        tracing::info!(member = %id, "could not tell the removed member: {e:?}");
    }
}

/// Re-enables the leader's heartbeats however a transfer ends.
struct HeartbeatsOff<'a>(&'a Replicator);

impl Drop for HeartbeatsOff<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
    }
}

/// MoveLeader, approximated: openraft 0.9 has no leadership transfer (no TimeoutNow message).
///
/// The leader waits until the target has its whole log (so the target can win), then stops
/// sending heartbeats and asks the target to campaign repeatedly. Followers refuse votes while
/// their leader lease (`election_timeout_max`) runs, and start their own elections only after
/// lease + election timeout, so once the lease has run out the target's next campaign wins
/// before anyone else times out. The call waits for the target to lead, with a deadline; on
/// failure heartbeats resume and the old leader stays. Client writes during the transfer still
/// replicate and so renew the leases: under write load a transfer may time out (etcd stops
/// proposals during a transfer instead).
async fn move_leader(rep: &Replicator, target: MemberId, deadline: Instant) -> AdminReply {
    if !is_leader(rep) {
        return Err(AdminError::NotLeader);
    }
    if target == rep.id {
        return Ok(AdminOutput::Done);
    }
    let (url, mut metrics) = {
        let metrics = rep.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        if !membership.voter_ids().any(|id| id == target.0) {
            return Err(AdminError::Store(StoreError::BadLeaderTransferee));
        }
        let node = membership.get_node(&target.0).ok_or(StoreError::BadLeaderTransferee)?;
        (node.peer_urls.first().cloned().unwrap_or_default(), metrics.clone())
    };
    let deadline = deadline.min(Instant::now() + TRANSFER_TIMEOUT);
    // 1. The target must hold everything the leader has, or it cannot win the election.
    let caught_up = |m: &openraft::RaftMetrics<u64, MemberNode>| {
        let matched = m.replication.as_ref().and_then(|r| r.get(&target.0).copied().flatten());
        matched.map(|l| l.index) >= m.last_log_index
    };
    let ready = tokio::time::timeout_at(deadline, metrics.wait_for(|m| caught_up(m) || m.state != ServerState::Leader))
        .await
        .map(|r| r.map(|m| m.state == ServerState::Leader));
    match ready {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err(AdminError::NotLeader),
        Ok(Err(_)) => return Err(AdminError::Store(StoreError::Stopped)),
        Err(_) => return Err(AdminError::Store(StoreError::LeaderTransferTimeout)),
    }
    // 2. Let the followers' leases run out and have the target campaign until it leads.
    rep.raft.runtime_config().heartbeat(false);
    let _resume = HeartbeatsOff(rep);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let req = AdminRequest::Campaign { timeout_ms: remaining.as_millis() as u64 };
    match forward(&rep.network, &url, &req, deadline).await {
        Ok(_) => {}
        Err(AdminError::Store(StoreError::Stopped)) => return Err(AdminError::Store(StoreError::Stopped)),
        Err(_) => return Err(AdminError::Store(StoreError::LeaderTransferTimeout)),
    }
    // 3. Return once this member knows the new leader, so the caller sees the change.
    let known = tokio::time::timeout_at(deadline, metrics.wait_for(|m| m.current_leader == Some(target.0)))
        .await
        .map(|r| r.map(drop));
    match known {
        Ok(Ok(())) => Ok(AdminOutput::Done),
        Ok(Err(_)) => Err(AdminError::Store(StoreError::Stopped)),
        Err(_) => Err(AdminError::Store(StoreError::LeaderTransferTimeout)),
    }
}

/// The MoveLeader target's side: trigger elections until this member leads or time runs out.
async fn campaign(rep: &Replicator, timeout: Duration) -> AdminReply {
    let deadline = Instant::now() + timeout.min(TRANSFER_TIMEOUT);
    let mut metrics = rep.raft.metrics();
    loop {
        if is_leader(rep) {
            return Ok(AdminOutput::Done);
        }
        if Instant::now() >= deadline {
            return Err(AdminError::Store(StoreError::LeaderTransferTimeout));
        }
        rep.raft.trigger().elect().await.map_err(|_| StoreError::Stopped)?;
        let wait = deadline.min(Instant::now() + CAMPAIGN_RETRY);
        let _ = tokio::time::timeout_at(wait, metrics.wait_for(|m| m.state == ServerState::Leader)).await;
    }
}

/// For a member joining an existing cluster: asks the members at `peer_urls` for the cluster id,
/// and checks that this member was added to the cluster first (as `etcd` refuses to join a
/// cluster that does not list it).
pub(crate) async fn join_cluster(peer_urls: &[String], me: MemberId) -> Result<u64, String> {
    let network = PeerNetwork::default();
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut last = String::from("no other member in --initial-cluster");
    loop {
        for url in peer_urls {
            let attempt = deadline.min(Instant::now() + Duration::from_secs(2));
            match forward(&network, url, &AdminRequest::ClusterInfo, attempt).await {
                Ok(AdminOutput::ClusterInfo { cluster_id, members }) if members.iter().any(|m| m.id == me) => {
                    return Ok(cluster_id);
                }
                Ok(AdminOutput::ClusterInfo { .. }) => {
                    last = format!("{url} does not list member {me}: add it with `etcdctl member add` first");
                }
                Ok(other) => last = format!("{url} answered {other:?}"),
                Err(AdminError::NotLeader) => last = format!("{url} is unreachable"),
                Err(AdminError::Store(e)) => last = format!("{url}: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("cannot join the existing cluster: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, url: &str, is_learner: bool) -> MemberInfo {
        MemberInfo {
            id: MemberId(id),
            name: name.to_string(),
            peer_urls: vec![url.to_string()],
            client_urls: Vec::new(),
            is_learner,
        }
    }

    fn three() -> Vec<MemberInfo> {
        vec![
            member(1, "a", "http://10.0.0.1:2380", false),
            member(2, "b", "http://10.0.0.2:2380", false),
            member(3, "c", "http://10.0.0.3:2380", false),
        ]
    }

    fn add(url: &str, is_learner: bool) -> AdminRequest {
        AdminRequest::Add { peer_urls: vec![url.to_string()], is_learner }
    }

    fn err(members: &[MemberInfo], req: AdminRequest) -> StoreError {
        plan(members, &req, "t", &Progress::default()).unwrap_err()
    }

    #[test]
    fn add_creates_an_unstarted_member_with_a_derived_id() {
        let urls = vec!["http://10.0.0.4:2380".to_string()];
        let Plan::Change { change, added: Some(added) } =
            plan(&three(), &add(&urls[0], false), "t", &Progress::default()).unwrap()
        else {
            panic!("an add changes the membership");
        };
        assert_eq!(added.id, member_id_of(&urls, "t"));
        assert!(!added.is_started() && !added.is_learner);
        assert!(matches!(change, ChangeMembers::AddVoters(n) if n.contains_key(&added.id.0)));
        let Plan::Change { change, .. } = plan(&three(), &add(&urls[0], true), "t", &Progress::default()).unwrap()
        else {
            panic!("a learner add changes the membership");
        };
        assert!(matches!(change, ChangeMembers::AddNodes(_)));
    }

    #[test]
    fn add_errors_are_etcds() {
        assert_eq!(err(&three(), add("http://10.0.0.1:2380", false)), StoreError::PeerUrlExists);
        for bad in ["10.0.0.9:2380", "http://10.0.0.9", "ftp://x:1", "http://:1", "http://h:99999"] {
            assert_eq!(err(&three(), add(bad, false)), StoreError::MemberBadUrls, "{bad}");
        }
        assert_eq!(
            err(&three(), AdminRequest::Add { peer_urls: vec![], is_learner: false }),
            StoreError::MemberBadUrls
        );
        let mut with_learner = three();
        with_learner.push(member(4, "", "http://10.0.0.4:2380", true));
        assert_eq!(err(&with_learner, add("http://10.0.0.5:2380", true)), StoreError::TooManyLearners);
        // Two of three started: adding a fourth voter needs three started.
        let mut unstarted = three();
        unstarted[2].name.clear();
        assert_eq!(err(&unstarted, add("http://10.0.0.5:2380", false)), StoreError::NotEnoughStartedMembers);
        // A learner changes no quorum, so it may always be added.
        assert!(plan(&unstarted, &add("http://10.0.0.5:2380", true), "t", &Progress::default()).is_ok());
        // A single started member may grow to two (etcd's restore-from-backup case).
        assert!(plan(&three()[..1], &add("http://10.0.0.5:2380", false), "t", &Progress::default()).is_ok());
    }

    #[test]
    fn remove_checks_membership_and_started_quorum() {
        assert_eq!(err(&three(), AdminRequest::Remove { id: MemberId(9) }), StoreError::MemberNotFound);
        let Plan::Change { change, .. } =
            plan(&three(), &AdminRequest::Remove { id: MemberId(3) }, "t", &Progress::default()).unwrap()
        else {
            panic!("remove changes the membership");
        };
        assert_eq!(change, ChangeMembers::RemoveVoters(BTreeSet::from([3])));
        let mut members = three();
        members.push(member(4, "", "http://10.0.0.4:2380", true));
        let Plan::Change { change, .. } =
            plan(&members, &AdminRequest::Remove { id: MemberId(4) }, "t", &Progress::default()).unwrap()
        else {
            panic!("remove changes the membership");
        };
        assert_eq!(change, ChangeMembers::RemoveNodes(BTreeSet::from([4])));
        // Removing a started voter where one of the two left is unstarted leaves no quorum.
        members[2].name.clear();
        assert_eq!(err(&members, AdminRequest::Remove { id: MemberId(1) }), StoreError::NotEnoughStartedMembers);
        // Removing the unstarted one is what restores health.
        assert!(plan(&members, &AdminRequest::Remove { id: MemberId(3) }, "t", &Progress::default()).is_ok());
    }

    #[test]
    fn promote_requires_a_caught_up_learner() {
        let mut members = three();
        members.push(member(4, "d", "http://10.0.0.4:2380", true));
        let promote = |matched: u64| {
            let progress = Progress { leader_index: 100, matched: BTreeMap::from([(4, matched)]) };
            plan(&members, &AdminRequest::Promote { id: MemberId(4) }, "t", &progress)
        };
        assert_eq!(promote(89).unwrap_err(), StoreError::LearnerNotReady);
        let Plan::Change { change, .. } = promote(90).unwrap() else { panic!("promote changes the membership") };
        assert_eq!(change, ChangeMembers::AddVoterIds(BTreeSet::from([4])));
        assert_eq!(err(&members, AdminRequest::Promote { id: MemberId(1) }), StoreError::MemberNotLearner);
        assert_eq!(err(&members, AdminRequest::Promote { id: MemberId(7) }), StoreError::MemberNotFound);
    }

    #[test]
    fn update_and_publish_set_nodes() {
        let members = three();
        let update = AdminRequest::Update { id: MemberId(2), peer_urls: vec!["http://10.0.0.1:2380".into()] };
        assert_eq!(err(&members, update), StoreError::PeerUrlExists);
        // Its own URLs again are fine.
        let same = AdminRequest::Update { id: MemberId(2), peer_urls: vec!["http://10.0.0.2:2380".into()] };
        assert!(plan(&members, &same, "t", &Progress::default()).is_ok());
        let publish = AdminRequest::Publish { id: MemberId(1), name: "a".into(), client_urls: vec![] };
        assert_eq!(plan(&members, &publish, "t", &Progress::default()).unwrap(), Plan::Answer(AdminOutput::Done));
        let publish =
            AdminRequest::Publish { id: MemberId(1), name: "a".into(), client_urls: vec!["http://c:1".into()] };
        let Plan::Change { change: ChangeMembers::SetNodes(nodes), .. } =
            plan(&members, &publish, "t", &Progress::default()).unwrap()
        else {
            panic!("publish sets the node");
        };
        assert_eq!(nodes[&1].client_urls, ["http://c:1"]);
        assert_eq!(nodes[&1].peer_urls, ["http://10.0.0.1:2380"], "peer URLs are kept");
    }

    #[test]
    fn members_of_marks_learners() {
        let nodes: BTreeMap<u64, MemberNode> =
            [1, 2].into_iter().map(|id| (id, MemberNode { name: format!("m{id}"), ..Default::default() })).collect();
        let membership = Membership::new(vec![BTreeSet::from([1])], nodes);
        let members = members_of(&membership);
        assert_eq!(members.iter().map(|m| (m.id.0, m.is_learner)).collect::<Vec<_>>(), [(1, false), (2, true)]);
    }
}
