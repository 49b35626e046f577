//! A FUSE file system that loses unsynced writes on a simulated power cut, in
//! the spirit of Jepsen's LazyFS: the test-support disk of the power-loss tests.
//!
//! [`LazyFs::mount`] mirrors a backing directory at a mount point. To the
//! process above it (a node, sled) it behaves like a local disk, until
//! [`LazyFs::cut_power`]: then everything that was written but never made
//! durable is gone, and every later operation fails with `EIO` while the test
//! kills that process. Mounting again over the same backing directory shows
//! what a machine would find after the reboot.
//!
//! The model (the one LazyFS uses too):
//! - **File data is volatile until `fsync`/`fdatasync`.** A `write` lands in a
//!   per-inode overlay of byte ranges held in memory; the backing file is not
//!   touched. A `read` answers the backing bytes overlaid with the buffered
//!   ones, and `getattr` reports the size including buffered writes past the
//!   end (and the time of the last buffered write as mtime). An `fsync` of any
//!   handle of the file (FUSE sends `fsync` and `fdatasync` alike, with a
//!   flag) writes the overlay to the backing file, syncs that and clears the
//!   overlay. `flush`/`release` (`close`) make nothing durable, and neither
//!   does `sync_file_range`, which never reaches FUSE.
//! - **Metadata is durable at once.** Create, mkdir, rename, unlink, rmdir,
//!   chmod, utimens and truncate are applied to the backing directory as they
//!   arrive, so after a cut a created-but-unsynced file exists with its synced
//!   length (often zero), and a file renamed over another without an fsync of
//!   its data is found empty, the classic lost-rename-of-a-temporary-file.
//!   A truncate changes the backing file immediately and cuts (or leaves, when
//!   growing) the overlay to match, so the two always agree on the length.
//! - **The kernel caches nothing that could hide us**: no writeback cache
//!   (FUSE's default write-through: every `write` reaches the daemon),
//!   attribute and entry TTLs of zero, no `keep_cache` (an `open` drops the
//!   file's cached pages). Page-cache reads of an already open file are not
//!   routed through us, so after a cut a still-open descriptor may read cached
//!   bytes; the tests kill the process above at the cut, which makes that moot.
//!
//! Invariants:
//! - One lock (`State`) guards the inode table and every overlay; `cut_power`
//!   takes it, so a cut falls entirely before or entirely after any `fsync`.
//! - Inode numbers are this mount's own (1 is the root), assigned per backing
//!   path on first sight and never reused; a rename moves the path of the
//!   inode and of everything below it, so an inode keeps its number and its
//!   buffered writes across renames. The kernel's `forget` is ignored: an
//!   entry lives until its name is removed (test-sized trees).
//! - An inode's backing file is held open (read-write when allowed) while FUSE
//!   has handles on it, so reads, writes and fsyncs through a handle still
//!   work after the name is gone. An unlinked inode drops its overlay when its
//!   last handle closes (its data can never be reached again).
//! - No handler panics: a panic would kill the session thread while the kernel
//!   still waits for answers. Every failure is an errno to the caller.
//! - Unmounting never hangs, and leaves nothing hanging: it aborts the FUSE
//!   connection and detaches the mount (`umount2(MNT_FORCE | MNT_DETACH)`),
//!   so descriptors still open on it (a dying process's, or one leaked by a
//!   test) fail at once instead of waiting for answers that will never come.
//!
//! Not supported (unused by sled and the stead journal): hard links, special
//! files (`mknod`), extended attributes, `fallocate`, `RENAME_EXCHANGE` and
//! `RENAME_NOREPLACE`.
//!
//! tidy: long file: one FUSE file system, whose operations share the
//! in-memory page cache that a power cut drops; its tests follow it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nix::fcntl::OFlag;
use nix::mount::MntFlags;

/// What the kernel may cache attributes and directory entries for: nothing,
/// so every size it reports comes from us (and sees buffered writes).
const TTL: Duration = Duration::ZERO;

/// The source name of our mounts in `/proc/self/mountinfo`, by which a stale
/// one left by a crashed test run is recognised.
const FS_NAME: &str = "lazyfs";

/// How long unmounting waits for the session thread before leaving it behind.
const UNMOUNT_WAIT: Duration = Duration::from_secs(2);

