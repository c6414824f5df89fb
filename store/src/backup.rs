//! Backups of the store: the file `Maintenance.Snapshot` streams (what `etcdctl snapshot save`
//! writes) and `berth snapshot restore`, which turns such a file into a new member's data dir,
//! like `etcdutl snapshot restore`.
//!
//! File format (all integers little-endian):
//! ```text
//! 0   magic "BERTHBAK"
//! 8   format version (u32) = 1, then 4 reserved zero bytes
//! 16  payload length (u64)
//! 24  payload: the state machine's snapshot body (revision, compaction point, leases, history)
//! ..  zero padding up to a multiple of 512 bytes
//! ..  SHA-256 of everything before it (32 bytes)
//! ```
//! The shape of the trailer is etcd's: `etcdctl snapshot save` refuses a stream whose length is
//! not `512·k + 32` ("sha256 checksum not found"), and `etcdutl` verifies the trailing digest.
//! The payload is not a bbolt database, so etcd's own tools cannot restore it; `berth` can.
//!
//! A restored data dir starts as if its cluster had been bootstrapped with the new initial
//! membership and had then installed the backup as a snapshot at log index 0: every restored
//! member holds the same state, so they elect a leader and carry on from the backup's revision.

use crate::codec;
use crate::engine::{write_file_durably, SharedEngine, SledEngine};
use crate::ids::{MemberId, Revision};
use crate::member::{
    cluster_id_of, initial_members, member_id_of, ClusterState, Identity, MemberConfig, IDENTITY_FILE,
};
use crate::raft::state_machine::seed_from_backup;
use crate::raft::{LogId, SnapshotMeta, StoredMembership};
use openraft::{CommittedLeaderId, Membership};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"BERTHBAK";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
/// etcd's alignment: the digest follows a whole number of 512-byte sectors.
const ALIGN: usize = 512;
const DIGEST_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not a Berth snapshot file: {0}")]
    Format(String),
    #[error("snapshot checksum mismatch: the file is corrupt or truncated")]
    Checksum,
    #[error("data dir {0} is not empty; refusing to overwrite it")]
    NotEmpty(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(String),
}

/// Wraps a snapshot payload into the backup file format.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let body_len = (HEADER_LEN + payload.len()).div_ceil(ALIGN) * ALIGN;
    let mut out = Vec::with_capacity(body_len + DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(body_len, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Checks a backup file (alignment, digest, header) and returns its payload.
pub fn decode(file: &[u8]) -> Result<&[u8], BackupError> {
    if file.len() % ALIGN != DIGEST_LEN || file.len() < ALIGN + DIGEST_LEN {
        return Err(BackupError::Format(format!("{} bytes is not 512·k + 32 (no sha256 trailer)", file.len())));
    }
    let (body, digest) = file.split_at(file.len() - DIGEST_LEN);
    if Sha256::digest(body).as_slice() != digest {
        return Err(BackupError::Checksum);
    }
    if &body[..8] != MAGIC {
        return Err(BackupError::Format("unknown magic (an etcd snapshot cannot be restored by berth)".into()));
    }
    let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(BackupError::Format(format!("format version {version}, this berth reads {FORMAT_VERSION}")));
    }
    let len = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| HEADER_LEN.checked_add(len))
        .filter(|end| *end <= body.len())
        .ok_or_else(|| BackupError::Format(format!("payload length {len} exceeds the file")))?;
    Ok(&body[HEADER_LEN..end])
}

/// What `berth snapshot restore` needs: the file and the new member's `berth server` flags.
#[derive(Clone, Debug)]
pub struct RestoreConfig {
    pub snapshot: PathBuf,
    pub data_dir: PathBuf,
    pub name: String,
    /// (name, peer URL) pairs of the new cluster, as `--initial-cluster`.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: Vec<String>,
}

/// What a restore created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub member_id: MemberId,
    pub cluster_id: u64,
    pub revision: Revision,
    pub members: usize,
}

/// Creates a new member data dir holding the backup at `config.snapshot`, for a cluster whose
/// membership is `config.initial_cluster`. Refuses a data dir that exists and is not empty.
pub fn restore(config: &RestoreConfig) -> Result<Restored, BackupError> {
    let dir = config.data_dir.display().to_string();
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| BackupError::Io { path, source }
    };
    match std::fs::read_dir(&config.data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(dir));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&config.data_dir)(e)),
    }
    let file = std::fs::read(&config.snapshot).map_err(io(&config.snapshot))?;
    let payload = decode(&file)?;

    // The same derivations as a member starting with these flags on an empty data dir.
    let member_config = MemberConfig {
        name: config.name.clone(),
        data_dir: config.data_dir.clone(),
        advertise_client_urls: Vec::new(),
        initial_advertise_peer_urls: config.initial_advertise_peer_urls.clone(),
        initial_cluster: config.initial_cluster.clone(),
        initial_cluster_state: ClusterState::New,
        initial_cluster_token: config.initial_cluster_token.clone(),
        snapshot_count: 0,
        snapshot_catchup_entries: 0,
    };
    let members = initial_members(&member_config).map_err(|e| BackupError::Config(e.to_string()))?;
    let my_id = member_id_of(&config.initial_advertise_peer_urls, &config.initial_cluster_token);
    if members.get(&my_id.0).is_none_or(|m| m.name != config.name) {
        return Err(BackupError::Config(format!(
            "--initial-cluster has no entry {}={} matching --name and --initial-advertise-peer-urls",
            config.name,
            config.initial_advertise_peer_urls.join(",")
        )));
    }
    let cluster_id = cluster_id_of(&members, &config.initial_cluster_token);

    std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
    let identity = Identity {
        name: config.name.clone(),
        member_id: my_id.0,
        cluster_id,
        token: config.initial_cluster_token.clone(),
    };
    let revision = match write_data_dir(&config.data_dir, &members, payload, &identity) {
        Ok(revision) => revision,
        Err(e) => {
            // The dir was empty or absent: remove what this restore put there, so it can be
            // retried as it is.
            if let Ok(entries) = std::fs::read_dir(&config.data_dir) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_dir_all(entry.path()).or_else(|_| std::fs::remove_file(entry.path()));
                }
            }
            return Err(e);
        }
    };
    Ok(Restored { member_id: my_id, cluster_id, revision, members: members.len() })
}

