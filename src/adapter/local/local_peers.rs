//! `PeerFiles`: the local backend's peer records, one file per peer (`peers/<cluster-id>.json`),
//! made durable by a write-ahead journal with group commit.
//!
//! Every change (a new identity, a replaced one, an origin token, a removal) goes to one writer
//! thread, never to an async worker. The writer takes every change queued while it was busy,
//! appends them to `peers.journal` in one write, flushes the journal to disk once
//! (`fdatasync`), then writes the record files (temp file and rename, no fsync) and only then
//! answers: concurrent issuances share one disk flush, and an answer means the change is in a
//! flushed journal, so it survives `kill -9` and power loss. Readers read record files only,
//! so memory does not grow with the number of peers.
//!
//! The journal is emptied by checkpoints: when it exceeds [`JOURNAL_LIMIT`], the serving process
//! renames it to `peers.journal.old`, starts a new one, and a background thread fsyncs the
//! record files written meanwhile and the directory, then deletes the old journal. At start,
//! `serve` ([`PeerFiles::recover`]) removes temp files left by a crash, migrates the layout of
//! earlier versions (`peers/<id>/{tenant.json,identity.json,origin-token}`), replays both
//! journals (a line that fails its checksum is a write that was never answered and is dropped),
//! fsyncs the result and empties the journals.
//!
//! Other processes on the same data dir (`tenant remove`) append to the same journal through
//! their own writer (appends with `O_APPEND` never interleave within a line); only the serving
//! process rotates and checkpoints.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::fs::{ensure_private_dir, write_private_file};
use crate::identity::port::StoreError;

/// Journal size (bytes written by this process) that starts a checkpoint: about 1,500 issuances.
pub const JOURNAL_LIMIT: u64 = 4 << 20;
/// Changes committed together at most (one journal write, one flush).
const MAX_BATCH: usize = 256;
/// Threads fsyncing record files at a checkpoint (the disk merges concurrent flushes).
const SYNC_THREADS: usize = 8;
const PEERS_DIR: &str = "peers";
const JOURNAL: &str = "peers.journal";
const OLD_JOURNAL: &str = "peers.journal.old";

/// What is stored for one peer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerFile {
    pub cluster_id: String,
    pub cluster_name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Digest (hex) of the origin token the identity was issued with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_token_sha256: Option<String>,
    /// The certificate a renewal replaced, and when (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_replaced_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_token: Option<String>,
}

impl fmt::Debug for PeerFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerFile")
            .field("cluster_id", &self.cluster_id)
            .field("cluster_name", &self.cluster_name)
            .field("namespace", &self.namespace)
            .field("identity", &self.certificate.as_ref().map(|_| "<redacted>"))
            .field("origin_token", &self.origin_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What a change makes of a peer's record.
pub enum Next {
    /// Nothing to write (the record is already as it should be).
    Keep,
    Put(Box<PeerFile>),
    Remove,
}

/// A read-modify-write of one peer's record, run on the writer thread (so two changes of one
/// peer never interleave within this process).
pub type Change = Box<dyn FnOnce(Option<&PeerFile>) -> Result<Next, StoreError> + Send>;

/// What start-up recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub temp_files_removed: usize,
    pub legacy_peers_migrated: usize,
    pub journal_changes_replayed: usize,
    pub torn_lines_dropped: usize,
}

/// The peer records of one data dir.
pub struct PeerFiles {
    data_dir: PathBuf,
    dir: PathBuf,
    /// The serving process: rotates and checkpoints the journal.
    owner: bool,
    writer: OnceLock<Arc<WriterLink>>,
}

/// The way to a data dir's writer thread. Every `PeerFiles` of one data dir in this process
/// shares it (two servers on one data dir in one process, as in tests, or `serve` and a command
/// run in-process), so changes of one peer are serialised even across them; the thread ends
/// when the last link is dropped.
struct WriterLink {
    jobs: mpsc::Sender<Job>,
}

