//! Whether anything the loading gate judged may have changed since it last judged it: the
//! agent's way to skip a dozen `stat`s per answer without ever serving on a stale verdict.
//!
//! An inotify watch on every file and directory a verdict rests on: `config.toml`,
//! `trust.toml`, each configured component and statement (watched by inode, so a write
//! through another link is seen too), the home and providers directories, and each
//! directory above them (only events about the next directory down, or the directory
//! itself: a chmod, a rename, a replacement). The kernel queues an event inside the
//! changing system call, before it returns, so a change made before a request arrives is
//! always in the queue when the request looks: [`FsWatch::generation`] drains it without
//! blocking and moves on to a new generation if anything was there (or the queue
//! overflowed, or a watch could not be set). A verdict recorded at a generation holds while
//! the generation is the same; time-based expiry is still checked on every use.
//!
//! Linux only; elsewhere there is no watch and every answer is judged in full.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

thread_local! {
    static VIEWING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static VIEW: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (one request) with one view of the watched files: the queue is read once, when
/// the request first asks, and every check in the request judges against that. A change
/// after that point is seen by the next request, as one made after the request was answered
/// would be.
pub fn one_view<R>(f: impl FnOnce() -> R) -> R {
    VIEWING.with(|on| on.set(true));
    VIEW.with(|v| v.set(None));
    let result = f();
    VIEWING.with(|on| on.set(false));
    VIEW.with(|v| v.set(None));
    result
}

pub struct FsWatch {
    inner: Mutex<Inner>,
}

struct Inner {
    fd: i32,
    generation: u64,
    /// Per watch: the names of the entries that matter in it (`None`: every event).
    wanted: HashMap<i32, Option<HashSet<std::ffi::OsString>>>,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// False when the watches could not all be set: every call is then a new generation.
    complete: bool,
    /// Watches removed by [`arm`](Inner::arm) whose `IN_IGNORED` is still to come.
    removed: HashSet<i32>,
}

impl FsWatch {
    /// Watches `files` and `dirs` (each with its ancestors). `None` where inotify is not
    /// available.
    pub fn new(files: Vec<PathBuf>, dirs: Vec<PathBuf>) -> Option<FsWatch> {
        #[cfg(target_os = "linux")]
        {
            let mut inner = Inner {
                fd: -1,
                generation: 0,
                wanted: HashMap::new(),
                files,
                dirs,
                complete: false,
                removed: HashSet::new(),
            };
            inner.arm();
            (inner.fd >= 0).then(|| FsWatch {
                inner: Mutex::new(inner),
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (files, dirs);
            None
        }
    }

    /// The current generation: the same number as last time only if nothing watched has
    /// changed since. Inside [`one_view`], the first call's answer for the whole closure.
    pub fn generation(&self) -> u64 {
        if let Some(g) = VIEW.with(|v| v.get()) {
            return g;
        }
        let g = self.read_generation();
        VIEW.with(|v| {
            if v.get().is_none() && VIEWING.with(|on| on.get()) {
                v.set(Some(g));
            }
        });
        g
    }

    #[cfg(all(test, target_os = "linux"))]
    fn queued_bytes(&self) -> i32 {
        let inner = self.inner.lock().unwrap();
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD into an int on our own descriptor.
        unsafe { libc::ioctl(inner.fd, libc::FIONREAD, &mut n) };
        n
    }

    fn read_generation(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(target_os = "linux")]
        if !inner.complete || inner.drain() {
            inner.generation += 1;
            // Files replaced by a rename are new inodes: watch them again.
            inner.arm();
        }
        inner.generation
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(self.fd) };
        }
    }
}

