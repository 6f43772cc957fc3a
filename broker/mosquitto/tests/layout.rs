//! The hand-written FFI structs match Mosquitto's headers: a C program built against the
//! installed `mosquitto_broker.h` prints every size and offset, and they must equal Rust's.

use std::mem::{offset_of, size_of};
use std::process::Command;

use mqtt_policy_mosquitto::ffi::*;

const PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#define F(s, f) printf(#s "." #f " %zu\n", offsetof(struct s, f));
#define S(s) printf(#s " %zu\n", sizeof(struct s));
int main(void) {
    S(mosquitto_opt) F(mosquitto_opt, key) F(mosquitto_opt, value)
    S(mosquitto_evt_reload) F(mosquitto_evt_reload, options) F(mosquitto_evt_reload, option_count) F(mosquitto_evt_reload, future2)
    S(mosquitto_evt_acl_check) F(mosquitto_evt_acl_check, client) F(mosquitto_evt_acl_check, topic) F(mosquitto_evt_acl_check, payload)
    F(mosquitto_evt_acl_check, properties) F(mosquitto_evt_acl_check, access) F(mosquitto_evt_acl_check, payloadlen)
    F(mosquitto_evt_acl_check, qos) F(mosquitto_evt_acl_check, retain) F(mosquitto_evt_acl_check, future2)
    S(mosquitto_evt_basic_auth) F(mosquitto_evt_basic_auth, client) F(mosquitto_evt_basic_auth, username) F(mosquitto_evt_basic_auth, password)
    S(mosquitto_evt_message) F(mosquitto_evt_message, client) F(mosquitto_evt_message, topic) F(mosquitto_evt_message, payload)
    F(mosquitto_evt_message, properties) F(mosquitto_evt_message, reason_string) F(mosquitto_evt_message, payloadlen)
    F(mosquitto_evt_message, qos) F(mosquitto_evt_message, reason_code) F(mosquitto_evt_message, retain) F(mosquitto_evt_message, future2)
    S(mosquitto_evt_tick) F(mosquitto_evt_tick, now_ns) F(mosquitto_evt_tick, next_ns) F(mosquitto_evt_tick, now_s) F(mosquitto_evt_tick, next_s)
    S(mosquitto_evt_disconnect) F(mosquitto_evt_disconnect, client) F(mosquitto_evt_disconnect, reason)
    printf("MOSQ_PLUGIN_VERSION %d\n", MOSQ_PLUGIN_VERSION);
    printf("MOSQ_EVT_RELOAD %d\nMOSQ_EVT_ACL_CHECK %d\nMOSQ_EVT_BASIC_AUTH %d\nMOSQ_EVT_MESSAGE %d\nMOSQ_EVT_TICK %d\nMOSQ_EVT_DISCONNECT %d\n",
        MOSQ_EVT_RELOAD, MOSQ_EVT_ACL_CHECK, MOSQ_EVT_BASIC_AUTH, MOSQ_EVT_MESSAGE, MOSQ_EVT_TICK, MOSQ_EVT_DISCONNECT);
    printf("MOSQ_ACL_READ %d\nMOSQ_ACL_WRITE %d\nMOSQ_ACL_SUBSCRIBE %d\nMOSQ_ACL_UNSUBSCRIBE %d\n",
        MOSQ_ACL_READ, MOSQ_ACL_WRITE, MOSQ_ACL_SUBSCRIBE, MOSQ_ACL_UNSUBSCRIBE);
    printf("MOSQ_ERR_SUCCESS %d\nMOSQ_ERR_PROTOCOL %d\nMOSQ_ERR_AUTH %d\nMOSQ_ERR_ACL_DENIED %d\nMOSQ_ERR_UNKNOWN %d\nMOSQ_ERR_PLUGIN_DEFER %d\nMOSQ_ERR_QOS_NOT_SUPPORTED %d\nMOSQ_ERR_RETAIN_NOT_SUPPORTED %d\n",
        MOSQ_ERR_SUCCESS, MOSQ_ERR_PROTOCOL, MOSQ_ERR_AUTH, MOSQ_ERR_ACL_DENIED, MOSQ_ERR_UNKNOWN, MOSQ_ERR_PLUGIN_DEFER, MOSQ_ERR_QOS_NOT_SUPPORTED, MOSQ_ERR_RETAIN_NOT_SUPPORTED);
    return 0;
}
"#;