/// The live writers of this process, by canonical data dir.
static WRITERS: Mutex<Vec<(PathBuf, Weak<WriterLink>)>> = Mutex::new(Vec::new());

struct Job {
    cluster_id: String,
    change: Change,
    reply: oneshot::Sender<Result<Option<PeerFile>, StoreError>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum JournalOp {
    Put(Box<PeerFile>),
    Remove { cluster_id: String },
}

impl PeerFiles {
    /// The records under `data_dir`; `owner` for the serving process only.
    pub fn new(data_dir: &Path, owner: bool) -> Self {
        Self { data_dir: data_dir.to_owned(), dir: data_dir.join(PEERS_DIR), owner, writer: OnceLock::new() }
    }

    /// The record of `cluster_id`, read on a blocking thread.
    pub async fn read(&self, cluster_id: &str) -> Result<Option<PeerFile>, StoreError> {
        let (dir, id) = (self.dir.clone(), cluster_id.to_owned());
        blocking(move || read_record(&dir, &id)).await
    }

    /// Every record, sorted by cluster ID (blocking).
    pub fn list(&self) -> Result<Vec<PeerFile>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(format!("listing {}", self.dir.display()), e)),
        };
        let mut ids = HashSet::new();
        for entry in entries {
            let name = entry.map_err(|e| StoreError::io("listing peers", e))?.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temp files of interrupted writes start with '.'.
            if name.starts_with('.') {
                continue;
            }
            ids.insert(name.strip_suffix(".json").unwrap_or(name).to_owned());
        }
        let mut records = Vec::new();
        for id in ids {
            records.extend(read_record(&self.dir, &id)?);
        }
        records.sort_by(|a, b| a.cluster_id.cmp(&b.cluster_id));
        Ok(records)
    }

    /// Applies `change` to the record of `cluster_id` durably; returns the record as it was.
    pub async fn update(&self, cluster_id: &str, change: Change) -> Result<Option<PeerFile>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { cluster_id: cluster_id.to_owned(), change, reply };
        if self.writer().jobs.send(job).is_err() {
            return Err(writer_gone());
        }
        answer.await.map_err(|_| writer_gone())?
    }

    /// Start-up recovery of the serving process (blocking): temp files, the old layout, the
    /// journals. Runs before the writer starts.
    pub fn recover(&self) -> Result<Recovery, StoreError> {
        let writers = WRITERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = canonical(&self.data_dir);
        if writers.iter().any(|(dir, link)| *dir == key && link.strong_count() > 0) {
            // A writer of this process owns the journal: recovering now would drop its file.
            return Ok(Recovery::default());
        }
        let mut recovery = Recovery::default();
        for dir in [&self.data_dir, &self.dir, &self.data_dir.join("join-tokens")] {
            recovery.temp_files_removed += remove_temp_files(dir)?;
        }
        recovery.legacy_peers_migrated = self.migrate_legacy()?;
        let mut written = HashSet::new();
        for name in [OLD_JOURNAL, JOURNAL] {
            let path = self.data_dir.join(name);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
            };
            let (ops, torn) = parse_journal(&bytes);
            recovery.torn_lines_dropped += torn;
            recovery.journal_changes_replayed += ops.len();
            if !ops.is_empty() {
                ensure_private_dir(&self.dir)?;
            }
            for op in ops {
                if let Some(path) = apply(&self.dir, &op)? {
                    written.insert(path);
                }
            }
        }
        let written: Vec<PathBuf> = written.into_iter().collect();
        sync_paths(&written).map_err(|e| StoreError::io("flushing replayed peer records", e))?;
        if self.dir.exists() {
            sync_dir(&self.dir).map_err(|e| StoreError::io(format!("flushing {}", self.dir.display()), e))?;
        }
        for name in [OLD_JOURNAL, JOURNAL] {
            let path = self.data_dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("removing {}", path.display()), e)),
            }
        }
        sync_dir(&self.data_dir).map_err(|e| StoreError::io(format!("flushing {}", self.data_dir.display()), e))?;
        Ok(recovery)
    }

    fn writer(&self) -> &Arc<WriterLink> {
        self.writer.get_or_init(|| {
            let mut writers = WRITERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            writers.retain(|(_, link)| link.strong_count() > 0);
            let key = canonical(&self.data_dir);
            if let Some(link) = writers.iter().find(|(dir, _)| *dir == key).and_then(|(_, link)| link.upgrade()) {
                return link;
            }
            let (tx, rx) = mpsc::channel();
            let writer = Writer {
                data_dir: self.data_dir.clone(),
                dir: self.dir.clone(),
                owner: self.owner,
                journal: None,
                written_bytes: 0,
                written_paths: HashSet::new(),
                checkpointing: Arc::new(AtomicBool::new(false)),
                dir_ready: false,
            };
            // The thread ends when the last link (the only sender) is dropped.
            std::thread::Builder::new()
                .name("liqo-auth-peer-writer".into())
                .spawn(move || writer.run(rx))
                .expect("spawning the peer record writer thread");
            let link = Arc::new(WriterLink { jobs: tx });
            writers.push((key, Arc::downgrade(&link)));
            link
        })
    }

    /// Moves `peers/<id>/{tenant.json,identity.json,origin-token}` (before 0.2) into
    /// `peers/<id>.json`, each written durably before the old files go.
    fn migrate_legacy(&self) -> Result<usize, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io(format!("listing {}", self.dir.display()), e)),
        };
        let mut migrated = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("listing peers", e))?;
            if !entry.file_type().map_err(|e| StoreError::io("listing peers", e))?.is_dir() {
                continue;
            }
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let target = record_path(&self.dir, &id);
            if !target.exists() {
                if let Some(record) = read_legacy(&entry.path())? {
                    write_private_file(&target, &record_bytes(&record))?;
                    migrated += 1;
                }
            }
            remove_legacy(&entry.path())?;
        }
        Ok(migrated)
    }
}

