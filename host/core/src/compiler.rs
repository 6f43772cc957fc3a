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
//! [`crate::Limits::compile_time`] (wall clock).
//!
//! Protocol: `mqtt-policy-compile --memory-bytes N --cpu-seconds N`, the component on stdin;
//! exit 0 with the artifact on stdout, 1 with the reason on stderr (not a valid component),
//! 3 when an allocation failed (out of memory), 2 for a usage or setup error.

use std::io::{Read, Write};
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
/// artifact for `Component::deserialize`.
pub(crate) fn compile_in_child(compiler: &Path, limits: &Limits, bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut child = Command::new(compiler)
        .arg("--memory-bytes")
        .arg(limits.compile_memory.to_string())
        .arg("--cpu-seconds")
        .arg(cpu_seconds(limits.compile_time).to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::Broken(format!("cannot start the compiler {}: {e}", compiler.display())))?;
    let deadline = Instant::now() + limits.compile_time;
    let (mut stdin, stdout, stderr) =
        (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    // Each pipe has its own thread, so a child that stops reading or writes more than a pipe
    // holds cannot block the parent past the deadline: killing the child ends all three.
    let (status, killed, artifact, stderr) = std::thread::scope(|scope| {
        scope.spawn(move || {
            // A child that died early closes its end: nothing more to say to it.
            let _ = stdin.write_all(bytes);
        });
        let out = scope.spawn(move || read_capped(stdout, usize::MAX));
        let err = scope.spawn(move || read_capped(stderr, STDERR_KEPT));
        let (status, killed) = wait_until(&mut child, deadline);
        (status, killed, out.join().unwrap_or_default(), err.join().unwrap_or_default())
    });
    let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
    if killed {
        return Err(Failure::Time);
    }
    let status = status.map_err(|e| Failure::Broken(format!("waiting for the compiler: {e}")))?;
    classify(status, artifact, stderr)
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

/// Waits for `child` until `deadline`, then kills it; says whether it was killed.
fn wait_until(child: &mut Child, deadline: Instant) -> (std::io::Result<ExitStatus>, bool) {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Ok(status), false),
            Ok(None) => {}
            Err(e) => return (Err(e), false),
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            return (child.wait(), true);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Reads `r` to its end, keeping the first `cap` bytes.
fn read_capped(mut r: impl Read, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match r.read(&mut buf) {
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