#[cfg(target_os = "linux")]
impl Inner {
    /// A fresh inotify instance with every watch set.
    /// Every watch set again on the one inotify instance (a path that now names another
    /// inode gets a watch of its own), and the watches nothing names any more removed.
    /// Not a fresh instance: closing one waits for an RCU grace period, milliseconds on
    /// the request that saw the change.
    fn arm(&mut self) {
        if self.fd < 0 {
            // SAFETY: no pointers involved.
            self.fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        }
        let previous = std::mem::take(&mut self.wanted);
        if self.fd < 0 {
            self.complete = false;
            return;
        }
        let mut complete = true;
        const CHANGES: u32 = libc::IN_MODIFY
            | libc::IN_ATTRIB
            | libc::IN_CLOSE_WRITE
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        // In a directory watched for the entries that lead to what matters, only what
        // happens to an entry itself: not writes to the files beside it (the audit trail
        // sits beside the instances' state), whose own watches see their writes.
        const ENTRIES: u32 = libc::IN_ATTRIB
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        // A directory that does not exist (an instance's state, removed by `forget`) is no
        // failure: the nearest one above that does is watched for the name leading to it,
        // so its creation is a change. One created while the watches were being set is
        // looked for again at the end.
        let mut missing: Vec<PathBuf> = Vec::new();
        let mut chains: Vec<PathBuf> = Vec::new();
        for path in self.files.clone() {
            // By inode (a write through any link), and by name in its directory (a file
            // created, replaced or removed there).
            if path.exists() {
                complete &= self.add(&path, CHANGES, None);
            }
            if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
                complete &= self.add_unless_missing(parent, ENTRIES, Some(name.to_owned()), &mut missing);
                chains.push(parent.to_owned());
            }
        }
        for dir in self.dirs.clone() {
            complete &= self.add_unless_missing(&dir, CHANGES, None, &mut missing);
            chains.push(dir);
        }
        // Every directory above, as written and as it resolves: only the entry that leads
        // down (and the directory itself) matters there.
        // A path that does not exist resolves through its nearest existing ancestor, so the
        // real directory there (not a symlink to it) is watched for the name leading down.
        let mut resolved: Vec<PathBuf> = chains.iter().filter_map(|d| resolve_existing_prefix(d)).collect();
        chains.append(&mut resolved);
        let mut seen = std::collections::HashSet::new();
        for dir in chains {
            let mut child = dir.clone();
            while let Some(parent) = child.parent() {
                let name = child.file_name().map(|n| n.to_owned());
                if seen.insert((parent.to_owned(), name.clone())) {
                    complete &= self.add_unless_missing(parent, ENTRIES, name, &mut missing);
                }
                child = parent.to_owned();
            }
        }
        complete &= !missing.iter().any(|p| p.exists());
        self.complete = complete;
        for wd in previous.keys().filter(|wd| !self.wanted.contains_key(wd)) {
            // SAFETY: our own descriptor and one of its watches.
            if unsafe { libc::inotify_rm_watch(self.fd, *wd) } == 0 {
                self.removed.insert(*wd);
            }
        }
    }

    /// [`add`](Self::add), where a path that does not exist counts as watched (and is
    /// noted in `missing`).
    fn add_unless_missing(
        &mut self,
        path: &Path,
        mask: u32,
        wanted: Option<std::ffi::OsString>,
        missing: &mut Vec<PathBuf>,
    ) -> bool {
        if self.add(path, mask, wanted) {
            return true;
        }
        let gone = std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if gone {
            missing.push(path.to_owned());
        }
        gone
    }

    fn add(&mut self, path: &Path, mask: u32, wanted: Option<std::ffi::OsString>) -> bool {
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: a valid descriptor and NUL-terminated path.
        // IN_MASK_ADD: a directory watched both for its entries and for everything keeps both.
        let wd =
            unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), mask | libc::IN_DONT_FOLLOW | libc::IN_MASK_ADD) };
        if wd < 0 {
            return false;
        }
        // One directory may be watched for several names (or for all): each of them
        // counts, and nothing else in it (the audit trail beside the instances' state
        // directories is written on every request).
        match (self.wanted.entry(wd).or_insert_with(|| Some(HashSet::new())), wanted) {
            (Some(names), Some(name)) => {
                names.insert(name);
            }
            (all, None) => *all = None,
            (None, Some(_)) => {}
        }
        true
    }

    /// Reads every queued event; whether any of them matters.
    fn drain(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let mut changed = false;
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN: nothing (more) queued. Any other error: assume a change.
                if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
                    changed = true;
                }
                return changed;
            }
            let mut at = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n as usize {
                // SAFETY: the kernel wrote whole events; read the header unaligned.
                let event: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
                let name_bytes = &buf[at + header..(at + header + event.len as usize).min(n as usize)];
                let name = name_bytes.split(|b| *b == 0).next().unwrap_or(&[]);
                at += header + event.len as usize;
                if event.mask & libc::IN_IGNORED != 0 && self.removed.remove(&event.wd) {
                    // The end of a watch removed on purpose.
                    continue;
                }
                if event.mask & (libc::IN_Q_OVERFLOW | libc::IN_IGNORED) != 0 {
                    changed = true;
                    continue;
                }
                changed |= match self.wanted.get(&event.wd) {
                    Some(Some(wanted)) => name.is_empty() || wanted.iter().any(|w| w.as_encoded_bytes() == name),
                    _ => true,
                };
            }
        }
    }
}