/// The writer thread's state.
struct Writer {
    data_dir: PathBuf,
    dir: PathBuf,
    owner: bool,
    journal: Option<File>,
    /// Bytes this process appended since the journal was last emptied.
    written_bytes: u64,
    /// Record files written since then, fsynced by the next checkpoint.
    written_paths: HashSet<PathBuf>,
    checkpointing: Arc<AtomicBool>,
    /// `peers/` exists (checked once).
    dir_ready: bool,
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
            if self.owner && self.written_bytes > JOURNAL_LIMIT {
                self.rotate();
            }
        }
    }

    /// Runs the changes, makes the journal durable once for all of them, writes the record
    /// files, answers.
    fn commit(&mut self, batch: Vec<Job>) {
        // The state each change sees includes the changes before it in this batch.
        let mut overlay: HashMap<String, Option<PeerFile>> = HashMap::new();
        let mut pending = Vec::new();
        let mut lines = Vec::new();
        for Job { cluster_id, change, reply } in batch {
            let current = match overlay.get(&cluster_id) {
                Some(current) => current.clone(),
                None => match read_record(&self.dir, &cluster_id) {
                    Ok(current) => current,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                },
            };
            let op = match change(current.as_ref()) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
                Ok(Next::Keep) => {
                    let _ = reply.send(Ok(current));
                    continue;
                }
                Ok(Next::Put(record)) => {
                    overlay.insert(cluster_id, Some((*record).clone()));
                    JournalOp::Put(record)
                }
                Ok(Next::Remove) => {
                    overlay.insert(cluster_id.clone(), None);
                    JournalOp::Remove { cluster_id }
                }
            };
            lines.extend_from_slice(&journal_line(&op));
            pending.push((op, current, reply));
        }
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.append(&lines) {
            let path = self.data_dir.join(JOURNAL);
            tracing::error!(error = %e, "writing the peer journal {} failed", path.display());
            for (_, _, reply) in pending {
                let _ = reply.send(Err(StoreError::io(format!("writing {}", path.display()), clone_io(&e))));
            }
            return;
        }
        if !self.dir_ready {
            // `peers/` itself, durably, before the first record file in it.
            let ready =
                ensure_private_dir(&self.dir).map_err(|e| clone_io(&e.source)).and_then(|()| sync_dir(&self.data_dir));
            if let Err(e) = ready {
                for (_, _, reply) in pending {
                    let _ = reply.send(Err(StoreError::io(format!("creating {}", self.dir.display()), clone_io(&e))));
                }
                return;
            }
            self.dir_ready = true;
        }
        let mut removed = false;
        let mut answers = Vec::with_capacity(pending.len());
        for (op, current, reply) in pending {
            removed |= matches!(op, JournalOp::Remove { .. });
            let answer = match apply(&self.dir, &op) {
                Ok(path) => {
                    self.written_paths.extend(path);
                    Ok(current)
                }
                Err(e) => Err(e),
            };
            answers.push((reply, answer));
        }
        // A removal is made durable at once, so no replay of an older journal brings it back.
        let flushed = if removed { sync_dir(&self.dir) } else { Ok(()) };
        for (reply, answer) in answers {
            let answer = match (&flushed, answer) {
                (Err(e), Ok(_)) => Err(StoreError::io(format!("flushing {}", self.dir.display()), clone_io(e))),
                (_, answer) => answer,
            };
            let _ = reply.send(answer);
        }
    }

    /// Appends `bytes` and flushes them; a failed append is cut off again, so a partial line
    /// never glues onto the next one.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.journal.is_none() {
            let path = self.data_dir.join(JOURNAL);
            let created = !path.exists();
            let file = fs::OpenOptions::new().append(true).create(true).mode(0o600).open(&path)?;
            if created {
                // The new journal's directory entry must be durable before anything in it counts.
                sync_dir(&self.data_dir)?;
            }
            self.journal = Some(file);
        }
        let journal = self.journal.as_mut().expect("the journal was opened above");
        let before = journal.metadata()?.len();
        let result = journal.write_all(bytes).and_then(|()| journal.sync_data());
        if result.is_err() {
            if let Err(e) = journal.set_len(before).and_then(|()| journal.sync_data()) {
                tracing::error!(error = %e, "cutting off a failed journal append failed");
            }
            self.journal = None;
        } else {
            self.written_bytes += bytes.len() as u64;
        }
        result
    }

    /// Starts a new journal and checkpoints the old one in the background (the serving process
    /// only; at most one checkpoint at a time).
    fn rotate(&mut self) {
        let old = self.data_dir.join(OLD_JOURNAL);
        if self.checkpointing.load(Ordering::Acquire) || old.exists() {
            return;
        }
        self.journal = None;
        if let Err(e) = fs::rename(self.data_dir.join(JOURNAL), &old) {
            tracing::warn!(error = %e, "rotating the peer journal failed; it keeps growing until the next start");
            return;
        }
        let paths: Vec<PathBuf> = std::mem::take(&mut self.written_paths).into_iter().collect();
        self.written_bytes = 0;
        self.checkpointing.store(true, Ordering::Release);
        let (dir, flag) = (self.dir.clone(), self.checkpointing.clone());
        let spawned = std::thread::Builder::new().name("liqo-auth-checkpoint".into()).spawn(move || {
            let result = sync_paths(&paths).and_then(|()| sync_dir(&dir)).and_then(|()| fs::remove_file(&old));
            if let Err(e) = result {
                // The old journal stays: the next start replays it.
                tracing::error!(error = %e, "checkpointing the peer journal failed");
            }
            flag.store(false, Ordering::Release);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "starting the journal checkpoint failed; the next start replays the journal");
            self.checkpointing.store(false, Ordering::Release);
        }
    }
}

