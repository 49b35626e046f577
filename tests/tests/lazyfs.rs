//! The LazyFS power-loss file system (`stead_tests::lazyfs`): synced data
//! survives a power cut and unsynced data does not, reads see buffered
//! writes, directory operations pass through, and sled 0.34 (the stead
//! journal's store) recovers what was made durable the way the journal does
//! it. Every test skips (and passes) where FUSE cannot be mounted.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use stead_tests::lazyfs::{LazyFs, PowerCutReport, fuse_available};
use tempfile::TempDir;

macro_rules! require_fuse {
    () => {
        if let Err(why) = fuse_available() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

/// A backing directory and a mount point, removed after the mount is gone
/// (declare the `LazyFs` after this, so it drops first).
struct Dirs {
    backing: TempDir,
    mount_point: TempDir,
}

impl Dirs {
    fn new() -> Self {
        Dirs {
            backing: tempfile::tempdir().expect("backing tempdir"),
            mount_point: tempfile::tempdir().expect("mount point tempdir"),
        }
    }

    fn mount(&self) -> LazyFs {
        LazyFs::mount(self.backing.path(), self.mount_point.path()).expect("mount lazyfs")
    }

    fn backing(&self, name: &str) -> PathBuf {
        self.backing.path().join(name)
    }
}

enum Sync {
    All,
    Data,
    Not,
}

fn write_file(path: &Path, bytes: &[u8], sync: Sync) {
    let mut file = File::create(path).expect("create");
    file.write_all(bytes).expect("write");
    match sync {
        Sync::All => file.sync_all().expect("fsync"),
        Sync::Data => file.sync_data().expect("fdatasync"),
        Sync::Not => {}
    }
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Runs `f` on another thread, failing the test if it does not finish in
/// `limit` (an operation on a powered-off mount must fail, not hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the operation hung on the powered-off mount")
}

#[test]
fn synced_data_survives_a_power_cut_and_unsynced_data_does_not() {
    require_fuse!();
    let dirs = Dirs::new();
    let lazy = dirs.mount();
    let m = lazy.mount_point().to_owned();

    write_file(&m.join("fsynced"), b"made durable by fsync", Sync::All);
    write_file(
        &m.join("fdatasynced"),
        b"made durable by fdatasync",
        Sync::Data,
    );
    write_file(&m.join("lost"), b"never synced", Sync::Not);
    let (first, second) = (
        b"first half, synced; ".as_slice(),
        b"second half, not".as_slice(),
    );
    {
        let mut half = File::create(m.join("half")).expect("create");
        half.write_all(first).expect("write");
        half.sync_data().expect("fdatasync");
        half.write_all(second).expect("write");
    }
    write_file(&m.join("overwritten"), b"old content", Sync::All);
    OpenOptions::new()
        .write(true)
        .open(m.join("overwritten"))
        .expect("open")
        .write_all(b"NEW")
        .expect("overwrite");

    // Until the cut, the node sees every write (closing made none durable)...
    assert_eq!(read(&m.join("lost")), b"never synced");
    assert_eq!(read(&m.join("half")), [first, second].concat());
    assert_eq!(read(&m.join("overwritten")), b"NEW content");
    // ...while the disk holds only what was synced.
    assert_eq!(read(&dirs.backing("lost")), b"");
    assert_eq!(read(&dirs.backing("half")), first);
    assert_eq!(read(&dirs.backing("overwritten")), b"old content");

    let unsynced = lazy.unsynced();
    let lost = lazy.cut_power();
    assert_eq!(lost, unsynced);
    assert_eq!(
        lost,
        PowerCutReport {
            files: 3,
            bytes: (b"never synced".len() + second.len() + b"NEW".len()) as u64,
        }
    );
    lazy.unmount();

    let lazy = dirs.mount();
    let m = lazy.mount_point().to_owned();
    assert_eq!(read(&m.join("fsynced")), b"made durable by fsync");
    assert_eq!(read(&m.join("fdatasynced")), b"made durable by fdatasync");
    // Created (metadata is durable at once) but its data is gone.
    assert_eq!(read(&m.join("lost")), b"");
    assert_eq!(read(&m.join("half")), first);
    assert_eq!(read(&m.join("overwritten")), b"old content");
    assert_eq!(lazy.unsynced(), PowerCutReport::default());
}

#[test]
fn reads_see_buffered_writes() {
    require_fuse!();
    let dirs = Dirs::new();
    let lazy = dirs.mount();
    let path = lazy.mount_point().join("file");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");

    let mut expected: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    file.write_all(&expected).expect("write");
    file.seek(SeekFrom::Start(4_000)).expect("seek");
    file.write_all(&[0xAA; 100])
        .expect("overwrite in the middle");
    expected[4_000..4_100].fill(0xAA);

    // Through the same handle, after a seek.
    file.seek(SeekFrom::Start(4_050)).expect("seek");
    let mut window = vec![0; 100];
    file.read_exact(&mut window).expect("read");
    assert_eq!(window, expected[4_050..4_150]);
    assert_eq!(fs::metadata(&path).expect("stat").len(), 10_000);
    // Through a fresh open (which drops the kernel's cached pages, so the
    // bytes come from the buffered overlay).
    assert_eq!(read(&path), expected);

    // A write past the end leaves a hole of zeros.
    file.write_all_at(b"tail", 12_000).expect("pwrite");
    expected.resize(12_000, 0);
    expected.extend_from_slice(b"tail");
    assert_eq!(fs::metadata(&path).expect("stat").len(), 12_004);
    assert_eq!(read(&path), expected);

    // Truncation cuts the buffered writes; growing again reads zeros.
    file.set_len(5_000).expect("truncate");
    expected.truncate(5_000);
    assert_eq!(read(&path), expected);
    file.set_len(6_000).expect("extend");
    expected.resize(6_000, 0);
    assert_eq!(read(&path), expected);

    // The disk got the length (metadata is immediate), none of the data...
    assert_eq!(read(&dirs.backing("file")), vec![0; 6_000]);
    assert_eq!(lazy.unsynced().files, 1);
    // ...until the fdatasync.
    file.sync_data().expect("fdatasync");
    assert_eq!(read(&dirs.backing("file")), expected);
    assert_eq!(lazy.unsynced(), PowerCutReport::default());
}

#[test]
fn directory_operations_pass_through_and_fail_with_eio_after_the_cut() {
    require_fuse!();
    let dirs = Dirs::new();
    let lazy = dirs.mount();
    let m = lazy.mount_point().to_owned();

    fs::create_dir(m.join("dir")).expect("mkdir");
    fs::write(m.join("dir/a"), b"alpha").expect("write");
    fs::rename(m.join("dir/a"), m.join("dir/b")).expect("rename");
    assert_eq!(names(&m.join("dir")), ["b"]);
    // The buffered writes follow the file through the rename...
    assert_eq!(read(&m.join("dir/b")), b"alpha");
    File::open(m.join("dir/b"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    // ...and its directory's rename.
    fs::rename(m.join("dir"), m.join("dir2")).expect("rename dir");
    assert_eq!(read(&m.join("dir2/b")), b"alpha");

    // Write a temporary file, rename it over the real one, without an fsync.
    write_file(&m.join("conf"), b"v1", Sync::All);
    fs::write(m.join("conf.tmp"), b"v2, never synced").expect("write");
    fs::rename(m.join("conf.tmp"), m.join("conf")).expect("rename over");
    assert_eq!(read(&m.join("conf")), b"v2, never synced");

    fs::write(m.join("gone"), b"x").expect("write");
    fs::remove_file(m.join("gone")).expect("unlink");
    fs::create_dir(m.join("empty")).expect("mkdir");
    fs::remove_dir(m.join("empty")).expect("rmdir");
    assert_eq!(names(&m), ["conf", "dir2"]);
    assert_eq!(names(dirs.backing.path()), ["conf", "dir2"]);

    // The stead journal fsyncs its blob directory: a no-op here, since
    // directory changes are durable at once.
    File::open(m.join("dir2"))
        .expect("open dir")
        .sync_all()
        .expect("fsyncdir");
    let stats = nix::sys::statvfs::statvfs(&m).expect("statfs");
    assert!(stats.blocks() > 0, "statfs reports the backing file system");

    let open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("dir2/b"))
        .expect("open");
    // Left open across the unmount, as by a process that is still dying.
    let held = File::open(m.join("dir2/b")).expect("open");
    lazy.cut_power();
    let root = m.clone();
    let errors = within(Duration::from_secs(10), move || {
        let m = root;
        vec![
            ("open", File::open(m.join("conf")).err()),
            ("stat", fs::metadata(m.join("dir2")).err()),
            ("mkdir", fs::create_dir(m.join("new")).err()),
            ("readdir", fs::read_dir(&m).err()),
            ("create", File::create(m.join("new-file")).err()),
            ("rename", fs::rename(m.join("conf"), m.join("conf2")).err()),
            ("unlink", fs::remove_file(m.join("conf")).err()),
            (
                "write+fsync",
                open.write_all_at(b"x", 0)
                    .and_then(|()| open.sync_data())
                    .err(),
            ),
        ]
    });
    for (what, error) in errors {
        let error = error.unwrap_or_else(|| panic!("{what} succeeded after the power cut"));
        assert_eq!(
            error.raw_os_error(),
            Some(5),
            "{what}: {error} (expected EIO)"
        );
    }

    // Unmounting returns even though a file is still open.
    let started = Instant::now();
    lazy.unmount();
    assert!(started.elapsed() < Duration::from_secs(15), "unmount hung");

    let lazy = dirs.mount();
    let m = lazy.mount_point().to_owned();
    assert_eq!(names(&m), ["conf", "dir2"]);
    assert_eq!(read(&m.join("dir2/b")), b"alpha");
    // The rename was durable, the renamed file's data was not.
    assert_eq!(read(&m.join("conf")), b"");
    assert_eq!(
        File::open(m.join("conf.tmp"))
            .map(drop)
            .map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    );
    drop(held);
}

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value {i} ").repeat(60).into_bytes()
}

/// Opens sled as the stead journal does, less the periodic flusher (whose
/// fsync every 500 ms would make the "unsynced" writes durable at random).
fn open_sled(path: &Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        .flush_every_ms(None)
        .open()
        .expect("sled opens")
}

#[test]
fn sled_recovers_what_was_fdatasynced() {
    require_fuse!();
    let dirs = Dirs::new();
    let lazy = dirs.mount();
    let path = lazy.mount_point().join("journal");

    let db = open_sled(&path);
    const SYNCED: u32 = 1_000;
    const UNSYNCED: u32 = 3_000;
    for i in 0..SYNCED {
        db.insert(key(i), value(i)).expect("insert");
    }
    // What the stead journal does to make sled durable.
    db.flush().expect("sled flush");
    File::open(path.join("db"))
        .expect("open sled's db file")
        .sync_data()
        .expect("fdatasync of the db file");
    let after_sync = lazy.unsynced();
    for i in SYNCED..UNSYNCED {
        db.insert(key(i), value(i)).expect("insert");
    }
    let lost = lazy.cut_power();
    eprintln!("unsynced right after the fdatasync: {after_sync:?}; lost at the cut: {lost:?}");
    // The process dies: no destructor runs (sled's would fsync, and panic on
    // the EIO).
    std::mem::forget(db);
    lazy.unmount();

    let lazy = dirs.mount();
    let path = lazy.mount_point().join("journal");
    let db = open_sled(&path);
    for i in 0..SYNCED {
        assert_eq!(
            db.get(key(i)).expect("get").as_deref(),
            Some(value(i).as_slice()),
            "synced key {i} after the power cut"
        );
    }
    let survivors = (SYNCED..UNSYNCED)
        .filter(|i| db.get(key(*i)).expect("get").is_some())
        .count();
    eprintln!(
        "{survivors} of {} unsynced keys survived the cut",
        UNSYNCED - SYNCED
    );
    drop(db);
}

/// sled 0.34 stores a value larger than a quarter segment (128 KiB) in a file
/// of its own under `blobs/` and never fsyncs it: `flush` plus an fdatasync of
/// `db` make the pointer durable but not the value, and after a power cut sled
/// opens cleanly without the key. The stead journal therefore fsyncs new blob
/// files (and the directory) as well; this pins down why.
#[test]
fn a_large_sled_value_survives_only_if_its_blob_file_is_fsynced() {
    require_fuse!();
    let big = vec![7u8; 200 * 1024];
    for sync_blobs in [false, true] {
        let dirs = Dirs::new();
        let lazy = dirs.mount();
        let path = lazy.mount_point().join("journal");
        let db = open_sled(&path);
        db.insert(b"small", b"s".as_slice()).expect("insert");
        db.insert(b"big", big.clone()).expect("insert");
        db.flush().expect("sled flush");
        File::open(path.join("db"))
            .expect("open sled's db file")
            .sync_data()
            .expect("fdatasync of the db file");
        let blobs = path.join("blobs");
        assert_eq!(
            names(&blobs).len(),
            1,
            "the large value went to a blob file"
        );
        if sync_blobs {
            for entry in fs::read_dir(&blobs).expect("read_dir") {
                let blob = File::open(entry.expect("dir entry").path()).expect("open blob");
                blob.sync_all().expect("fsync of the blob");
            }
            File::open(&blobs)
                .expect("open blobs/")
                .sync_all()
                .expect("fsync of blobs/");
        }
        lazy.cut_power();
        std::mem::forget(db);
        lazy.unmount();

        let lazy = dirs.mount();
        let db = open_sled(&lazy.mount_point().join("journal"));
        assert_eq!(
            db.get(b"small").expect("get").as_deref(),
            Some(b"s".as_slice())
        );
        let recovered = db.get(b"big").expect("get");
        if sync_blobs {
            assert_eq!(recovered.as_deref(), Some(big.as_slice()));
        } else {
            assert_eq!(
                recovered, None,
                "sled 0.34 drops a value whose blob was lost"
            );
        }
    }
}

#[test]
fn a_mount_left_behind_is_replaced() {
    require_fuse!();
    let dirs = Dirs::new();
    // A test that died without unmounting.
    std::mem::forget(dirs.mount());
    let lazy = dirs.mount();
    let file = lazy.mount_point().join("file");
    fs::write(&file, b"served by the new mount").expect("write");
    assert_eq!(read(&file), b"served by the new mount");
    assert_eq!(lazy.unsynced().files, 1);
}