fn c_layout() -> Vec<(String, i64)> {
    assert!(
        std::path::Path::new("/usr/include/mosquitto_broker.h").exists(),
        "mosquitto-dev is not installed (scripts/test.sh installs it)"
    );
    assert!(
        std::path::Path::new("/usr/include/mosquitto.h").exists(),
        "libmosquitto-dev is not installed (scripts/test.sh installs it)"
    );
    let dir = std::env::temp_dir().join(format!("mqtt-policy-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, PROGRAM).unwrap();
    let out = Command::new("cc").arg(&src).arg("-o").arg(&exe).output().expect("a C compiler (cc)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn structs_and_constants_match_the_installed_headers() {
    let rust: Vec<(&str, i64)> = vec![
        ("mosquitto_opt", size_of::<Opt>() as i64),
        ("mosquitto_opt.key", offset_of!(Opt, key) as i64),
        ("mosquitto_opt.value", offset_of!(Opt, value) as i64),
        ("mosquitto_evt_reload", size_of::<EvtReload>() as i64),
        ("mosquitto_evt_reload.options", offset_of!(EvtReload, options) as i64),
        ("mosquitto_evt_reload.option_count", offset_of!(EvtReload, option_count) as i64),
        ("mosquitto_evt_reload.future2", offset_of!(EvtReload, future2) as i64),
        ("mosquitto_evt_acl_check", size_of::<EvtAclCheck>() as i64),
        ("mosquitto_evt_acl_check.client", offset_of!(EvtAclCheck, client) as i64),
        ("mosquitto_evt_acl_check.topic", offset_of!(EvtAclCheck, topic) as i64),
        ("mosquitto_evt_acl_check.payload", offset_of!(EvtAclCheck, payload) as i64),
        ("mosquitto_evt_acl_check.properties", offset_of!(EvtAclCheck, properties) as i64),
        ("mosquitto_evt_acl_check.access", offset_of!(EvtAclCheck, access) as i64),
        ("mosquitto_evt_acl_check.payloadlen", offset_of!(EvtAclCheck, payloadlen) as i64),
        ("mosquitto_evt_acl_check.qos", offset_of!(EvtAclCheck, qos) as i64),
        ("mosquitto_evt_acl_check.retain", offset_of!(EvtAclCheck, retain) as i64),
        ("mosquitto_evt_acl_check.future2", offset_of!(EvtAclCheck, future2) as i64),
        ("mosquitto_evt_basic_auth", size_of::<EvtBasicAuth>() as i64),
        ("mosquitto_evt_basic_auth.client", offset_of!(EvtBasicAuth, client) as i64),
        ("mosquitto_evt_basic_auth.username", offset_of!(EvtBasicAuth, username) as i64),
        ("mosquitto_evt_basic_auth.password", offset_of!(EvtBasicAuth, password) as i64),
        ("mosquitto_evt_message", size_of::<EvtMessage>() as i64),
        ("mosquitto_evt_message.client", offset_of!(EvtMessage, client) as i64),
        ("mosquitto_evt_message.topic", offset_of!(EvtMessage, topic) as i64),
        ("mosquitto_evt_message.payload", offset_of!(EvtMessage, payload) as i64),
        ("mosquitto_evt_message.properties", offset_of!(EvtMessage, properties) as i64),
        ("mosquitto_evt_message.reason_string", offset_of!(EvtMessage, reason_string) as i64),
        ("mosquitto_evt_message.payloadlen", offset_of!(EvtMessage, payloadlen) as i64),
        ("mosquitto_evt_message.qos", offset_of!(EvtMessage, qos) as i64),
        ("mosquitto_evt_message.reason_code", offset_of!(EvtMessage, reason_code) as i64),
        ("mosquitto_evt_message.retain", offset_of!(EvtMessage, retain) as i64),
        ("mosquitto_evt_message.future2", offset_of!(EvtMessage, future2) as i64),
        ("mosquitto_evt_tick", size_of::<EvtTick>() as i64),
        ("mosquitto_evt_tick.now_ns", offset_of!(EvtTick, now_ns) as i64),
        ("mosquitto_evt_tick.next_ns", offset_of!(EvtTick, next_ns) as i64),
        ("mosquitto_evt_tick.now_s", offset_of!(EvtTick, now_s) as i64),
        ("mosquitto_evt_tick.next_s", offset_of!(EvtTick, next_s) as i64),
        ("mosquitto_evt_disconnect", size_of::<EvtDisconnect>() as i64),
        ("mosquitto_evt_disconnect.client", offset_of!(EvtDisconnect, client) as i64),
        ("mosquitto_evt_disconnect.reason", offset_of!(EvtDisconnect, reason) as i64),
        ("MOSQ_PLUGIN_VERSION", PLUGIN_VERSION as i64),
        ("MOSQ_EVT_RELOAD", event::RELOAD as i64),
        ("MOSQ_EVT_ACL_CHECK", event::ACL_CHECK as i64),
        ("MOSQ_EVT_BASIC_AUTH", event::BASIC_AUTH as i64),
        ("MOSQ_EVT_MESSAGE", event::MESSAGE as i64),
        ("MOSQ_EVT_TICK", event::TICK as i64),
        ("MOSQ_EVT_DISCONNECT", event::DISCONNECT as i64),
        ("MOSQ_ACL_READ", access::READ as i64),
        ("MOSQ_ACL_WRITE", access::WRITE as i64),
        ("MOSQ_ACL_SUBSCRIBE", access::SUBSCRIBE as i64),
        ("MOSQ_ACL_UNSUBSCRIBE", access::UNSUBSCRIBE as i64),
        ("MOSQ_ERR_SUCCESS", err::SUCCESS as i64),
        ("MOSQ_ERR_PROTOCOL", err::PROTOCOL as i64),
        ("MOSQ_ERR_AUTH", err::AUTH as i64),
        ("MOSQ_ERR_ACL_DENIED", err::ACL_DENIED as i64),
        ("MOSQ_ERR_UNKNOWN", err::UNKNOWN as i64),
        ("MOSQ_ERR_PLUGIN_DEFER", err::PLUGIN_DEFER as i64),
        ("MOSQ_ERR_QOS_NOT_SUPPORTED", err::QOS_NOT_SUPPORTED as i64),
        ("MOSQ_ERR_RETAIN_NOT_SUPPORTED", err::RETAIN_NOT_SUPPORTED as i64),
    ];
    let c = c_layout();
    assert_eq!(c.len(), rust.len(), "the C program and this table list the same items");
    for ((ck, cv), (rk, rv)) in c.iter().zip(&rust) {
        assert_eq!(ck, rk);
        assert_eq!(cv, rv, "{ck}: C says {cv}, Rust says {rv}");
    }
}
