//! The file store: `state.json` (the health), `requests.jsonl` (the request log) and
//! `conversations.json` (for `--continue`) under `$XDG_STATE_HOME/freeroute/`. Updates take
//! an exclusive lock (`state.lock`) only for a read-modify-write and write through a
//! temporary file and a rename, so concurrent runs lose nothing and a crash never leaves a
//! torn file. An unreadable state file is set aside and rebuilt, never fatal.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Reservation, Reserved, Store, StoreError};
use crate::health::{Health, VERSION};
use crate::wire::openai::Message;

const LOG_CAP_BYTES: u64 = 1024 * 1024;
/// The longest a run waits for another process's lock on the state: past it the update
/// (or the reservation) is given up with a note, never the run (DESIGN §5).
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// The longest pause between two tries for the lock: a read-modify-write holds it only
/// while a small file is read and renamed into place, so a longer pause is partly slept
/// after the lock is free. It was 10 ms until issue 18's fifth pass: eight parallel runs on
/// `bench/fleet.sh`'s fleet (under strace, which slows them) paused on the lock 7–13 ms in
/// all at the p95 run and up to 37 ms, against 6–7 ms and 18 ms with 1 ms.
const LOCK_POLL_MAX: Duration = Duration::from_millis(1);

/// What the request log says: runs logged and runs answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogCounts {
    pub runs: usize,
    pub answered: usize,
}

/// Where the file store lives; `None` runs without memory.
pub fn state_dir() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|d| d.join("freeroute"))
}

/// The file-backed store.
pub struct FileStore {
    dir: Option<PathBuf>,
    /// What reservations have to tell (a state file set aside, a request that could not
    /// be counted), told by the next `update`.
    pending: RefCell<Vec<String>>,
    /// The lock was not had within `LOCK_WAIT` once: this run waits for it no more.
    stuck: Cell<bool>,
}

