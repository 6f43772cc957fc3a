//! Compiling in a bounded child process (`mqtt-policy-compile`, this package's binary): a
//! policy compiled there loads and answers as one compiled in-process; bytes that are not a
//! component are refused with the child's reason; a compile bomb is stopped by the time bound
//! and by the memory bound, each named in the error.

use std::path::Path;
use std::time::Duration;

use mqtt_policy_host::*;

fn compiler() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mqtt-policy-compile"))
}

#[test]
fn a_policy_compiled_in_the_child_loads_and_answers() {
    let engine = Engine::with_compiler(Limits::default(), compiler()).unwrap();
    assert_eq!(engine.compiler(), Some(compiler()));
    let module = engine.load_file(guest_artifacts::HELLO.as_ref(), Some("max-payload = 100")).unwrap();
    let mut policy = module.instantiate(Tenant::new("acme"));
    let ConnectDecision::Accept(s, _) = policy.authenticate(&Connect::new("acme", "sensor-1")) else {
        panic!("refused")
    };
    let publish = |topic| Publish { topic, qos: 1, retain: false, payload_size: 10 };
    assert_eq!(policy.authorize_publish(s, &publish("devices/sensor-1/temp")), PublishDecision::Allow);
    assert!(matches!(policy.authorize_publish(s, &publish("devices/sensor-2/temp")), PublishDecision::Deny(_)));
}

#[test]
fn bytes_that_are_not_components_are_refused_with_the_childs_reason() {
    let engine = Engine::with_compiler(Limits::default(), compiler()).unwrap();
    for (bytes, reason) in [
        (&b"#!/bin/sh\necho hi\n"[..], "not a WebAssembly file"),
        (&b"\0asm\x01\x00\x00\x00"[..], "a core WebAssembly module, not a component"),
    ] {
        let err = engine.load_bytes("x.wasm", bytes, None).unwrap_err();
        assert!(matches!(err, Error::Compile { .. }), "{err:?}");
        assert!(err.to_string().contains(reason), "{err}");
    }
}

#[test]
fn a_compile_bomb_is_stopped_by_the_time_bound() {
    let limits = Limits { compile_time: Duration::from_millis(500), ..Limits::default() };
    let engine = Engine::with_compiler(limits, compiler()).unwrap();
    let err = engine.load_file(guest_artifacts::COMPILE_BOMB.as_ref(), None).unwrap_err();
    assert!(matches!(err, Error::CompileLimit { .. }), "{err:?}");
    assert!(err.to_string().contains("compiling took longer than 500 ms (compile_time)"), "{err}");
}

#[test]
fn a_compile_bomb_is_stopped_by_the_memory_bound() {
    let limits = Limits { compile_memory: 256 << 20, compile_time: Duration::from_secs(120), ..Limits::default() };
    let engine = Engine::with_compiler(limits, compiler()).unwrap();
    let err = engine.load_file(guest_artifacts::COMPILE_BOMB.as_ref(), None).unwrap_err();
    assert!(matches!(err, Error::CompileLimit { .. }), "{err:?}");
    assert!(err.to_string().contains("compiling needed more than 256 MiB of memory (compile_memory)"), "{err}");
}

#[test]
fn a_compiler_that_is_missing_is_refused_when_the_engine_is_made() {
    let err = Engine::with_compiler(Limits::default(), Path::new("/nonexistent/mqtt-policy-compile")).unwrap_err();
    assert!(matches!(err, Error::Engine(_)), "{err:?}");
    assert!(err.to_string().contains("cannot start the compiler /nonexistent/mqtt-policy-compile"), "{err}");
}
