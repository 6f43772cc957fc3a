//! VerneMQ's webhooks (`vmq_webhooks`; read at VerneMQ 2.1.2: `apps/vmq_webhooks/src/
//! vmq_webhooks_plugin.erl`, `apps/vmq_server/src/vmq_mqtt_fsm.erl`, `vmq_mqtt5_fsm.erl`; the
//! documentation page `plugin-development/webhookplugins.md` of vernemq/vmq-docs).
//!
//! VerneMQ POSTs a JSON object to the endpoint registered for each hook, with the header
//! `vernemq-hook: NAME`; this service takes the hook from that header or from the path
//! `/vernemq/NAME` (both, if given, must agree). The hooks it answers:
//!
//! | hook | fields read | answer |
//! |---|---|---|
//! | `auth_on_register`, `auth_on_register_m5` | `client_id`, `mountpoint`, `username`, `password` (`null` when absent), `peer_addr`, `clean_session` / `clean_start` | `{"result": "ok"}`, `{"result": {"error": REASON}}` (CONNACK 5 on MQTT 3.1.1, 0x86 on MQTT 5: VerneMQ maps any webhook error so), `{"result": "next"}` when the policy defers |
//! | `auth_on_publish`, `auth_on_publish_m5` | `client_id`, `mountpoint`, `username`, `topic`, `qos`, `retain`, `payload` (base64, VerneMQ's default; its decoded size is the policy's `payload-size`) | `{"result": "ok"}`, with `"modifiers": {"qos": Q, "retain": false}` when the policy lowers the QoS or clears the retained flag; `{"result": {"error": REASON}}` (the message is dropped; PUBACK 0x87 on MQTT 5) |
//! | `auth_on_subscribe`, `auth_on_subscribe_m5` | `client_id`, `mountpoint`, `username`, `topics: [{topic, qos}]` | `{"result": "ok", "topics": [...]}` (MQTT 3.1.1; `"modifiers": {"topics": [...]}` for `_m5`): every filter in order, with the QoS granted (a policy's downgrade) or, refused, 128 (MQTT 3.1.1 SUBACK failure; MQTT 5: 135 for *not authorized*, else 128), which VerneMQ sends as that filter's SUBACK code |
//! | `on_client_offline`, `on_client_gone`, `on_session_expired` | `client_id`, `mountpoint` | `{}`: the session ends (unless it began within [`Dialect::takeover_grace`]) |
//!
//! Any other hook is a 404. Anything the service cannot read is a 4xx with
//! `{"result": {"error": ...}}`: VerneMQ takes any status but 200 as the hook's error, which
//! refuses the login, the publish or the subscription.
//!
//! A session is keyed by (mountpoint, client id), VerneMQ's subscriber id. With
//! [`Dialect::tenant_from_mountpoint`] a non-empty mountpoint names the tenant (VerneMQ's
//! per-listener multi-tenancy); otherwise the gateway's tenant source decides. A publish or
//! subscription of a session the service does not hold is re-established from `client_id` and
//! `username` with `resumed = true`.

use serde_json::{Map, Value, json};

use mqtt_policy_gateway::{Access, Adjusted, Check, CheckOutcome, ConnectOutcome, Hello, Restored};
use mqtt_policy_host::events::{Action, Event, Severity};
use mqtt_policy_host::{Denial, Protocol, ReasonCode};

use crate::pool::{Client, Key, Shard};
use crate::{Garbage, Reply};

/// A disconnect hook for a session that became the client's current one less than this long
/// ago leaves it: it is most likely the previous connection's, reported after a takeover
/// (the new connection's `auth_on_register` comes first). The session then ends when idle.
pub const TAKEOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How the VerneMQ dialect is configured.
#[derive(Debug, Clone)]
pub struct Dialect {
    /// Whether a non-empty mountpoint is the tenant's name.
    pub tenant_from_mountpoint: bool,
    /// Whether `payload` is sent as is rather than base64 (`vmq_webhooks.NAME.base64payload =
    /// off`); the default, false, is VerneMQ's.
    pub raw_payload: bool,
    /// How new a session a disconnect hook leaves alone (default [`TAKEOVER_GRACE`]).
    pub takeover_grace: std::time::Duration,
}

