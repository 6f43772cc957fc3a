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
const MASK: u32 =
    libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_MOVED_FROM | libc::IN_DELETE | libc::IN_DELETE_SELF;

/// An inotify watch on one directory.
pub struct DirNotify {
    fd: libc::c_int,
    watching: bool,
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
        let mut n = DirNotify { fd, watching: false, dir };
        n.rewatch();
        Some(n)
    }

    /// (Re)adds the watch if it is missing, e.g. after the directory was removed and created
    /// again. Cheap when the watch exists.
    pub fn rewatch(&mut self) {
        if !self.watching {
            // SAFETY: `dir` is a valid NUL-terminated path; `fd` is our inotify descriptor.
            self.watching = unsafe { libc::inotify_add_watch(self.fd, self.dir.as_ptr(), MASK) } >= 0;
        }
    }

    /// Waits up to `timeout` for a change; true when one arrived (all pending events are read).
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready <= 0 {
            return false;
        }
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
                if ev.mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF) != 0 {
                    self.watching = false;
                }
                changed = true;
                at += std::mem::size_of::<libc::inotify_event>() + ev.len as usize;
            }
        }
        changed
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
        assert!(!n.wait(Duration::from_millis(20)), "nothing happened yet");
        std::fs::write(dir.join(".a.wasm.tmp"), b"x").unwrap();
        assert!(n.wait(Duration::from_secs(2)), "close after write");
        std::fs::rename(dir.join(".a.wasm.tmp"), dir.join("a.wasm")).unwrap();
        assert!(n.wait(Duration::from_secs(2)), "rename into place");
        assert!(!n.wait(Duration::from_millis(20)), "events were drained");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(n.wait(Duration::from_secs(2)), "the directory went away");
        assert!(!n.watching, "the watch is gone with it and will be re-added");
    }
}