/// The data dir as one path whatever way it was named.
fn canonical(dir: &Path) -> PathBuf {
    fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

/// `peers/<id>.json`. Cluster IDs are validated DNS-1123 labels (no '/', no '..'); other names
/// never reach this function from a request.
fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// The record of `id`: `peers/<id>.json`, else the old layout `peers/<id>/`.
fn read_record(dir: &Path, id: &str) -> Result<Option<PeerFile>, StoreError> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Ok(None);
    }
    let path = record_path(dir, id);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { what: path.display().to_string(), reason: e.to_string() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => read_legacy(&dir.join(id)),
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyTenant {
    cluster_id: String,
    cluster_name: String,
    namespace: String,
}

/// `identity.json` of the old layout, which spelled its keys in camelCase.
#[derive(Deserialize)]
struct LegacyIdentity {
    csr: String,
    certificate: String,
    #[serde(default, alias = "originTokenSha256")]
    origin_token_sha256: Option<String>,
    #[serde(default, alias = "previousCertificate")]
    previous_certificate: Option<String>,
    #[serde(default, alias = "previousReplacedAt")]
    previous_replaced_at: Option<i64>,
}

/// A peer in the layout before 0.2 (three files in `peers/<id>/`).
fn read_legacy(dir: &Path) -> Result<Option<PeerFile>, StoreError> {
    let Some(tenant) = read_json::<LegacyTenant>(&dir.join("tenant.json"))? else {
        return Ok(None);
    };
    let identity = read_json::<LegacyIdentity>(&dir.join("identity.json"))?;
    let origin_token = crate::fs::read_string_opt(&dir.join("origin-token"))?;
    let mut record = PeerFile {
        cluster_id: tenant.cluster_id,
        cluster_name: tenant.cluster_name,
        namespace: tenant.namespace,
        csr: None,
        certificate: None,
        origin_token_sha256: None,
        previous_certificate: None,
        previous_replaced_at: None,
        origin_token,
    };
    if let Some(identity) = identity {
        record.csr = Some(identity.csr);
        record.certificate = Some(identity.certificate);
        record.origin_token_sha256 = identity.origin_token_sha256;
        record.previous_certificate = identity.previous_certificate;
        record.previous_replaced_at = identity.previous_replaced_at;
    }
    Ok(Some(record))
}

fn remove_legacy(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("removing {}", dir.display()), e)),
    }
}