impl Default for Dialect {
    fn default() -> Dialect {
        Dialect { tenant_from_mountpoint: false, raw_payload: false, takeover_grace: TAKEOVER_GRACE }
    }
}

/// The hooks this service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `auth_on_register` (`m5`: `auth_on_register_m5`).
    Register {
        /// The MQTT 5 variant.
        m5: bool,
    },
    /// `auth_on_publish[_m5]`.
    Publish {
        /// The MQTT 5 variant.
        m5: bool,
    },
    /// `auth_on_subscribe[_m5]`.
    Subscribe {
        /// The MQTT 5 variant.
        m5: bool,
    },
    /// `on_client_offline`, `on_client_gone`, `on_session_expired`.
    Gone,
}

impl Hook {
    /// The hook named `name`.
    pub fn from_name(name: &str) -> Option<Hook> {
        Some(match name {
            "auth_on_register" => Hook::Register { m5: false },
            "auth_on_register_m5" => Hook::Register { m5: true },
            "auth_on_publish" => Hook::Publish { m5: false },
            "auth_on_publish_m5" => Hook::Publish { m5: true },
            "auth_on_subscribe" => Hook::Subscribe { m5: false },
            "auth_on_subscribe_m5" => Hook::Subscribe { m5: true },
            "on_client_offline" | "on_client_gone" | "on_session_expired" => Hook::Gone,
            _ => return None,
        })
    }
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A connect.
    Register {
        /// MQTT 5 (`auth_on_register_m5`).
        m5: bool,
        /// The client's mountpoint.
        mountpoint: String,
        /// Client id.
        client_id: String,
        /// User name, if sent.
        username: Option<String>,
        /// Password, if sent.
        password: Option<String>,
        /// Peer address.
        peer: Option<String>,
        /// Clean session (3.1.1) / clean start (5).
        clean_start: bool,
    },
    /// A publish.
    Publish {
        /// MQTT 5.
        m5: bool,
        /// Mountpoint.
        mountpoint: String,
        /// Client id.
        client_id: String,
        /// User name, if any.
        username: Option<String>,
        /// Topic.
        topic: String,
        /// QoS.
        qos: u8,
        /// Retained flag.
        retain: bool,
        /// Payload size in bytes (0 when VerneMQ sends no payload: `no_payload = on`).
        payload_size: u32,
    },
    /// A subscription of one or more filters.
    Subscribe {
        /// MQTT 5.
        m5: bool,
        /// Mountpoint.
        mountpoint: String,
        /// Client id.
        client_id: String,
        /// User name, if any.
        username: Option<String>,
        /// (filter, QoS asked for), in the order of the SUBSCRIBE.
        topics: Vec<(String, u8)>,
    },
    /// The client's session is over (or its client offline).
    Gone {
        /// Mountpoint.
        mountpoint: String,
        /// Client id.
        client_id: String,
    },
}

impl Request {
    /// The client id that routes the request to its worker.
    pub fn client_id(&self) -> &str {
        match self {
            Request::Register { client_id, .. }
            | Request::Publish { client_id, .. }
            | Request::Subscribe { client_id, .. }
            | Request::Gone { client_id, .. } => client_id,
        }
    }
}

/// The decoded size of a base64 payload (standard alphabet, padded, as Erlang's `base64`
/// encodes), without decoding it.
fn base64_size(text: &str) -> Result<u32, Garbage> {
    let bytes = text.as_bytes();
    let bad = || Garbage("payload is not base64".into());
    if !bytes.len().is_multiple_of(4) {
        return Err(bad());
    }
    let pad = bytes.iter().rev().take_while(|b| **b == b'=').count();
    if pad > 2 || !bytes[..bytes.len() - pad].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/') {
        return Err(bad());
    }
    u32::try_from(bytes.len() / 4 * 3 - pad).map_err(|_| bad())
}

