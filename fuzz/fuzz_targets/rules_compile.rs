//! `hub_rules::hub::Hub::compile` on arbitrary UTF-8: a rules document either compiles or
//! is refused with an error message; it never panics (a panic in the policy's constructor
//! would take down the instance instead of reporting the line at fault).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match hub_rules::hub::Hub::compile(text) {
        Ok(hub) => {
            let _ = hub.device_count();
        }
        Err(message) => assert!(!message.is_empty(), "an empty error for {text:?}"),
    }
});