/// Why a [`LazyFs`] could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum LazyFsError {
    /// FUSE cannot be used on this machine (not root, no `/dev/fuse`, no
    /// permission to mount); tests skip with this reason.
    #[error("FUSE is unavailable: {0}")]
    Unavailable(String),
    /// A file-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LazyFsError {
    let what = what.into();
    move |source| LazyFsError::Io { what, source }
}

/// The unsynced writes a power cut drops (or would drop now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerCutReport {
    /// Files that had buffered (unsynced) writes.
    pub files: usize,
    /// Bytes buffered in them (the total length of the buffered ranges).
    pub bytes: u64,
}

/// A mounted LazyFS; unmounts on drop (never hanging, see the module docs).
#[derive(Debug)]
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    mount_point: PathBuf,
    backing: PathBuf,
    /// The mount's device number: how its line in mountinfo is recognised,
    /// and the name of its FUSE connection under `/sys/fs/fuse/connections`.
    device: Option<u64>,
}

impl LazyFs {
    /// Mounts a view of `backing` at `mount_point` (both existing
    /// directories). A stale LazyFS mount left at `mount_point` by a crashed
    /// run is detached first. Errs with [`LazyFsError::Unavailable`] where FUSE
    /// cannot be used.
    pub fn mount(backing: &Path, mount_point: &Path) -> Result<Self, LazyFsError> {
        basic_checks().map_err(LazyFsError::Unavailable)?;
        let backing = backing
            .canonicalize()
            .map_err(io_err(format!("resolving {}", backing.display())))?;
        if !backing.is_dir() {
            return Err(LazyFsError::Io {
                what: format!("backing {}", backing.display()),
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }
        let mount_point = resolve_mount_point(mount_point)?;
        detach_stale_mounts(&mount_point);
        if !mount_point.is_dir() {
            return Err(LazyFsError::Io {
                what: format!("mount point {}", mount_point.display()),
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }

        let state = Arc::new(Mutex::new(State::new(backing.clone())));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(FS_NAME.to_owned()),
            // Permission checks by the kernel against our attributes, as on
            // a local disk (so `access` never reaches us).
            MountOption::DefaultPermissions,
        ];
        let handler = Handler {
            state: Arc::clone(&state),
        };
        let session = fuser::spawn_mount(handler, &mount_point, &config).map_err(|e| {
            match e.kind() {
                // fuser falls back to the (absent) fusermount helper when the
                // mount syscall is refused: no privilege to mount here.
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                    LazyFsError::Unavailable(format!(
                        "mounting FUSE at {} failed: {e}",
                        mount_point.display()
                    ))
                }
                _ => LazyFsError::Io {
                    what: format!("mounting FUSE at {}", mount_point.display()),
                    source: e,
                },
            }
        })?;
        let mut fs = LazyFs {
            state,
            session: Some(session),
            mount_point,
            backing,
            device: None,
        };
        // Served by the session thread: also proves the mount answers.
        let meta = fs::metadata(&fs.mount_point)
            .map_err(io_err(format!("stat of {}", fs.mount_point.display())))?;
        fs.device = Some(meta.dev());
        Ok(fs)
    }

    /// Where the file system is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The backing directory (holding what is durable).
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// What a power cut would drop now.
    pub fn unsynced(&self) -> PowerCutReport {
        lock(&self.state).unsynced()
    }

    /// Cuts the power: drops every write not yet fsynced, of every file, and
    /// fails every later operation with `EIO`. Atomic with respect to `fsync`.
    pub fn cut_power(&self) -> PowerCutReport {
        let mut state = lock(&self.state);
        let lost = state.unsynced();
        state.powered = false;
        for inode in state.inodes.values_mut() {
            inode.pending = Overlay::default();
            inode.written_at = None;
        }
        lost
    }

    /// Unmounts (the same as dropping).
    pub fn unmount(self) {
        drop(self);
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // Unmount by path only while the mount there is still this one.
        let ours = self.device.is_none_or(|device| {
            mounts()
                .iter()
                .any(|m| m.at == self.mount_point.as_os_str() && m.device == device_id(device))
        });
        if ours {
            force_unmount(&self.mount_point);
        }
        let mut ended = wait_for(&session, UNMOUNT_WAIT);
        if !ended && let Some(device) = self.device {
            // Detached by someone else while files were still open: abort
            // the connection where the fusectl file system is mounted.
            let abort = Path::new("/sys/fs/fuse/connections")
                .join(device.to_string())
                .join("abort");
            if fs::write(&abort, b"1").is_ok() {
                ended = wait_for(&session, UNMOUNT_WAIT);
            }
        }
        if ended {
            match session.join() {
                Ok(()) => {}
                // How the session thread learns of an aborted connection.
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ECONNABORTED as i32) => {}
                Err(e) => eprintln!(
                    "lazyfs: the session of {} ended with {e}",
                    self.mount_point.display()
                ),
            }
        } else {
            eprintln!(
                "lazyfs: {} still has open files; its session thread is left to end when they close",
                self.mount_point.display()
            );
            // Dropping the session would unmount by path, which could hit a
            // later mount at the same place: leave it to its thread.
            std::mem::forget(session);
        }
    }
}

/// Ends the mount at `mount_point`, even while files on it are open.
///
/// `MNT_FORCE` first runs FUSE's `umount_begin`, which aborts the connection:
/// requests pending or yet to come from descriptors still open fail at once
/// instead of waiting for an answer. Without it, a process holding such a
/// descriptor while its own session thread is gone (a test process exiting
/// with a leaked file, whose exit sends a synchronous `FLUSH`) would hang in
/// the kernel forever. `MNT_DETACH` then unmounts even though files are open.
fn force_unmount(mount_point: &Path) {
    if let Err(e) = nix::mount::umount2(mount_point, MntFlags::MNT_FORCE | MntFlags::MNT_DETACH) {
        eprintln!("lazyfs: unmounting {}: {e}", mount_point.display());
    }
}

/// `st_dev` as mountinfo writes it.
fn device_id(device: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(device),
        nix::sys::stat::minor(device)
    )
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug)]
struct MountEntry {
    /// `major:minor`.
    device: String,
    at: OsString,
    fstype: String,
    source: String,
}