/// Parses a request for `hook` from its JSON body.
pub fn parse(hook: Hook, dialect: &Dialect, body: &[u8]) -> Result<Request, Garbage> {
    let map = crate::json_object(body)?;
    let field = |name: &str| map.get(name).filter(|v| !v.is_null());
    let string = |name: &str| -> Result<Option<String>, Garbage> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Garbage(format!("field {name} is not a string"))),
        }
    };
    let need = |name: &str| string(name)?.ok_or_else(|| Garbage(format!("field {name} is missing")));
    let flag = |name: &str| match field(name) {
        Some(Value::Bool(b)) => Ok(*b),
        _ => Err(Garbage(format!("field {name} is missing or not a boolean"))),
    };
    let qos = |v: Option<&Value>, what: &str| match v.and_then(Value::as_u64) {
        Some(q @ 0..=2) => Ok(q as u8),
        _ => Err(Garbage(format!("{what} qos is missing or none of 0, 1, 2"))),
    };
    let client_id = need("client_id")?;
    let mountpoint = string("mountpoint")?.unwrap_or_default();
    Ok(match hook {
        Hook::Register { m5 } => Request::Register {
            m5,
            mountpoint,
            client_id,
            username: string("username")?,
            password: string("password")?,
            peer: string("peer_addr")?,
            clean_start: flag(if m5 { "clean_start" } else { "clean_session" })?,
        },
        Hook::Publish { m5 } => {
            let payload_size = match string("payload")? {
                None => 0,
                Some(p) if dialect.raw_payload => u32::try_from(p.len()).unwrap_or(u32::MAX),
                Some(p) => base64_size(&p)?,
            };
            Request::Publish {
                m5,
                mountpoint,
                client_id,
                username: string("username")?,
                topic: need("topic")?,
                qos: qos(field("qos"), "publish")?,
                retain: flag("retain")?,
                payload_size,
            }
        }
        Hook::Subscribe { m5 } => {
            let Some(Value::Array(list)) = field("topics") else {
                return Err(Garbage("field topics is missing or not a list".into()));
            };
            let mut topics = Vec::with_capacity(list.len());
            for t in list {
                let filter =
                    t.get("topic").and_then(Value::as_str).ok_or_else(|| Garbage("a topic has no filter".into()))?;
                topics.push((filter.to_owned(), qos(t.get("qos"), "subscription")?));
            }
            if topics.is_empty() {
                return Err(Garbage("a subscription of no topics".into()));
            }
            Request::Subscribe { m5, mountpoint, client_id, username: string("username")?, topics }
        }
        Hook::Gone => Request::Gone { mountpoint, client_id },
    })
}

fn ok() -> Value {
    json!({ "result": "ok" })
}

/// The webhook error answer (the reason's name: VerneMQ logs it).
pub(crate) fn error(reason: &str) -> Value {
    json!({ "result": { "error": reason } })
}

fn denied(d: &Denial) -> Value {
    error(&d.reason.name().replace(' ', "_"))
}

/// The SUBACK code VerneMQ is given for a refused filter.
fn refused_code(m5: bool, d: &Denial) -> u8 {
    if m5 && d.reason == ReasonCode::NotAuthorized { 0x87 } else { 0x80 }
}

