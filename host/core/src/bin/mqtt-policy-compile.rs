//! `mqtt-policy-compile`: the child process a broker's engine compiles each policy in, bounded
//! in time and memory (`mqtt_policy_host::compiler`). Point the broker at it (Mosquitto:
//! `plugin_opt_compiler /usr/lib/mqtt-policy/mqtt-policy-compile`); it is not meant to be run by
//! hand.

fn main() -> std::process::ExitCode {
    mqtt_policy_host::Engine::compiler_child_main()
}
