//! Wakes the watcher as soon as a file lands in the policy directory (Linux inotify), so a
//! deployed policy answers within milliseconds instead of at the next periodic scan. The
//! periodic scan stays as the fallback: where inotify is unavailable, or when the directory
//! itself is replaced.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// Events that mean a file is complete or gone: a close after writing, a rename into or out of
/// the directory, a deletion. Not creation or each write: a file being written is not ready.
/// And the directory itself deleted or renamed away (another one renamed over its path): the
/// watch then follows the old directory, so it is dropped and the path watched anew.
const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// An inotify watch on one directory.
pub struct DirNotify {
    fd: libc::c_int,
    /// The watch descriptor while the path is watched.
    watch: Option<libc::c_int>,
    dir: CString,
}

impl DirNotify {
    /// A watch on `dir`, or `None` where inotify is unavailable (the caller then polls only).
    pub fn new(dir: &Path) -> Option<DirNotify> {
        let dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: plain syscall; the fd is owned by the returned value and closed on drop.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let mut n = DirNotify { fd, watch: None, dir };
        n.rewatch();
        Some(n)
    }

    /// (Re)adds the watch if it is missing, e.g. after the directory was removed and created
    /// again. Cheap when the watch exists.
    pub fn rewatch(&mut self) {
        if self.watch.is_none() {
            // SAFETY: `dir` is a valid NUL-terminated path; `fd` is our inotify descriptor.
            let wd = unsafe { libc::inotify_add_watch(self.fd, self.dir.as_ptr(), MASK) };
            self.watch = (wd >= 0).then_some(wd);
        }
    }

    /// Reads every pending event; true if there was one.
    fn drain(&mut self) -> bool {
        let mut changed = false;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer we own, of the length we pass.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            while at + std::mem::size_of::<libc::inotify_event>() <= n as usize {
                // SAFETY: the kernel writes whole events; read_unaligned copes with the byte buffer.
                let ev = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast::<libc::inotify_event>()) };
                if ev.mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0
                    && self.watch == Some(ev.wd)
                {
                    if ev.mask & libc::IN_MOVE_SELF != 0 {
                        // SAFETY: removing our own watch from our own descriptor.
                        unsafe { libc::inotify_rm_watch(self.fd, ev.wd) };
                    }
                    self.watch = None;
                }
                changed = true;
                at += std::mem::size_of::<libc::inotify_event>() + ev.len as usize;
            }
        }
        changed
    }
}

/// Wakes a waiting watcher from another thread (a stop or rescan request), so the watcher
/// can sleep its whole poll interval instead of waking in short steps to look at flags.
pub struct Waker {
    fd: libc::c_int,
}

impl Waker {
    /// An eventfd, or `None` if the kernel refuses one (the caller then waits in short steps).
    pub fn new() -> Option<Waker> {
        // SAFETY: plain syscall; the fd is owned by the returned value and closed on drop.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        (fd >= 0).then_some(Waker { fd })
    }

    /// Ends the current (or next) [`wait`] at once.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes we own to our eventfd; a full counter only means already woken.
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }

    fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reading 8 bytes into a value we own; non-blocking.
        unsafe { libc::read(self.fd, (&mut n as *mut u64).cast(), 8) };
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we opened, once.
        unsafe { libc::close(self.fd) };
    }
}

/// Waits up to `timeout` for a change in the directory (`notify`) or a wake-up (`waker`);
/// true when the directory changed (its pending events are read). Without either it sleeps.
pub fn wait(notify: Option<&mut DirNotify>, waker: Option<&Waker>, timeout: Duration) -> bool {
    let mut fds = [libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 }; 2];
    if let Some(n) = &notify {
        fds[0].fd = n.fd;
    }
    if let Some(w) = waker {
        fds[1].fd = w.fd;
    }
    if notify.is_none() && waker.is_none() {
        std::thread::sleep(timeout);
        return false;
    }
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: two valid pollfds; a negative fd is ignored by poll(2).
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if ready <= 0 {
        return false;
    }
    if let Some(w) = waker
        && fds[1].revents != 0
    {
        w.drain();
    }
    match notify {
        Some(n) if fds[0].revents != 0 => n.drain(),
        _ => false,
    }
}

impl Drop for DirNotify {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we opened, once.
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_file_wakes_the_watch_and_a_quiet_directory_does_not() {
        let dir = std::env::temp_dir().join(format!("mqtt-policy-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut n = DirNotify::new(&dir).expect("inotify on Linux");
        assert!(!wait(Some(&mut n), None, Duration::from_millis(20)), "nothing happened yet");
        std::fs::write(dir.join(".a.wasm.tmp"), b"x").unwrap();
        assert!(wait(Some(&mut n), None, Duration::from_secs(2)), "close after write");
        std::fs::rename(dir.join(".a.wasm.tmp"), dir.join("a.wasm")).unwrap();
        assert!(wait(Some(&mut n), None, Duration::from_secs(2)), "rename into place");
        assert!(!wait(Some(&mut n), None, Duration::from_millis(20)), "events were drained");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(wait(Some(&mut n), None, Duration::from_secs(2)), "the directory went away");
        assert!(n.watch.is_none(), "the watch is gone with it and will be re-added");
    }

    #[test]
    fn a_directory_renamed_over_the_watched_path_is_watched_anew() {
        let base = std::env::temp_dir().join(format!("mqtt-policy-notify-move-{}", std::process::id()));
        let (dir, other) = (base.join("policies"), base.join("staged"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let mut n = DirNotify::new(&dir).expect("inotify on Linux");
        std::fs::rename(&dir, base.join("old")).unwrap();
        std::fs::rename(&other, &dir).unwrap();
        assert!(wait(Some(&mut n), None, Duration::from_secs(2)), "the directory moved away");
        assert!(n.watch.is_none(), "the old directory is no longer followed");
        n.rewatch();
        assert!(n.watch.is_some());
        std::fs::write(dir.join("a.wasm"), b"x").unwrap();
        assert!(wait(Some(&mut n), None, Duration::from_secs(2)), "a file in the new directory wakes it");
        std::fs::write(base.join("old").join("b.wasm"), b"x").unwrap();
        assert!(!wait(Some(&mut n), None, Duration::from_millis(50)), "the old directory does not");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_waker_ends_a_long_wait_from_another_thread_and_is_drained() {
        let w = std::sync::Arc::new(Waker::new().expect("eventfd on Linux"));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w2.wake();
        });
        let started = std::time::Instant::now();
        assert!(!wait(None, Some(&w), Duration::from_secs(30)), "a wake-up is not a directory change");
        assert!(started.elapsed() < Duration::from_secs(20), "woken, not timed out");
        t.join().unwrap();
        let started = std::time::Instant::now();
        wait(None, Some(&w), Duration::from_millis(30));
        assert!(started.elapsed() >= Duration::from_millis(25), "the wake-up was consumed");
    }
}
