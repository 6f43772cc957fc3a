//! Compiling a policy in a child process bounded in time and memory.
//!
//! Cranelift's time and memory on a component are bounded by nothing in the component format
//! that is cheap to check (a function may be 7 MB of code with 50,000 locals). With a compiler
//! configured ([`crate::Engine::with_compiler`]), the engine hands the component's bytes to a
//! child process, `mqtt-policy-compile` (this crate's binary, whose `main` is
//! `Engine::compiler_child_main`, which runs [`child_main`] with the engine's configuration).
//! The child limits its own address space (`RLIMIT_AS`, [`crate::Limits::compile_memory`]) and
//! CPU time (`RLIMIT_CPU`), compiles with the engine's own wasmtime configuration
//! (`Engine::precompile_component`) and writes the artifact to its stdout; the engine loads it
//! with `Component::deserialize`, which refuses an artifact of another wasmtime version or
//! configuration. The parent kills a child still running after
//! [`crate::Limits::compile_time`] (wall clock). The component, the artifact and the errors
//! pass through memory files, so the parent needs no thread to feed or drain the child
//! ([`Compiling`]).
//!
//! Protocol: `mqtt-policy-compile --memory-bytes N --cpu-seconds N`, the component on stdin;
//! exit 0 with the artifact on stdout, 1 with the reason on stderr (not a valid component),
//! 3 when an allocation failed (out of memory), 2 for a usage or setup error.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::limits::Limits;

/// Exit code of a child whose component is not valid (its reason on stderr).
const REFUSED: u8 = 1;
/// Exit code of a child started wrongly or unable to set its limits or engine up.
const USAGE: u8 = 2;
/// Exit code of a child whose compilation ran out of memory (wasmtime reported it).
const OUT_OF_MEMORY: u8 = 3;

/// The most of the child's stderr kept for the error message.
const STDERR_KEPT: usize = 16 << 10;

/// Why compiling in the child gave no artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Still running after the time bound (killed), or stopped by its CPU limit.
    Time,
    /// An allocation failed under the address-space bound.
    Memory,
    /// The child's reason the bytes are not a valid component.
    Refused(String),
    /// The child could not be run, or ended otherwise.
    Broken(String),
}

/// Compiles `bytes` with the child at `compiler` under `limits`' compile bounds; returns the
/// artifact for `Component::deserialize`. Waits for the child: see [`Compiling`] for a caller
/// that must not block.
pub(crate) fn compile_in_child(compiler: &Path, limits: &Limits, bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut compiling = Compiling::start(compiler, limits, bytes)?;
    wait_for(|| compiling.poll())
}

/// Asks `poll` until it answers, sleeping between asks from 1 ms, doubling up to 20 ms: how
/// a caller that may block waits for something made to be polled (a compile, a load).
pub(crate) fn wait_for<T>(mut poll: impl FnMut() -> Option<T>) -> T {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(done) = poll() {
            return done;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A compilation running in a child process, asked with [`Compiling::poll`] whether it has
/// ended: a host whose one thread serves the broker (Mosquitto) starts compiles from its event
/// loop and looks at them there, never waiting. The component, the artifact and the child's
/// errors pass through anonymous memory files (`memfd_create`), not pipes: a pipe needs a reader
/// while the child writes, which meant a thread per pipe, and a process with threads pays for
/// them at every `malloc` and system call of the broker (BENCHMARKS.md). Dropping it kills the
/// child.
pub(crate) struct Compiling {
    child: Child,
    deadline: Instant,
    stdout: std::fs::File,
    stderr: std::fs::File,
    done: bool,
}

impl Compiling {
    /// Starts the child at `compiler` on `bytes`, bounded by `limits`.
    pub(crate) fn start(compiler: &Path, limits: &Limits, bytes: &[u8]) -> Result<Compiling, Failure> {
        let broken = |what: &str, e: std::io::Error| Failure::Broken(format!("{what}: {e}"));
        let mut stdin = memory_file("mqtt-policy-component").map_err(|e| broken("a file for the component", e))?;
        stdin.write_all(bytes).map_err(|e| broken("writing the component for the compiler", e))?;
        stdin.seek(SeekFrom::Start(0)).map_err(|e| broken("rewinding the component", e))?;
        let stdout = memory_file("mqtt-policy-artifact").map_err(|e| broken("a file for the artifact", e))?;
        let stderr = memory_file("mqtt-policy-compile-errors").map_err(|e| broken("a file for the errors", e))?;
        let child = Command::new(compiler)
            .arg("--memory-bytes")
            .arg(limits.compile_memory.to_string())
            .arg("--cpu-seconds")
            .arg(cpu_seconds(limits.compile_time).to_string())
            .env_clear()
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout.try_clone().map_err(|e| broken("sharing the artifact file", e))?))
            .stderr(Stdio::from(stderr.try_clone().map_err(|e| broken("sharing the errors file", e))?))
            .spawn()
            .map_err(|e| Failure::Broken(format!("cannot start the compiler {}: {e}", compiler.display())))?;
        Ok(Compiling { child, deadline: Instant::now() + limits.compile_time, stdout, stderr, done: false })
    }

    /// The outcome once the child has ended (killed past its time bound), `None` while it
    /// runs. A system call; asked again after the outcome, it answers `None`.
    pub(crate) fn poll(&mut self) -> Option<Result<Vec<u8>, Failure>> {
        if self.done {
            return None;
        }
        let (status, killed) = match self.child.try_wait() {
            Ok(Some(status)) => (Ok(status), false),
            Ok(None) if Instant::now() < self.deadline => return None,
            Ok(None) => {
                let _ = self.child.kill();
                (self.child.wait(), true)
            }
            Err(e) => (Err(e), false),
        };
        self.done = true;
        if killed {
            return Some(Err(Failure::Time));
        }
        let status = match status {
            Ok(s) => s,
            Err(e) => return Some(Err(Failure::Broken(format!("waiting for the compiler: {e}")))),
        };
        let stderr = String::from_utf8_lossy(&read_from_start(&mut self.stderr, STDERR_KEPT)).trim().to_owned();
        let artifact = if status.success() { read_from_start(&mut self.stdout, usize::MAX) } else { Vec::new() };
        Some(classify(status, artifact, stderr))
    }
}

