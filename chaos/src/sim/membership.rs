//! The membership nemesis's hands: a simulated client that changes the cluster's membership
//! through the etcd Cluster API (`MemberRemove`, `MemberAdd`), as an operator's `etcdctl member
//! remove/add` would, while the other faults run.
//!
//! The harness decides *what* to change (the schedule and [`super::nemesis::membership_step`])
//! and queues it here; this client only carries it out, one request at a time, through any
//! current member (the one asked forwards it to the leader). A request is retried through
//! another member until the cluster answers it, and an answer that says the change is already
//! in place ("member not found" for a remove, "Peer URLs already exists" for an add) counts as
//! done: an earlier attempt that timed out may have committed. What the cluster really applied
//! is not taken from these answers: the harness watches the members' applied membership
//! ([`super::roster`]) and starts an added member's host when it appears there.

use crate::history::Tick;
use crate::sim::client::Cluster;
use crate::sim::record::Shared;
use berth_proto::etcdserverpb as pb;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bound on one Cluster API call (the store gives a change 8 s; a member that cannot reach the
/// leader would hold the call that long).
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// A request is given up after this long (simulated ms), answered or not.
const GIVE_UP_MS: Tick = 12_000;
const BACKOFF: Duration = Duration::from_millis(200);

/// A change the harness asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Remove { host: String, id: u64 },
    Add { host: String, peer_url: String },
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Remove { host, id } => write!(f, "MemberRemove {host} ({id:x})"),
            Request::Add { host, peer_url } => write!(f, "MemberAdd {host} ({peer_url})"),
        }
    }
}

/// How the cluster answered one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// The change is in place (made now, or by an earlier attempt).
    Done(String),
    /// The cluster refused it for good (e.g. etcd's "not enough started members").
    Refused(String),
    /// No answer, or one that says nothing about the change (no leader, timeout): try again.
    Retry(String),
}

/// Classifies the answer to an attempt of `req`, by etcd's error messages.
fn classify(req: &Request, result: Result<String, tonic::Status>) -> Answer {
    let status = match result {
        Ok(done) => return Answer::Done(done),
        Err(status) => status,
    };
    let message = status.message();
    match (req, message) {
        (Request::Remove { .. }, "etcdserver: member not found") => Answer::Done("already removed".into()),
        (Request::Add { .. }, "etcdserver: Peer URLs already exists" | "etcdserver: member ID already exist") => {
            Answer::Done("already added".into())
        }
        (_, "etcdserver: re-configuration failed due to not enough started members")
        | (_, "etcdserver: too many learner members in cluster")
        | (_, "etcdserver: given member URLs are invalid") => Answer::Refused(message.to_string()),
        _ => Answer::Retry(format!("{:?}: {message}", status.code())),
    }
}

pub struct MembershipClient {
    pub cluster: Cluster,
    pub requests: mpsc::UnboundedReceiver<Request>,
    /// Requests queued or in progress; the harness starts no change while one is.
    pub pending: Arc<AtomicUsize>,
}

impl MembershipClient {
    /// Carries out requests until the harness closes the queue (at the heal).
    pub async fn run(mut self, shared: Arc<Shared>) {
        while let Some(req) = self.requests.recv().await {
            let outcome = self.carry_out(&req, &shared).await;
            shared.lock().membership_log.push((shared.now(), format!("{req}: {outcome}")));
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn carry_out(&mut self, req: &Request, shared: &Shared) -> String {
        let give_up = shared.now() + GIVE_UP_MS;
        let mut via = self.cluster.first(0);
        let mut last = String::from("no attempt");
        while shared.now() < give_up {
            let result = tokio::time::timeout(CALL_DEADLINE, self.attempt(via, req)).await;
            let result = result.unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client deadline")));
            match classify(req, result) {
                Answer::Done(how) => return format!("{how} (via {})", self.cluster.host(via)),
                Answer::Refused(why) => return format!("refused: {why}"),
                Answer::Retry(why) => last = format!("{} via {}", why, self.cluster.host(via)),
            }
            self.cluster.reset(via);
            via = self.cluster.after(via);
            tokio::time::sleep(BACKOFF).await;
        }
        format!("given up: {last}")
    }

    async fn attempt(&mut self, via: usize, req: &Request) -> Result<String, tonic::Status> {
        let mut cluster = self.cluster.cluster(via);
        match req {
            Request::Remove { id, .. } => {
                let resp = cluster.member_remove(pb::MemberRemoveRequest { id: *id }).await?.into_inner();
                Ok(format!("removed, {} members", resp.members.len()))
            }
            Request::Add { peer_url, .. } => {
                let add = pb::MemberAddRequest { peer_ur_ls: vec![peer_url.clone()], is_learner: false };
                let resp = cluster.member_add(add).await?.into_inner();
                let id = resp.member.map_or(0, |m| m.id);
                Ok(format!("added as {id:x}, {} members", resp.members.len()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_that_say_the_change_is_in_place_count_as_done() {
        let remove = Request::Remove { host: "m2".into(), id: 7 };
        let add = Request::Add { host: "m4".into(), peer_url: "http://m4:2380".into() };
        let status = |msg: &str| Err(tonic::Status::failed_precondition(msg));
        assert!(matches!(classify(&remove, Ok("removed".into())), Answer::Done(_)));
        assert!(matches!(classify(&remove, status("etcdserver: member not found")), Answer::Done(_)));
        assert!(matches!(classify(&add, status("etcdserver: Peer URLs already exists")), Answer::Done(_)));
        // "not found" for an add, or "already exists" for a remove, say nothing of the change.
        assert!(matches!(classify(&add, status("etcdserver: member not found")), Answer::Retry(_)));
        let refused = "etcdserver: re-configuration failed due to not enough started members";
        assert!(matches!(classify(&remove, status(refused)), Answer::Refused(_)));
        assert!(matches!(classify(&add, Err(tonic::Status::unavailable("etcdserver: no leader"))), Answer::Retry(_)));
        assert!(matches!(classify(&add, Err(tonic::Status::deadline_exceeded("x"))), Answer::Retry(_)));
    }
}