/// Writes the member database seeded with the backup, then the identity file.
///
/// The database first, the identity last: a restore interrupted in between leaves a database
/// without identity, which `berth server` refuses to start on, rather than an empty member that
/// would bootstrap a new, empty cluster.
fn write_data_dir(
    data_dir: &Path,
    members: &std::collections::BTreeMap<u64, crate::raft::MemberNode>,
    payload: &[u8],
    identity: &Identity,
) -> Result<Revision, BackupError> {
    let storage = |e: crate::engine::EngineError| BackupError::Storage(e.to_string());
    let revision = {
        let engine: SharedEngine = Arc::new(SledEngine::open(&data_dir.join("member")).map_err(storage)?);
        // Log index 0 of term 0 is where `Raft::initialize` puts a new cluster's membership.
        let log_id = LogId::new(CommittedLeaderId::new(0, 0), 0);
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(Some(log_id), Membership::from(members.clone())),
            snapshot_id: "restored".to_string(),
        };
        let revision = seed_from_backup(&engine, &meta, payload).map_err(storage)?;
        engine.sync().map_err(storage)?;
        revision
    };
    let sealed = codec::seal(identity).map_err(|e| BackupError::Storage(e.to_string()))?;
    write_file_durably(&data_dir.join(IDENTITY_FILE), &[&sealed])
        .map_err(|e| BackupError::Storage(format!("{IDENTITY_FILE}: {e}")))?;
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_files_have_etcds_trailer_shape_and_round_trip() {
        for len in [0, 1, 488, 489, 512, 5000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let file = encode(&payload);
            assert_eq!(file.len() % 512, 32, "etcdctl's hasChecksum for a {len}-byte payload");
            assert_eq!(decode(&file).unwrap(), payload.as_slice());
        }
    }

    #[test]
    fn damaged_files_are_refused() {
        let file = encode(b"payload");
        let mut flipped = file.clone();
        flipped[30] ^= 1;
        assert!(matches!(decode(&flipped), Err(BackupError::Checksum)));
        assert!(matches!(decode(&file[..file.len() - 1]), Err(BackupError::Format(_))));
        assert!(matches!(decode(&[]), Err(BackupError::Format(_))));
        // A well-formed trailer around a foreign body (e.g. an etcd bbolt file).
        let mut foreign = vec![7u8; 512];
        let digest = Sha256::digest(&foreign);
        foreign.extend_from_slice(&digest);
        assert!(matches!(decode(&foreign), Err(BackupError::Format(_))));
        // A length field pointing past the end.
        let mut lying = encode(b"x");
        lying[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let body_len = lying.len() - 32;
        let digest = Sha256::digest(&lying[..body_len]);
        lying[body_len..].copy_from_slice(&digest);
        assert!(matches!(decode(&lying), Err(BackupError::Format(_))));
    }

    #[test]
    fn restore_refuses_non_empty_dirs_and_foreign_members() {
        let tmp = tempfile::tempdir().unwrap();
        let snapshot = tmp.path().join("backup.db");
        std::fs::write(&snapshot, encode(b"not a body")).unwrap();
        let occupied = tmp.path().join("occupied");
        std::fs::create_dir_all(&occupied).unwrap();
        std::fs::write(occupied.join("x"), b"x").unwrap();
        let config = RestoreConfig {
            snapshot,
            data_dir: occupied,
            name: "a".into(),
            initial_cluster: vec![("a".into(), "http://127.0.0.1:1".into())],
            initial_cluster_token: "t".into(),
            initial_advertise_peer_urls: vec!["http://127.0.0.1:1".into()],
        };
        assert!(matches!(restore(&config), Err(BackupError::NotEmpty(_))));
        let fresh = RestoreConfig { data_dir: tmp.path().join("fresh"), name: "b".into(), ..config.clone() };
        assert!(matches!(restore(&fresh), Err(BackupError::Config(_))));
        // A payload that is not a snapshot body fails, and leaves no identity behind.
        let bad = RestoreConfig { data_dir: tmp.path().join("bad"), ..config };
        assert!(matches!(restore(&bad), Err(BackupError::Storage(_))));
        assert!(std::fs::read_dir(&bad.data_dir).unwrap().next().is_none(), "a failed restore leaves nothing");
    }
}