fn mounts() -> Vec<MountEntry> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            // "id parent major:minor root mount-point options... - fstype source superoptions"
            let (head, tail) = line.split_once(" - ")?;
            let mut head = head.split(' ');
            let device = head.nth(2)?.to_owned();
            let at = unescape_mountinfo(head.nth(1)?);
            let mut tail = tail.split(' ');
            Some(MountEntry {
                device,
                at,
                fstype: tail.next()?.to_owned(),
                source: tail.next()?.to_owned(),
            })
        })
        .collect()
}

fn wait_for(session: &BackgroundSession, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !session.guard.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Whether LazyFS can be mounted here (root, `/dev/fuse`, the `fuse` file
/// system, and a trial mount that works); the reason why not, for a test's
/// skip message. Checked once per process.
pub fn fuse_available() -> Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE
        .get_or_init(|| {
            basic_checks()?;
            let backing = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
            let mount_point = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
            let fs = LazyFs::mount(backing.path(), mount_point.path())
                .map_err(|e| format!("a trial mount failed: {e}"))?;
            fs.unmount();
            Ok(())
        })
        .clone()
}

/// The cheap checks: root (which mounts FUSE without the fusermount helper),
/// a usable `/dev/fuse`, and the `fuse` file system in the kernel.
fn basic_checks() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root (LazyFS mounts FUSE directly)".to_owned());
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
    let filesystems = fs::read_to_string("/proc/filesystems")
        .map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
    if !filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some("fuse"))
    {
        return Err("the kernel has no fuse file system".to_owned());
    }
    Ok(())
}

/// The absolute, symlink-free mount point. Resolved through its parent, since
/// the directory itself may be a dead mount that cannot be stat'ed.
fn resolve_mount_point(mount_point: &Path) -> Result<PathBuf, LazyFsError> {
    let absolute = std::path::absolute(mount_point)
        .map_err(io_err(format!("resolving {}", mount_point.display())))?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => Ok(parent
            .canonicalize()
            .map_err(io_err(format!("resolving {}", parent.display())))?
            .join(name)),
        _ => Ok(absolute),
    }
}