impl Drop for Compiling {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An anonymous file in memory, closed on exec (the child gets its own descriptor through
/// `Stdio`).
fn memory_file(name: &str) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(name).expect("no NUL in the name");
    // SAFETY: a plain system call on a NUL-terminated name; the descriptor it returns is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// What the child wrote to `file`, from its start, up to `cap` bytes.
fn read_from_start(file: &mut std::fs::File, cap: usize) -> Vec<u8> {
    if file.seek(SeekFrom::Start(0)).is_err() {
        return Vec::new();
    }
    read_capped(file, cap)
}

/// What a child's exit means.
fn classify(status: ExitStatus, artifact: Vec<u8>, stderr: String) -> Result<Vec<u8>, Failure> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(artifact),
        (Some(c), _) if c == i32::from(REFUSED) => Err(Failure::Refused(stderr)),
        (Some(c), _) if c == i32::from(OUT_OF_MEMORY) => Err(Failure::Memory),
        (_, Some(libc::SIGXCPU)) => Err(Failure::Time),
        // Rust's allocation failure handler prints this line and aborts.
        (_, Some(libc::SIGABRT)) if stderr.contains("memory allocation of") => Err(Failure::Memory),
        _ => Err(Failure::Broken(format!(
            "the compiler ended with {status}{}{}",
            if stderr.is_empty() { "" } else { ": " },
            stderr.lines().last().unwrap_or_default()
        ))),
    }
}

/// Reads `r` to its end, keeping the first `cap` bytes.
fn read_capped(mut r: impl Read, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match r.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
    }
}

/// `RLIMIT_CPU` is in whole seconds: the time bound rounded up, at least 1. The wall-clock
/// kill is the precise bound; this one also holds if the parent is gone.
fn cpu_seconds(time: Duration) -> u64 {
    (time.as_nanos().div_ceil(1_000_000_000) as u64).max(1)
}

/// The `main` of `mqtt-policy-compile`, the child the engine compiles policies in (see the
/// module documentation for its protocol), compiling with `config` and explaining a refusal
/// with `describe`. Sets its limits before reading anything. Taking the configuration keeps
/// this module below the engine, which calls it.
pub(crate) fn child_main(config: wasmtime::Config, describe: fn(&[u8], &wasmtime::Error) -> String) -> ExitCode {
    let usage = |message: String| {
        eprintln!("mqtt-policy-compile: {message}");
        eprintln!("usage: mqtt-policy-compile --memory-bytes N --cpu-seconds N < component.wasm > artifact");
        ExitCode::from(USAGE)
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut memory, mut cpu) = (None, None);
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok());
        match (pair[0].as_str(), value) {
            ("--memory-bytes", Some(v)) => memory = Some(v),
            ("--cpu-seconds", Some(v)) => cpu = Some(v),
            (arg, _) => return usage(format!("unexpected argument `{arg}` or missing number")),
        }
    }
    let (Some(memory), Some(cpu)) = (memory, cpu) else {
        return usage("both bounds are required".to_owned());
    };
    for (resource, value, name) in [(libc::RLIMIT_AS, memory, "RLIMIT_AS"), (libc::RLIMIT_CPU, cpu, "RLIMIT_CPU")] {
        // The hard limit one second above the soft one: SIGXCPU at the soft limit ends the
        // process (its default action) before the kernel's SIGKILL at the hard one.
        let hard = if resource == libc::RLIMIT_CPU { value.saturating_add(1) } else { value };
        let limit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: hard as libc::rlim_t };
        // SAFETY: setrlimit reads the struct we pass and changes only this process's limits.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return usage(format!("setting {name} to {value}: {}", std::io::Error::last_os_error()));
        }
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        if e.kind() == std::io::ErrorKind::OutOfMemory {
            eprintln!("reading the component: {e}");
            return ExitCode::from(OUT_OF_MEMORY);
        }
        return usage(format!("reading the component from stdin: {e}"));
    }
    let engine = match wasmtime::Engine::new(&config) {
        Ok(e) => e,
        Err(e) => return usage(format!("configuring wasmtime: {e:#}")),
    };
    match engine.precompile_component(&bytes) {
        Ok(artifact) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&artifact).and_then(|()| out.flush()).is_err() {
                return ExitCode::from(USAGE);
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.downcast_ref::<wasmtime::OutOfMemory>().is_some() => {
            eprintln!("{e:#}");
            ExitCode::from(OUT_OF_MEMORY)
        }
        Err(e) => {
            eprintln!("{}", describe(&bytes, &e));
            ExitCode::from(REFUSED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limit_rounds_up_to_whole_seconds() {
        assert_eq!(cpu_seconds(Duration::from_millis(10)), 1);
        assert_eq!(cpu_seconds(Duration::from_secs(2)), 2);
        assert_eq!(cpu_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(cpu_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn stderr_is_kept_up_to_its_cap_and_read_to_the_end() {
        let input = vec![b'x'; 200 << 10];
        let mut reader = &input[..];
        assert_eq!(read_capped(&mut reader, 10).len(), 10);
        assert!(reader.is_empty(), "the rest was drained, so a writer never blocks");
    }
}