/// Decides `request` on the worker that holds its client's session.
pub(crate) fn decide(shard: &mut Shard, dialect: &Dialect, request: &Request) -> Reply {
    let (mountpoint, client_id) = match request {
        Request::Register { mountpoint, client_id, .. }
        | Request::Publish { mountpoint, client_id, .. }
        | Request::Subscribe { mountpoint, client_id, .. }
        | Request::Gone { mountpoint, client_id } => (mountpoint, client_id),
    };
    let client: Client = (mountpoint.clone(), client_id.clone());
    let tenant = (dialect.tenant_from_mountpoint && !mountpoint.is_empty()).then_some(mountpoint.as_str());
    let protocol = |m5: bool| if m5 { Protocol::Mqtt5 } else { Protocol::Mqtt311 };
    let label = |shard: &Shard, key: &Key| shard.worker.admitted_as(key).map_or("*", |w| w.tenant).to_owned();
    match request {
        Request::Register { m5, username, password, peer, clean_start, .. } => {
            let hello = Hello {
                username: username.as_deref(),
                password: password.as_deref().map(str::as_bytes),
                clean_start: *clean_start,
                protocol: protocol(*m5),
                peer: peer.as_deref().unwrap_or("unknown"),
                tenant,
                ..Hello::new(client_id)
            };
            let (outcome, key) = shard.login(client, &hello);
            let tenant = label(shard, &key);
            match outcome {
                ConnectOutcome::Accept { .. } => Reply { allow: true, kind: "connect", tenant, body: ok() },
                ConnectOutcome::Reject(d) => Reply { allow: false, kind: "connect", tenant, body: denied(&d) },
                // VerneMQ asks its next plugin.
                ConnectOutcome::Defer => {
                    Reply { allow: false, kind: "connect", tenant, body: json!({ "result": "next" }) }
                }
            }
        }
        Request::Publish { m5, username, topic, qos, retain, payload_size, .. } => {
            let restored = Restored { client_id, username: username.as_deref(), protocol: protocol(*m5), tenant };
            let key = shard.session_or_restore(&client, &restored);
            let check = Check {
                access: Access::Publish,
                topic: topic.as_bytes(),
                qos: *qos,
                retain: *retain,
                payload_size: *payload_size,
                client: None,
            };
            let outcome = shard.worker.check_lowering(&key, &check);
            let tenant = label(shard, &key);
            let reply = |allow, body| Reply { allow, kind: "publish", tenant: tenant.clone(), body };
            match outcome {
                Adjusted::As(CheckOutcome::Allow) => reply(true, ok()),
                Adjusted::As(CheckOutcome::AllowRetainCleared) => {
                    reply(true, json!({ "result": "ok", "modifiers": { "retain": false } }))
                }
                Adjusted::Lowered { qos: q, retain: r } => {
                    let mut modifiers = Map::new();
                    if q != *qos {
                        modifiers.insert("qos".into(), json!(q));
                    }
                    if r != *retain {
                        modifiers.insert("retain".into(), json!(r));
                    }
                    reply(true, json!({ "result": "ok", "modifiers": modifiers }))
                }
                Adjusted::As(CheckOutcome::Deny(d)) => reply(false, denied(&d)),
                Adjusted::As(CheckOutcome::Defer) => reply(false, json!({ "result": "next" })),
            }
        }
        Request::Subscribe { m5, username, topics, .. } => {
            let restored = Restored { client_id, username: username.as_deref(), protocol: protocol(*m5), tenant };
            let key = shard.session_or_restore(&client, &restored);
            let mut granted = Vec::with_capacity(topics.len());
            let mut any = false;
            for (filter, qos) in topics {
                let check = Check::new(Access::Subscribe, filter, *qos);
                let code = match shard.worker.check_lowering(&key, &check) {
                    Adjusted::As(CheckOutcome::Allow | CheckOutcome::AllowRetainCleared) => *qos,
                    Adjusted::Lowered { qos, .. } => qos,
                    Adjusted::As(CheckOutcome::Deny(d)) => refused_code(*m5, &d),
                    Adjusted::As(CheckOutcome::Defer) => {
                        let tenant = label(shard, &key);
                        return Reply { allow: false, kind: "subscribe", tenant, body: json!({ "result": "next" }) };
                    }
                };
                any |= code < 0x80;
                granted.push(json!({ "topic": filter, "qos": code }));
            }
            let tenant = label(shard, &key);
            // VerneMQ reads the MQTT 5 hook's list from its modifiers, the 3.1.1 hook's from the top.
            let body = if *m5 {
                json!({ "result": "ok", "modifiers": { "topics": granted } })
            } else {
                json!({ "result": "ok", "topics": granted })
            };
            Reply { allow: any, kind: "subscribe", tenant, body }
        }
        Request::Gone { .. } => {
            let ended = shard.end_unless_newer(&client, dialect.takeover_grace);
            if let (false, Some(key)) = (ended, shard.session(&client)) {
                let tenant = label(shard, &key);
                let mut e = Event::new(
                    &tenant,
                    Action::Connect,
                    Severity::Info,
                    "disconnect-ignored",
                    "disconnect hook for a session that began within the takeover grace: kept (it ends when idle)",
                );
                e.client_id = Some(client_id.clone());
                shard.worker.gateway().tenant(&tenant).events().emit(e);
            }
            Reply { allow: true, kind: "disconnect", tenant: "*".into(), body: json!({}) }
        }
    }
}