impl FileStore {
    pub fn new(dir: Option<PathBuf>) -> Self {
        FileStore {
            dir,
            pending: RefCell::new(Vec::new()),
            stuck: Cell::new(false),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn file(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("state.json"))
    }

    /// Runs logged and runs answered, as the request log tells (a torn line counts as none).
    pub fn log_counts(&self) -> LogCounts {
        let Some(text) = self
            .log_path()
            .and_then(|p| std::fs::read_to_string(p).ok())
        else {
            return LogCounts::default();
        };
        let mut c = LogCounts::default();
        // Committed, whole lines only: a line past what the state accounts for, or a torn
        // last line, is a run that died while it was recorded.
        let text = match self.committed_log() {
            Some(n) if (n as usize) < text.len() && text.is_char_boundary(n as usize) => {
                &text[..n as usize]
            }
            _ => &text[..],
        };
        let whole = text.rfind('\n').map_or("", |i| &text[..i]);
        for line in whole.lines().filter(|l| !l.trim().is_empty()) {
            c.runs += 1;
            c.answered += usize::from(line.contains("\"ok\":true"));
        }
        c
    }

    pub fn log_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("requests.jsonl"))
    }

    /// Forgets everything: a fresh state, an empty request log, no conversations.
    fn forget(&self) -> Result<(), StoreError> {
        self.read_modify_write(&mut |s| *s = Health::fresh(), None)?;
        if let Some(c) = self.conversations_path()
            && c.exists()
        {
            std::fs::remove_file(&c)
                .map_err(|e| err(format!("cannot remove {}: {e}", c.display())))?;
        }
        if let Some(log) = self.log_path()
            && log.exists()
        {
            write_atomic(&log, b"")
                .map_err(|e| err(format!("cannot clear {}: {e}", log.display())))?;
        }
        Ok(())
    }

    fn conversations_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("conversations.json"))
    }

    /// The messages of the last answered conversation (`--continue`).
    pub fn last_conversation(&self) -> Option<Vec<Message>> {
        let bytes = std::fs::read(self.conversations_path()?).ok()?;
        let file: Conversations = serde_json::from_slice(&bytes).ok()?;
        file.conversations.into_iter().last().map(|c| c.messages)
    }

    /// Keeps a conversation, dropping all but the last `KEPT_CONVERSATIONS`.
    pub fn save_conversation(&self, messages: &[Message]) -> Result<(), StoreError> {
        let Some(path) = self.conversations_path() else {
            return Ok(());
        };
        let dir = self.dir.as_ref().expect("a path implies a dir");
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let lock = self.lock(dir)?;
        let mut file: Conversations = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        file.conversations.push(Conversation {
            time_ms: crate::now_ms(),
            messages: messages.to_vec(),
        });
        let excess = file.conversations.len().saturating_sub(KEPT_CONVERSATIONS);
        file.conversations.drain(..excess);
        let result = write_atomic(&path, &serde_json::to_vec(&file).expect("serializes"))
            .map_err(|e| err(format!("cannot write {}: {e}", path.display())));
        drop(lock);
        result
    }

    fn lock(&self, dir: &Path) -> Result<File, StoreError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("state.lock"))
            .map_err(|e| {
                err(format!(
                    "cannot open the lock file in {}: {e}",
                    dir.display()
                ))
            })?;
        // Polled, so that a process that keeps the lock (a stuck run, `flock state.lock
        // sleep 60`) costs this one at most `LOCK_WAIT`.
        let started = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            match lock.try_lock() {
                Ok(()) => return Ok(lock),
                Err(TryLockError::WouldBlock)
                    if !self.stuck.get() && started.elapsed() < LOCK_WAIT =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(LOCK_POLL_MAX);
                }
                Err(TryLockError::WouldBlock) => {
                    self.stuck.set(true);
                    return Err(err(format!(
                        "another process has held the state's lock for over {} s",
                        LOCK_WAIT.as_secs()
                    )));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(err(format!("cannot lock the state: {e}")));
                }
            }
        }
    }

    /// Appends the run's line to this host's request log, under the lock (the shared
    /// store's runs: their health is elsewhere, their log here). The line is committed in
    /// `state.json` as the file store's are (`StateFile::log_bytes`).
    pub fn log(&self, line: &str) -> Result<(), StoreError> {
        match self.read_modify_write(&mut |_| {}, Some(line))?.unlogged {
            Some(e) => Err(err(format!("cannot write the request log: {e}"))),
            None => Ok(()),
        }
    }

    /// Reads the state once, without a lock (writers rename whole files into place). An
    /// unreadable file is only read past here; it is set aside under the lock by the next
    /// `update`, so a reader never moves a file another process just rebuilt.
    fn read(&self) -> Health {
        let Some(path) = self.file() else {
            return Health::fresh();
        };
        match std::fs::read(&path)
            .ok()
            .map(|b| serde_json::from_slice::<StateFile>(&b))
        {
            Some(Ok(s)) if s.health.version == VERSION => s.health,
            _ => Health::fresh(),
        }
    }

    /// How much of the request log the state accounts for (see `StateFile::log_bytes`).
    fn committed_log(&self) -> Option<u64> {
        let bytes = std::fs::read(self.file()?).ok()?;
        serde_json::from_slice::<StateFile>(&bytes).ok()?.log_bytes
    }

    /// Read-modify-write under an exclusive lock, written atomically. The lock is held
    /// only for this call, never across network I/O.
    fn read_modify_write(
        &self,
        f: &mut dyn FnMut(&mut Health),
        log_line: Option<&str>,
    ) -> Result<Written, StoreError> {
        let Some(dir) = &self.dir else {
            let mut health = Health::fresh();
            f(&mut health);
            return Ok(Written {
                notes: Vec::new(),
                health,
                unlogged: None,
            });
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let lock = self.lock(dir)?;
        let mut notes = Vec::new();
        let path = dir.join("state.json");
        let mut file = read_or_set_aside(&path, &mut notes);
        f(&mut file.health);
        // The log line first, the state second: the state's rename commits both. A run
        // killed in between leaves a line past `log_bytes`, which readers skip and the next
        // writer cuts, so the state and the log always tell the same story.
        let mut unlogged = None;
        if let Some(line) = log_line {
            match append_log(&dir.join("requests.jsonl"), line, file.log_bytes) {
                Ok(end) => file.log_bytes = Some(end),
                // The memory holds; only the log misses this run.
                Err(e) => unlogged = Some(e),
            }
        }
        let result = write_atomic(&path, &serde_json::to_vec(&file).expect("state serializes"))
            .map_err(|e| err(format!("cannot write {}: {e}", path.display())));
        drop(lock);
        result.map(|()| Written {
            notes,
            health: file.health,
            unlogged,
        })
    }
}

/// What a read-modify-write left: notes for the user, the health as written, and why the
/// run's line is missing from the request log when it could not be added.
struct Written {
    notes: Vec<String>,
    health: Health,
    unlogged: Option<std::io::Error>,
}

/// `state.json`: the health, and how much of the request log it accounts for.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    health: Health,
    /// Bytes of `requests.jsonl` written by the runs this state records: a line past them
    /// was appended by a run that died before its state was written, and is no run.
    /// `None` (a state written before this was kept): every whole line counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_bytes: Option<u64>,
}