/// A JSON file of the data dir: `None` when absent, `Corrupt` when it does not parse.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { what: path.display().to_string(), reason: e.to_string() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

fn record_bytes(record: &PeerFile) -> Vec<u8> {
    serde_json::to_vec_pretty(record).expect("plain structs always serialise")
}

/// Applies one journal change to the record files (temp file and rename, not flushed: the
/// journal holds it until a checkpoint). Returns the path written.
fn apply(dir: &Path, op: &JournalOp) -> Result<Option<PathBuf>, StoreError> {
    match op {
        JournalOp::Put(record) => {
            let path = record_path(dir, &record.cluster_id);
            write_unsynced(&path, &record_bytes(record))
                .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))?;
            // A peer still in the old layout is now fully described by its new file.
            remove_legacy(&dir.join(&record.cluster_id))?;
            Ok(Some(path))
        }
        JournalOp::Remove { cluster_id } => {
            let path = record_path(dir, cluster_id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("removing {}", path.display()), e)),
            }
            remove_legacy(&dir.join(cluster_id))?;
            Ok(None)
        }
    }
}

/// Temp file (0600) and rename: readers see the old file or the new one.
fn write_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("record");
    let tmp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// One journal line: 16 hex digits of the SHA-256 of the JSON, a space, the JSON, a newline.
fn journal_line(op: &JournalOp) -> Vec<u8> {
    let json = serde_json::to_vec(op).expect("plain structs always serialise");
    let mut line = hex::encode(&Sha256::digest(&json)[..8]).into_bytes();
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// The changes in a journal, in order, and how many lines failed their checksum (a write cut
/// short by a crash, never answered).
fn parse_journal(bytes: &[u8]) -> (Vec<JournalOp>, usize) {
    let mut ops = Vec::new();
    let mut torn = 0;
    for line in bytes.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        let parsed = line.iter().position(|&b| b == b' ').and_then(|space| {
            let (sum, json) = (&line[..space], &line[space + 1..]);
            let expected = hex::encode(&Sha256::digest(json)[..8]);
            (sum == expected.as_bytes()).then(|| serde_json::from_slice::<JournalOp>(json).ok()).flatten()
        });
        match parsed {
            Some(op) => ops.push(op),
            None => torn += 1,
        }
    }
    (ops, torn)
}