/// `path` with its longest existing prefix resolved (symlinks followed) and the rest, which
/// does not exist yet, appended as written.
#[cfg(target_os = "linux")]
fn resolve_existing_prefix(path: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = at.canonicalize() {
            return Some(rest.iter().rev().fold(real, |p, name: &&std::ffi::OsStr| p.join(name)));
        }
        rest.push(at.file_name()?);
        at = at.parent()?;
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_change_to_a_watched_file_or_directory_above_it_is_a_new_generation_and_nothing_else_is() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        std::fs::create_dir_all(home.join("providers")).unwrap();
        let config = home.join("config.toml");
        std::fs::write(&config, "a").unwrap();
        let w = FsWatch::new(
            vec![config.clone(), home.join("trust.toml")],
            vec![home.join("providers")],
        )
        .unwrap();
        let g = w.generation();
        assert_eq!(w.generation(), g, "nothing changed");
        std::fs::write(root.path().join("unrelated"), "x").unwrap();
        assert_eq!(w.generation(), g, "a file beside the home is not watched");
        std::fs::write(&config, "b").unwrap();
        let g2 = w.generation();
        assert_ne!(g2, g, "the config was written");
        assert_eq!(w.generation(), g2);
        std::fs::write(home.join("trust.toml"), "t").unwrap();
        let g3 = w.generation();
        assert_ne!(g3, g2, "a trust store that did not exist was created");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let g4 = w.generation();
        assert_ne!(g4, g3, "a chmod of a directory above the home");
        std::fs::write(home.join("providers/x.wasm"), "w").unwrap();
        assert_ne!(w.generation(), g4, "a new component");
    }

    #[test]
    fn a_directory_watched_for_two_entries_ignores_its_other_entries() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        for p in ["a", "b"] {
            std::fs::create_dir_all(state.join(p).join("rejected")).unwrap();
        }
        for beside in ["audit.jsonl", "a/state.bin"] {
            std::fs::write(state.join(beside), "").unwrap();
        }
        let w = FsWatch::new(vec![], vec![state.join("a/rejected"), state.join("b/rejected")]).unwrap();
        let g = w.generation();
        for beside in ["audit.jsonl", "a/state.bin"] {
            std::fs::write(state.join(beside), "written").unwrap();
        }
        assert_eq!(w.queued_bytes(), 0, "writing files beside them queues no event to read");
        assert_eq!(w.generation(), g, "files beside the watched directories");
        std::fs::write(state.join("b/rejected/key"), "").unwrap();
        let g2 = w.generation();
        assert_ne!(g2, g, "a file in the second watched directory");
        std::fs::rename(state.join("a"), state.join("a2")).unwrap();
        let g3 = w.generation();
        assert_ne!(g3, g2, "the first one's parent renamed");
        // Its directory is gone (`forget` removes an instance's state): that is no reason to
        // see a change on every call, and its creation again is one.
        assert_eq!(w.generation(), g3, "a missing directory is watched through its parent");
        std::fs::create_dir_all(state.join("a/rejected")).unwrap();
        let g4 = w.generation();
        assert_ne!(g4, g3, "the missing directory created");
        assert_eq!(w.generation(), g4);
        std::fs::write(state.join("a/rejected/key"), "").unwrap();
        assert_ne!(w.generation(), g4, "and a file in it, once it is watched again");
    }

    #[test]
    fn a_missing_directory_behind_a_symlinked_parent_is_watched_in_the_real_directory() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real-state");
        std::fs::create_dir_all(real.join("b/rejected")).unwrap();
        std::os::unix::fs::symlink(&real, root.path().join("state")).unwrap();
        let state = root.path().join("state");
        // `a` is missing (forgotten); `b` exists; the state directory is a link.
        let w = FsWatch::new(vec![], vec![state.join("a/rejected"), state.join("b/rejected")]).unwrap();
        let g = w.generation();
        assert_eq!(w.generation(), g);
        std::fs::create_dir_all(real.join("a/rejected")).unwrap();
        let g2 = w.generation();
        assert_ne!(g2, g, "the missing directory was created behind the link");
        std::fs::write(real.join("a/rejected/key"), "").unwrap();
        assert_ne!(w.generation(), g2, "and a rejection recorded in it");
    }
}