/// How many answered conversations are kept for `--continue`.
pub const KEPT_CONVERSATIONS: usize = 5;

/// `conversations.json`: kept apart from the state and never written to the request log.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Conversations {
    #[serde(default)]
    conversations: Vec<Conversation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Conversation {
    time_ms: u64,
    messages: Vec<Message>,
}

fn read_or_set_aside(path: &Path, notes: &mut Vec<String>) -> StateFile {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(_) => return StateFile::fresh(),
    };
    match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(s) if s.health.version == VERSION => s,
        Ok(s) => set_aside(
            path,
            &format!("version {} is not {VERSION}", s.health.version),
            notes,
        ),
        Err(e) => set_aside(path, &e.to_string(), notes),
    }
}

impl StateFile {
    fn fresh() -> StateFile {
        StateFile {
            health: Health::fresh(),
            log_bytes: None,
        }
    }
}

fn set_aside(path: &Path, why: &str, notes: &mut Vec<String>) -> StateFile {
    let aside = path.with_extension(format!("json.bad-{}", std::process::id()));
    if std::fs::rename(path, &aside).is_ok() {
        notes.push(format!(
            "The state file {} was unreadable ({why}); set it aside as {} and started fresh",
            path.display(),
            aside.display()
        ));
    }
    StateFile::fresh()
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    // No fsync: the rename alone keeps every reader from seeing half a file when a process
    // dies; after a power loss an empty file is set aside like any unreadable one. A sync
    // would cost every run milliseconds on a real disk.
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Appends one line and returns the log's new length; past the cap, the older half of
/// the log is dropped (atomically). Crash-safe: lines past `committed` (a run that died
/// before its state was written) and a torn last line (a writer killed mid-write, a disk
/// that filled) are cut off before the new line is added, the line goes out in one
/// write, and a write that fails is cut back, so the log holds whole, committed lines.
fn append_log(path: &Path, line: &str, committed: Option<u64>) -> std::io::Result<u64> {
    if let Ok(mut f) = OpenOptions::new().read(true).write(true).open(path) {
        let keep = whole_lines_len(&mut f)?.min(committed.unwrap_or(u64::MAX));
        if keep < f.metadata()?.len() {
            f.set_len(keep)?;
        }
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_CAP_BYTES) {
        // Bytes, not text: the middle may fall inside a multi-byte character.
        let bytes = std::fs::read(path).unwrap_or_default();
        let cut = bytes.len() / 2;
        let start = bytes[cut..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| cut + i + 1);
        write_atomic(path, &bytes[start..])?;
    }
    let mut f: File = OpenOptions::new().create(true).append(true).open(path)?;
    let start = f.metadata()?.len();
    let mut record = Vec::with_capacity(line.len() + 1);
    record.extend_from_slice(line.as_bytes());
    record.push(b'\n');
    if let Err(e) = f.write_all(&record) {
        let _ = f.set_len(start);
        return Err(e);
    }
    Ok(start + record.len() as u64)
}

/// The length of the file up to and including its last line end.
fn whole_lines_len(f: &mut File) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

impl Store for FileStore {
    fn snapshot(&self) -> Health {
        self.read()
    }

    fn update(
        &self,
        change: &mut dyn FnMut(&mut Health),
        log_line: Option<&str>,
    ) -> Result<(Vec<String>, Health), StoreError> {
        let w = self.read_modify_write(change, log_line)?;
        let mut told = std::mem::take(&mut *self.pending.borrow_mut());
        told.extend(w.notes);
        if let Some(e) = w.unlogged {
            told.push(format!("This run is not in the request log: {e}"));
        }
        Ok((told, w.health))
    }

    /// Under the state's lock, like every update: parallel runs on one machine never
    /// exceed a provider's known limit (issue 14, item 11).
    fn reserve(&self, r: &Reservation) -> Reserved {
        if self.dir.is_none() {
            return Reserved::Taken;
        }
        // A refused reservation changes nothing, but is written all the same: telling the
        // two apart before the write would cost a second serialization of the state.
        let mut outcome = Reserved::Taken;
        let mut take = |h: &mut Health| {
            let p = h.providers.entry(r.provider.to_string()).or_default();
            match p.reserve(r.limits, r.day_offset_ms, r.now_ms) {
                Err(until_ms) => outcome = Reserved::Full { until_ms },
                Ok(()) => h.model_mut(r.provider, r.model).count_request(r.now_ms),
            }
        };
        let mut pending = self.pending.borrow_mut();
        match self.read_modify_write(&mut take, None) {
            Ok(w) => pending.extend(w.notes),
            Err(e) => {
                let note = format!("Some requests were sent uncounted: {e}");
                if !pending.contains(&note) {
                    pending.push(note);
                }
            }
        }
        outcome
    }

    fn reset(&self) -> Result<(), StoreError> {
        self.forget()
    }

    fn location(&self) -> Option<String> {
        self.dir.as_ref().map(|d| d.display().to_string())
    }
}

fn err(message: String) -> StoreError {
    StoreError(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::attempt;
    use crate::outcome::AttemptOutcome;
    use crate::providers::Limits;

    #[test]
    fn a_torn_last_line_is_skipped_by_readers_and_repaired_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(Some(dir.path().to_path_buf()));
        let path = dir.path().join("requests.jsonl");
        std::fs::write(&path, "{\"ok\":true}\n{\"ok\":tr").unwrap();
        assert_eq!(store.log_counts().runs, 1);
        append_log(&path, "{\"ok\":false}", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"ok\":true}\n{\"ok\":false}\n"
        );
        let c = store.log_counts();
        assert_eq!((c.runs, c.answered), (2, 1));
    }

    #[test]
    fn a_line_the_state_does_not_account_for_is_no_run_and_is_cut_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(Some(dir.path().to_path_buf()));
        store.update(&mut |_| {}, Some("{\"ok\":true}")).unwrap();
        // A run killed after its line went out and before its state was written.
        let log = dir.path().join("requests.jsonl");
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("{\"ok\":true,\"died\":1}\n");
        std::fs::write(&log, &text).unwrap();
        assert_eq!(store.log_counts().runs, 1, "the state records one run");
        store.update(&mut |_| {}, Some("{\"ok\":false}")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "{\"ok\":true}\n{\"ok\":false}\n"
        );
        let c = store.log_counts();
        assert_eq!((c.runs, c.answered), (2, 1));
    }

    #[test]
    fn capping_the_log_never_splits_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let line = "é…".repeat(200);
        let mut text = String::new();
        while text.len() <= LOG_CAP_BYTES as usize {
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(&path, &text).unwrap();
        append_log(&path, "{\"last\":true}", None).unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert!(kept.len() < text.len() / 2 + line.len() * 2);
        assert!(kept.ends_with("{\"last\":true}\n"));
    }

    #[test]
    fn a_reservation_counts_in_its_model_load_for_every_run_and_a_refused_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (one, other) = (
            FileStore::new(Some(dir.path().to_path_buf())),
            FileStore::new(Some(dir.path().to_path_buf())),
        );
        let limits = Limits {
            per_minute: Some(2),
            ..Limits::default()
        };
        let r = Reservation {
            provider: "or",
            model: "m",
            limits,
            day_offset_ms: 0,
            now_ms: 1_000,
        };
        assert_eq!(one.reserve(&r), Reserved::Taken);
        // Another run (another process) sees the request in flight.
        let load = |s: &FileStore| s.snapshot().model("or", "m").unwrap().load(1_000);
        assert_eq!(load(&other), 1.0);
        assert_eq!(other.reserve(&r), Reserved::Taken);
        assert!(matches!(one.reserve(&r), Reserved::Full { .. }));
        assert_eq!(load(&one), 2.0, "a refused reservation sends nothing");
        // Its outcome, recorded later, does not count it again.
        let done = |h: &mut Health| {
            h.record_attempts(&[attempt(AttemptOutcome::Ok)], 1_000, &|_| (limits, 0))
        };
        one.update(&mut { done }, None).unwrap();
        assert_eq!(load(&other), 2.0);
    }

    #[test]
    fn store_round_trip_and_garbage_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(Some(dir.path().to_path_buf()));
        let mut ok = |s: &mut Health| {
            s.record_attempts(&[attempt(AttemptOutcome::Ok)], 0, &|_| {
                (Limits::default(), 0)
            })
        };
        store.update(&mut ok, Some("{\"x\":1}")).unwrap();
        assert!(store.snapshot().model("or", "m").is_some());
        std::fs::write(dir.path().join("state.json"), b"{garbage").unwrap();
        assert!(store.snapshot().models.is_empty(), "garbage reads as fresh");
        assert!(
            dir.path().join("state.json").exists(),
            "a reader never moves the file"
        );
        let (notes, _) = store.update(&mut ok, None).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("set it aside"));
        assert!(
            store.snapshot().model("or", "m").is_some(),
            "rebuilt under the lock"
        );
        let log = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
        assert_eq!(log, "{\"x\":1}\n");
    }
}