/// Removes `.<name>.tmp-<id>` files that a crash left in `dir`.
fn remove_temp_files(dir: &Path) -> Result<usize, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') && name.contains(".tmp-") {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("removing {}", entry.path().display()), e)),
            }
        }
    }
    Ok(removed)
}

/// fsyncs `paths` from a few threads at once (the file system merges their flushes).
fn sync_paths(paths: &[PathBuf]) -> io::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let chunk = paths.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    for path in chunk {
                        match File::open(path) {
                            Ok(file) => file.sync_all()?,
                            // Removed since (a later change): nothing to flush.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked"))))
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn clone_io(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

fn writer_gone() -> StoreError {
    StoreError::io("writing peer records", io::Error::other("the writer thread stopped"))
}

/// Runs blocking file I/O off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(StoreError::io("file I/O", io::Error::other(e.to_string()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, cert: &str) -> PeerFile {
        PeerFile {
            cluster_id: id.into(),
            cluster_name: "rome".into(),
            namespace: format!("liqo-tenant-rome-{id}"),
            csr: Some("csr".into()),
            certificate: Some(cert.into()),
            origin_token_sha256: None,
            previous_certificate: None,
            previous_replaced_at: None,
            origin_token: None,
        }
    }

    fn put(record: PeerFile) -> Change {
        Box::new(move |_| Ok(Next::Put(Box::new(record))))
    }

    #[tokio::test]
    async fn a_change_is_in_the_journal_and_the_record_file_when_it_is_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let peers = PeerFiles::new(tmp.path(), true);
        peers.recover().unwrap();
        assert_eq!(peers.update("c1", put(record("c1", "one"))).await.unwrap(), None);
        assert_eq!(peers.read("c1").await.unwrap(), Some(record("c1", "one")));
        let journal = fs::read(tmp.path().join(JOURNAL)).unwrap();
        let (ops, torn) = parse_journal(&journal);
        assert_eq!((ops.len(), torn), (1, 0));
        let previous = peers.update("c1", put(record("c1", "two"))).await.unwrap();
        assert_eq!(previous, Some(record("c1", "one")));
        assert_eq!(peers.list().unwrap(), vec![record("c1", "two")]);
    }

    #[tokio::test]
    async fn concurrent_changes_share_journal_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let peers = Arc::new(PeerFiles::new(tmp.path(), true));
        peers.recover().unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let peers = peers.clone();
                tokio::spawn(async move { peers.update(&format!("c{i}"), put(record(&format!("c{i}"), "x"))).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(peers.list().unwrap().len(), 64);
        let (ops, _) = parse_journal(&fs::read(tmp.path().join(JOURNAL)).unwrap());
        assert_eq!(ops.len(), 64);
    }

    #[tokio::test]
    async fn a_refused_change_writes_nothing_and_keep_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let peers = PeerFiles::new(tmp.path(), true);
        peers.recover().unwrap();
        let refused = peers.update("c1", Box::new(|_| Err(StoreError::AlreadyExists { what: "x".into() }))).await;
        assert!(matches!(refused, Err(StoreError::AlreadyExists { .. })));
        assert_eq!(peers.update("c1", Box::new(|_| Ok(Next::Keep))).await.unwrap(), None);
        assert!(!tmp.path().join(JOURNAL).exists(), "no journal write");
        assert!(peers.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn recovery_replays_the_journal_drops_a_torn_tail_and_removes_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(PEERS_DIR);
        fs::create_dir_all(&dir).unwrap();
        // As after power loss: the journal was flushed, the record files were not.
        let mut journal = journal_line(&JournalOp::Put(Box::new(record("c1", "one"))));
        journal.extend(journal_line(&JournalOp::Put(Box::new(record("c2", "two")))));
        journal.extend(journal_line(&JournalOp::Remove { cluster_id: "c2".into() }));
        journal.extend(journal_line(&JournalOp::Put(Box::new(record("c3", "three")))));
        let torn = journal_line(&JournalOp::Put(Box::new(record("c4", "four"))));
        journal.extend_from_slice(&torn[..torn.len() / 2]);
        fs::write(tmp.path().join(JOURNAL), &journal).unwrap();
        fs::write(dir.join(".c9.json.tmp-dead"), b"half").unwrap();
        fs::write(tmp.path().join(".token.tmp-dead"), b"half").unwrap();
        fs::write(dir.join("c2.json"), record_bytes(&record("c2", "two"))).unwrap();

        let peers = PeerFiles::new(tmp.path(), true);
        let recovery = peers.recover().unwrap();
        assert_eq!(
            recovery,
            Recovery {
                temp_files_removed: 2,
                legacy_peers_migrated: 0,
                journal_changes_replayed: 4,
                torn_lines_dropped: 1
            }
        );
        let ids: Vec<_> = peers.list().unwrap().into_iter().map(|r| r.cluster_id).collect();
        assert_eq!(ids, ["c1", "c3"]);
        assert!(!tmp.path().join(JOURNAL).exists(), "the journal is emptied once its changes are flushed");
        assert!(!dir.join(".c9.json.tmp-dead").exists());
    }

    #[tokio::test]
    async fn the_old_layout_is_read_and_migrated_once() {
        let tmp = tempfile::tempdir().unwrap();
        let legacy = tmp.path().join(PEERS_DIR).join("c1");
        fs::create_dir_all(&legacy).unwrap();
        fs::write(legacy.join("tenant.json"), r#"{"clusterId":"c1","clusterName":"rome","namespace":"ns-1"}"#).unwrap();
        fs::write(legacy.join("identity.json"), r#"{"csr":"C","certificate":"X","originTokenSha256":"ab"}"#).unwrap();
        fs::write(legacy.join("origin-token"), "tok").unwrap();
        let expected = PeerFile {
            cluster_id: "c1".into(),
            cluster_name: "rome".into(),
            namespace: "ns-1".into(),
            csr: Some("C".into()),
            certificate: Some("X".into()),
            origin_token_sha256: Some("ab".into()),
            previous_certificate: None,
            previous_replaced_at: None,
            origin_token: Some("tok".into()),
        };
        let reader = PeerFiles::new(tmp.path(), false);
        assert_eq!(reader.read("c1").await.unwrap(), Some(expected.clone()), "read in place");
        let peers = PeerFiles::new(tmp.path(), true);
        assert_eq!(peers.recover().unwrap().legacy_peers_migrated, 1);
        assert!(!legacy.exists());
        assert_eq!(peers.read("c1").await.unwrap(), Some(expected.clone()));
        assert_eq!(peers.recover().unwrap().legacy_peers_migrated, 0, "once");
        assert_eq!(peers.list().unwrap(), vec![expected]);
    }

    #[tokio::test]
    async fn a_full_journal_is_checkpointed_in_the_background() {
        let tmp = tempfile::tempdir().unwrap();
        let peers = PeerFiles::new(tmp.path(), true);
        peers.recover().unwrap();
        let big = "x".repeat(64 * 1024);
        for i in 0..(JOURNAL_LIMIT / (64 * 1024) + 2) {
            peers.update(&format!("c{i}"), put(record(&format!("c{i}"), &big))).await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while tmp.path().join(OLD_JOURNAL).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!tmp.path().join(OLD_JOURNAL).exists(), "the old journal is deleted after its checkpoint");
        let journal_len = fs::metadata(tmp.path().join(JOURNAL)).unwrap().len();
        assert!(journal_len < JOURNAL_LIMIT, "a new journal holds the changes after the rotation: {journal_len}");
        assert_eq!(peers.list().unwrap().len() as u64, JOURNAL_LIMIT / (64 * 1024) + 2);
    }
}