/// Ends LazyFS mounts at `mount_point` left by a crashed earlier run (a dead
/// FUSE mount answers everything with `ENOTCONN`) or leaked by a test.
fn detach_stale_mounts(mount_point: &Path) {
    for stale in mounts() {
        if stale.at == mount_point.as_os_str()
            && stale.fstype.starts_with("fuse")
            && stale.source == FS_NAME
        {
            eprintln!("lazyfs: ending a stale mount at {}", mount_point.display());
            force_unmount(mount_point);
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    OsStr::from_bytes(&out).to_owned()
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Handlers never panic (see the module docs), so a poisoned lock still
    // holds consistent state.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Buffered writes of one file: disjoint, non-adjacent byte ranges by offset.
#[derive(Debug, Default)]
struct Overlay {
    extents: BTreeMap<u64, Vec<u8>>,
}

impl Overlay {
    fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// One past the last buffered byte (0 when empty).
    fn end(&self) -> u64 {
        self.extents
            .iter()
            .next_back()
            .map_or(0, |(start, bytes)| start + len64(bytes))
    }

    fn bytes(&self) -> u64 {
        self.extents.values().map(|bytes| len64(bytes)).sum()
    }

    /// Records `data` at `offset`, over whatever was buffered there; touching
    /// ranges merge, reusing the lowest one's buffer, so appends are cheap.
    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + len64(data);
        // The extents overlapping or adjacent to [offset, end], highest first
        // (their ends fall in the same order, being disjoint).
        let touching: Vec<u64> = self
            .extents
            .range(..=end)
            .rev()
            .take_while(|(start, bytes)| **start + len64(bytes) >= offset)
            .map(|(start, _)| *start)
            .collect();
        let mut start = offset;
        let mut merged = Vec::new();
        for (i, at) in touching.iter().rev().enumerate() {
            let Some(bytes) = self.extents.remove(at) else {
                continue;
            };
            if i == 0 && *at <= offset {
                start = *at;
                merged = bytes;
            } else {
                place(&mut merged, at - start, &bytes);
            }
        }
        place(&mut merged, offset - start, data);
        self.extents.insert(start, merged);
    }

    /// Copies the buffered bytes within `[offset, offset + buf.len())` into
    /// `buf`.
    fn apply(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + len64(buf);
        for (start, bytes) in self.extents.range(..end).rev() {
            let extent_end = start + len64(bytes);
            if extent_end <= offset {
                break;
            }
            let from = (*start).max(offset);
            let to = extent_end.min(end);
            let src = as_index(from - start)..as_index(to - start);
            let dst = as_index(from - offset)..as_index(to - offset);
            buf[dst].copy_from_slice(&bytes[src]);
        }
    }

    /// Forgets everything at or past `size`.
    fn truncate(&mut self, size: u64) {
        drop(self.extents.split_off(&size));
        if let Some((start, bytes)) = self.extents.iter_mut().next_back()
            && start + len64(bytes) > size
        {
            bytes.truncate(as_index(size - start));
        }
    }
}

/// Writes `data` into `buf` at `at`, growing `buf` as needed.
fn place(buf: &mut Vec<u8>, at: u64, data: &[u8]) {
    let at = as_index(at);
    if buf.len() < at + data.len() {
        buf.resize(at + data.len(), 0);
    }
    buf[at..at + data.len()].copy_from_slice(data);
}

fn len64(bytes: &[u8]) -> u64 {
    bytes.len() as u64
}

/// An in-memory offset or length as an index (offsets of buffered data always
/// fit: they index a `Vec`).
fn as_index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// One inode of the mount.
#[derive(Debug)]
struct Inode {
    /// Relative to the backing directory (empty for the root); `None` once
    /// unlinked (or renamed over) while still open.
    path: Option<PathBuf>,
    /// The backing file, open while FUSE has handles on the inode.
    file: Option<File>,
    /// Open FUSE handles.
    handles: u32,
    /// Writes not yet fsynced.
    pending: Overlay,
    /// When the last buffered write happened: the mtime we report (and apply
    /// to the backing file on fsync).
    written_at: Option<SystemTime>,
}

impl Inode {
    fn new(path: PathBuf) -> Self {
        Inode {
            path: Some(path),
            file: None,
            handles: 0,
            pending: Overlay::default(),
            written_at: None,
        }
    }
}

/// A snapshot of a directory taken at `opendir`, served by `readdir`.
#[derive(Debug)]
struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

/// Everything the mount knows, behind one lock (see the module docs).
#[derive(Debug)]
struct State {
    backing: PathBuf,
    /// False after the power cut: every operation fails with `EIO`.
    powered: bool,
    inodes: HashMap<u64, Inode>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    dirs: HashMap<u64, Vec<DirEntry>>,
    next_dir_handle: u64,
}

type Fallible<T> = Result<T, Errno>;

impl State {
    fn new(backing: PathBuf) -> Self {
        let root = PathBuf::new();
        State {
            backing,
            powered: true,
            inodes: HashMap::from([(INodeNo::ROOT.0, Inode::new(root.clone()))]),
            by_path: HashMap::from([(root, INodeNo::ROOT.0)]),
            next_ino: INodeNo::ROOT.0 + 1,
            dirs: HashMap::new(),
            next_dir_handle: 1,
        }
    }

    fn unsynced(&self) -> PowerCutReport {
        let mut report = PowerCutReport::default();
        for inode in self.inodes.values().filter(|i| !i.pending.is_empty()) {
            report.files += 1;
            report.bytes += inode.pending.bytes();
        }
        report
    }

    fn powered(&self) -> Fallible<()> {
        if self.powered {
            Ok(())
        } else {
            Err(Errno::EIO)
        }
    }

    fn inode(&self, ino: INodeNo) -> Fallible<&Inode> {
        self.inodes.get(&ino.0).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: INodeNo) -> Fallible<&mut Inode> {
        self.inodes.get_mut(&ino.0).ok_or(Errno::ENOENT)
    }

    /// The inode's path relative to the backing directory.
    fn path(&self, ino: INodeNo) -> Fallible<PathBuf> {
        self.inode(ino)?.path.clone().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Fallible<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    fn real(&self, path: &Path) -> PathBuf {
        self.backing.join(path)
    }

    /// The inode of `path`, assigning a number on first sight.
    fn ino_of(&mut self, path: &Path) -> u64 {
        if let Some(ino) = self.by_path.get(path) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new(path.to_owned()));
        self.by_path.insert(path.to_owned(), ino);
        ino
    }

    /// `path` is gone from the backing directory: its inode loses its name,
    /// and is dropped with its buffered writes unless still open.
    fn forget_path(&mut self, path: &Path) {
        let Some(ino) = self.by_path.remove(path) else {
            return;
        };
        match self.inodes.get_mut(&ino) {
            Some(inode) if inode.handles > 0 => inode.path = None,
            _ => drop(self.inodes.remove(&ino)),
        }
    }

    fn attr(&self, ino: INodeNo) -> Fallible<FileAttr> {
        let inode = self.inode(ino)?;
        let meta = match (&inode.file, &inode.path) {
            (Some(file), _) => file.metadata(),
            (None, Some(path)) => fs::symlink_metadata(self.real(path)),
            (None, None) => return Err(Errno::ENOENT),
        }?;
        Ok(file_attr(ino, &meta, inode))
    }

    /// Looks `path` up in the backing directory, and answers its inode's
    /// attributes.
    fn entry(&mut self, path: &Path) -> Fallible<FileAttr> {
        fs::symlink_metadata(self.real(path))?;
        let ino = self.ino_of(path);
        self.attr(INodeNo(ino))
    }

    /// Opens the inode's backing file unless held already (read-write where
    /// allowed: a read-only handle may still be fsynced), and returns the
    /// inode.
    fn open_file(&mut self, ino: INodeNo) -> Fallible<&mut Inode> {
        let real = self.inode(ino)?.path.as_ref().map(|path| self.real(path));
        let inode = self.inode_mut(ino)?;
        if inode.file.is_none() {
            let real = real.ok_or(Errno::ENOENT)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&real)
                .or_else(|_| File::open(&real))?;
            inode.file = Some(file);
        }
        Ok(inode)
    }

    fn setattr(&mut self, ino: INodeNo, change: AttrChange) -> Fallible<FileAttr> {
        let real = self.inode(ino)?.path.as_ref().map(|path| self.real(path));
        let inode = self.inode_mut(ino)?;
        // The held backing file if any (the name may be gone), else a fresh
        // handle on the name.
        let fresh;
        let file = match (&inode.file, &real) {
            (Some(file), _) => file,
            (None, Some(real)) => {
                fresh = match change.size {
                    Some(_) => OpenOptions::new().write(true).open(real),
                    None => File::open(real),
                }?;
                &fresh
            }
            (None, None) => return Err(Errno::ENOENT),
        };
        if let Some(mode) = change.mode {
            file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            std::os::unix::fs::fchown(file, change.uid, change.gid)?;
        }
        if let Some(size) = change.size {
            file.set_len(size)?;
            inode.pending.truncate(size);
        }
        let mut times = FileTimes::new();
        if let Some(atime) = change.atime {
            times = times.set_accessed(atime);
        }
        if let Some(mtime) = change.mtime {
            times = times.set_modified(mtime);
            // An explicit mtime wins over the one of buffered writes.
            inode.written_at = None;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            file.set_times(times)?;
        }
        self.attr(ino)
    }

    fn read(&mut self, ino: INodeNo, offset: u64, size: u32) -> Fallible<Vec<u8>> {
        let inode = self.open_file(ino)?;
        let file = inode.file.as_ref().ok_or(Errno::EIO)?;
        let backing_len = file.metadata()?.len();
        let len = backing_len.max(inode.pending.end());
        let wanted = u64::from(size).min(len.saturating_sub(offset));
        let mut buf = vec![0; as_index(wanted)];
        // Bytes past the backing file's end (a hole before buffered writes)
        // stay zero.
        let from_backing = as_index(backing_len.saturating_sub(offset).min(wanted));
        let mut done = 0;
        while done < from_backing {
            match file.read_at(&mut buf[done..from_backing], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        inode.pending.apply(offset, &mut buf);
        Ok(buf)
    }

    fn write(&mut self, ino: INodeNo, offset: u64, data: &[u8]) -> Fallible<u32> {
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let inode = self.inode_mut(ino)?;
        inode.pending.write(offset, data);
        inode.written_at = Some(SystemTime::now());
        Ok(written)
    }

    /// Makes the inode's buffered writes durable in the backing file.
    fn fsync(&mut self, ino: INodeNo, datasync: bool) -> Fallible<()> {
        let inode = self.open_file(ino)?;
        let file = inode.file.as_ref().ok_or(Errno::EIO)?;
        for (offset, bytes) in &inode.pending.extents {
            file.write_all_at(bytes, *offset)?;
        }
        if let Some(mtime) = inode.written_at {
            file.set_modified(mtime)?;
        }
        if datasync {
            file.sync_data()?;
        } else {
            file.sync_all()?;
        }
        inode.pending = Overlay::default();
        inode.written_at = None;
        Ok(())
    }

    /// A FUSE handle on the inode closed.
    fn release(&mut self, ino: INodeNo) {
        let Some(inode) = self.inodes.get_mut(&ino.0) else {
            return;
        };
        inode.handles = inode.handles.saturating_sub(1);
        if inode.handles == 0 {
            inode.file = None;
            if inode.path.is_none() {
                self.inodes.remove(&ino.0);
            }
        }
    }

    fn create(
        &mut self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Fallible<FileAttr> {
        let path = self.child(parent, name)?;
        let flags = OFlag::from_bits_retain(flags);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .create_new(flags.contains(OFlag::O_EXCL))
            .mode(mode & 0o7777)
            .open(self.real(&path))?;
        let ino = INodeNo(self.ino_of(&path));
        let inode = self.inode_mut(ino)?;
        if flags.contains(OFlag::O_TRUNC) {
            file.set_len(0)?;
            inode.pending = Overlay::default();
        }
        if inode.file.is_none() {
            inode.file = Some(file);
        }
        inode.handles += 1;
        self.attr(ino)
    }

    fn rename(&mut self, from: PathBuf, to: PathBuf) -> Fallible<()> {
        fs::rename(self.real(&from), self.real(&to))?;
        if self
            .by_path
            .get(&to)
            .is_some_and(|ino| self.by_path.get(&from) != Some(ino))
        {
            // Renamed over: the old file at `to` lost its name.
            self.forget_path(&to);
        }
        let moved: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|path| path.starts_with(&from))
            .cloned()
            .collect();
        for old in moved {
            let Ok(rest) = old.strip_prefix(&from) else {
                continue;
            };
            let new = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
            if let Some(ino) = self.by_path.remove(&old) {
                if let Some(inode) = self.inodes.get_mut(&ino) {
                    inode.path = Some(new.clone());
                }
                self.by_path.insert(new, ino);
            }
        }
        Ok(())
    }

    fn opendir(&mut self, ino: INodeNo) -> Fallible<u64> {
        let path = self.path(ino)?;
        let parent = path.parent().map_or_else(PathBuf::new, Path::to_owned);
        let mut entries = vec![
            DirEntry {
                ino: ino.0,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: self.ino_of(&parent),
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        let mut children = Vec::new();
        for entry in fs::read_dir(self.real(&path))? {
            let entry = entry?;
            let kind = FileType::from_std(entry.file_type()?).unwrap_or(FileType::RegularFile);
            children.push((entry.file_name(), kind));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in children {
            let ino = self.ino_of(&path.join(&name));
            entries.push(DirEntry { ino, kind, name });
        }
        let handle = self.next_dir_handle;
        self.next_dir_handle += 1;
        self.dirs.insert(handle, entries);
        Ok(handle)
    }
}

/// The changes of one `setattr`.
#[derive(Debug)]
struct AttrChange {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<SystemTime>,
    mtime: Option<SystemTime>,
}

fn file_attr(ino: INodeNo, meta: &fs::Metadata, inode: &Inode) -> FileAttr {
    let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
    let mut size = meta.len();
    let mut mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let mut ctime = system_time(meta.ctime(), meta.ctime_nsec());
    if kind == FileType::RegularFile {
        size = size.max(inode.pending.end());
        if let Some(written) = inode.written_at {
            mtime = written;
            ctime = ctime.max(written);
        }
    }
    FileAttr {
        ino,
        size,
        blocks: meta.blocks().max(size.div_ceil(512)),
        atime: meta.accessed().unwrap_or(UNIX_EPOCH),
        mtime,
        ctime,
        crtime: UNIX_EPOCH,
        kind,
        perm: u16::try_from(meta.mode() & 0o7777).unwrap_or(0o644),
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs) + nanos,
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// The FUSE side: each request takes the lock, fails with `EIO` once the
/// power is cut, and otherwise runs the matching [`State`] method.
struct Handler {
    state: Arc<Mutex<State>>,
}

impl Handler {
    /// The locked state, or `EIO` after the power cut.
    fn powered(&self) -> Fallible<MutexGuard<'_, State>> {
        let state = lock(&self.state);
        state.powered()?;
        Ok(state)
    }
}

fn reply_empty(reply: ReplyEmpty, result: Fallible<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_entry(reply: ReplyEntry, result: Fallible<FileAttr>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Handler {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(
            reply,
            self.powered().and_then(|mut s| {
                let path = s.child(parent, name)?;
                s.entry(&path)
            }),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.powered().and_then(|s| s.attr(ino)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.powered().and_then(|mut s| s.setattr(ino, change)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = self.powered().and_then(|s| {
            let path = s.path(ino)?;
            Ok(fs::read_link(s.real(&path))?)
        });
        match target {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.powered().and_then(|mut s| {
                let path = s.child(parent, name)?;
                fs::DirBuilder::new()
                    .mode(mode & !umask & 0o7777)
                    .create(s.real(&path))?;
                s.entry(&path)
            }),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.powered().and_then(|mut s| {
                let path = s.child(parent, name)?;
                fs::remove_file(s.real(&path))?;
                s.forget_path(&path);
                Ok(())
            }),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.powered().and_then(|mut s| {
                let path = s.child(parent, name)?;
                fs::remove_dir(s.real(&path))?;
                s.forget_path(&path);
                Ok(())
            }),
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.powered().and_then(|mut s| {
                let path = s.child(parent, link_name)?;
                std::os::unix::fs::symlink(target, s.real(&path))?;
                s.entry(&path)
            }),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.powered().and_then(|mut s| {
                if !flags.is_empty() {
                    return Err(Errno::EINVAL);
                }
                let from = s.child(parent, name)?;
                let to = s.child(newparent, newname)?;
                s.rename(from, to)
            }),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // O_TRUNC arrives as a setattr before the open; the handle is the
        // inode's held backing file, so no per-handle state is kept.
        let opened = self.powered().and_then(|mut s| {
            s.open_file(ino)?.handles += 1;
            Ok(())
        });
        match opened {
            Ok(()) => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.powered().and_then(|mut s| s.read(ino, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.powered().and_then(|mut s| s.write(ino, offset, data)) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        reply_empty(reply, self.powered().map(drop));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The bookkeeping holds after the cut too (the kernel ignores the
        // answer anyway).
        let mut state = lock(&self.state);
        state.release(ino);
        reply_empty(reply, state.powered());
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.powered().and_then(|mut s| s.fsync(ino, datasync)),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.powered().and_then(|mut s| s.opendir(ino)) {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = match self.powered() {
            Ok(state) => state,
            Err(e) => return reply.error(e),
        };
        let Some(entries) = state.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // An entry's offset is the index of the next one.
        for (i, entry) in entries.iter().enumerate().skip(as_index(offset)) {
            if reply.add(INodeNo(entry.ino), i as u64 + 1, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = lock(&self.state);
        state.dirs.remove(&fh.0);
        reply_empty(reply, state.powered());
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes reach the backing directory at once: nothing is
        // buffered to make durable.
        reply_empty(reply, self.powered().map(drop));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let stats = self.powered().and_then(|s| {
            nix::sys::statvfs::statvfs(&s.backing).map_err(|e| Errno::from_i32(e as i32))
        });
        match stats {
            Ok(st) => reply.statfs(
                st.blocks(),
                st.blocks_free(),
                st.blocks_available(),
                st.files(),
                st.files_free(),
                u32::try_from(st.block_size()).unwrap_or(4096),
                u32::try_from(st.name_max()).unwrap_or(255),
                u32::try_from(st.fragment_size()).unwrap_or(4096),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are the kernel's (default_permissions); this only
        // reports whether the inode still answers.
        reply_empty(reply, self.powered().and_then(|s| s.inode(ino).map(drop)));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .powered()
            .and_then(|mut s| s.create(parent, name, mode & !umask, flags))
        {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(attr.ino.0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(overlay: &Overlay, len: usize) -> Vec<u8> {
        let mut buf = vec![b'.'; len];
        overlay.apply(0, &mut buf);
        buf
    }

    #[test]
    fn overlay_merges_overwrites_and_truncates() {
        let mut o = Overlay::default();
        o.write(2, b"abc");
        o.write(5, b"de"); // adjacent: merges
        o.write(10, b"xy");
        assert_eq!(o.extents.len(), 2);
        assert_eq!(read_all(&o, 12), b"..abcde...xy");
        o.write(0, b"0123456789AB"); // covers everything
        assert_eq!(o.extents.len(), 1);
        assert_eq!(read_all(&o, 12), b"0123456789AB");
        o.write(4, b"--");
        assert_eq!(read_all(&o, 12), b"0123--6789AB");
        assert_eq!(o.end(), 12);
        o.truncate(5);
        assert_eq!(o.end(), 5);
        assert_eq!(read_all(&o, 7), b"0123-..");
        o.write(20, b"z");
        o.truncate(20);
        assert_eq!(o.end(), 5);
        assert_eq!(o.bytes(), 5);
        let mut window = [b'.'; 3];
        o.apply(3, &mut window);
        assert_eq!(&window, b"3-.");
    }

    #[test]
    fn overlay_write_into_the_middle_of_two_extents() {
        let mut o = Overlay::default();
        o.write(0, b"aaaa");
        o.write(8, b"bbbb");
        o.write(3, b"XXXXXX"); // bridges both
        assert_eq!(o.extents.len(), 1);
        assert_eq!(read_all(&o, 12), b"aaaXXXXXXbbb");
        o.write(1, b"");
        assert_eq!(o.bytes(), 12);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo(r"/tmp/a\040b"),
            OsString::from("/tmp/a b")
        );
        assert_eq!(unescape_mountinfo(r"/x\\"), OsString::from(r"/x\\"));
    }
}
