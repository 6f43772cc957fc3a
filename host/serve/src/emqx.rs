//! EMQX 5 HTTP authentication and HTTP authorization (read at EMQX v5.8.9, the last Apache-2.0
//! line: `apps/emqx_auth_http/src/emqx_authn_http.erl`, `emqx_authz_http.erl`,
//! `apps/emqx_auth/include/emqx_authn.hrl`, `apps/emqx/include/emqx_placeholder.hrl`; the
//! documentation pages `access-control/authn/http` and `access-control/authz/http` of
//! docs.emqx.com, v5.8).
//!
//! EMQX renders the operator's request template (a JSON body for `method = post`, query
//! parameters for `get`) from placeholders and reads a JSON answer. The placeholders:
//!
//! | request | placeholders this service reads (the field name is the placeholder's name) |
//! |---|---|
//! | authentication, `/emqx/authn` | `clientid` (required), `username`, `password`, `peerhost` |
//! | authorization, `/emqx/authz` | `clientid`, `action` (`publish`, `subscribe`), `topic` (required), `username`, `qos`, `retain` (EMQX 5.x with rich actions; absent: 0 and not retained) |
//!
//! A placeholder EMQX has no value for is rendered as an empty string, so an empty `username`
//! or `password` is taken as absent. Answers (HTTP 200, `application/json`):
//!
//! - authentication: `{"result": "allow", "is_superuser": false, "client_attrs": {"tenant":
//!   T, "device_id": D}, "expire_at": S}` (`expire_at`, seconds, when the policy says the
//!   proof expires: a SAS token's `se`, rounded down so EMQX never keeps a client longer),
//!   `{"result": "deny"}`, or `{"result": "ignore"}` when the policy defers (EMQX then asks
//!   its next authenticator). `is_superuser` is never true: a superuser skips authorization,
//!   and every check is this service's.
//! - authorization: `{"result": "allow"}`, `{"result": "deny"}`, `{"result": "ignore"}` (the
//!   gateway defers: fail-open mode).
//!
//! EMQX takes any status but 200 (and 204, which means *allow*) as `ignore`, after which
//! `authorization.no_match` decides (default `allow`). So a request this service cannot read
//! is answered `200 {"result": "deny"}` (by the HTTP side), never with a 4xx, and never 204.
//!
//! EMQX authorization sends no payload size and cannot change a message: a publish the policy
//! would allow only with the retained flag cleared is refused (with an event). It cannot grant
//! a lower QoS either: a subscription the policy would downgrade is refused as the gateway
//! refuses it for Mosquitto. EMQX sends neither clean start, keep-alive nor the protocol
//! version at authentication: the policy sees MQTT 5 with clean start.
//!
//! A session is keyed by the client id (EMQX's client ids are cluster-wide). An authorization
//! for a session the service does not hold is re-established from `clientid` and `username`
//! with `resumed = true`; sessions end when idle (EMQX's HTTP
//! authentication and authorization announce no disconnect).

use serde_json::{Map, Value, json};

use mqtt_policy_gateway::{Access, Check, CheckOutcome, ConnectOutcome, Hello, Restored};
use mqtt_policy_host::Protocol;
use mqtt_policy_host::events::{Action, Event, Severity};

use crate::pool::{Client, Shard};
use crate::{Garbage, Reply};

/// The two request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `/emqx/authn`: authentication at connect.
    Authn,
    /// `/emqx/authz`: authorization of a publish or subscription.
    Authz,
}

impl Path {
    /// The path of the URL `/emqx/SEGMENT`.
    pub fn from_segment(segment: &str) -> Option<Path> {
        match segment {
            "authn" => Some(Path::Authn),
            "authz" => Some(Path::Authz),
            _ => None,
        }
    }
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A connect.
    Authn {
        /// `${clientid}`.
        client_id: String,
        /// `${username}`, if not empty.
        username: Option<String>,
        /// `${password}`, if not empty.
        password: Option<String>,
        /// `${peerhost}`, if sent.
        peer: Option<String>,
    },
    /// A publish or subscription.
    Authz {
        /// `${clientid}`.
        client_id: String,
        /// `${username}`, if not empty.
        username: Option<String>,
        /// `${action}`: [`Access::Publish`] or [`Access::Subscribe`].
        access: Access,
        /// `${topic}`: the topic or filter.
        topic: String,
        /// `${qos}` (0 if not sent).
        qos: u8,
        /// `${retain}` (false if not sent).
        retain: bool,
    },
}

impl Request {
    /// The client id that routes the request to its worker.
    pub fn client_id(&self) -> &str {
        match self {
            Request::Authn { client_id, .. } | Request::Authz { client_id, .. } => client_id,
        }
    }
}

/// The fields of a request: the JSON object body and the query parameters together, each
/// value a string (numbers and booleans as EMQX renders them unquoted in a template). A
/// field given twice, a nested value or a body that is not a JSON object is [`Garbage`].
fn fields(query: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, Garbage> {
    let mut map = if body.iter().all(u8::is_ascii_whitespace) { Map::new() } else { crate::json_object(body)? };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if map.insert(k.clone().into_owned(), Value::String(v.into_owned())).is_some() {
            return Err(Garbage(format!("field {k} given twice")));
        }
    }
    Ok(map)
}

/// Parses a request to `path` from its query string and body.
pub fn parse(path: Path, query: Option<&str>, body: &[u8]) -> Result<Request, Garbage> {
    let map = fields(query, body)?;
    let text = |name: &str| -> Result<Option<String>, Garbage> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(Garbage(format!("field {name} is not a string"))),
        }
    };
    let non_empty = |name: &str| text(name).map(|v| v.filter(|s| !s.is_empty()));
    let client_id = non_empty("clientid")?.ok_or_else(|| Garbage("field clientid is missing or empty".into()))?;
    let username = non_empty("username")?;
    Ok(match path {
        Path::Authn => {
            Request::Authn { client_id, username, password: non_empty("password")?, peer: non_empty("peerhost")? }
        }
        Path::Authz => {
            let access = match non_empty("action")?.as_deref() {
                Some("publish") => Access::Publish,
                Some("subscribe") => Access::Subscribe,
                Some(other) => return Err(Garbage(format!("action {other} is neither publish nor subscribe"))),
                None => return Err(Garbage("field action is missing".into())),
            };
            let topic = non_empty("topic")?.ok_or_else(|| Garbage("field topic is missing or empty".into()))?;
            let qos = match non_empty("qos")?.as_deref() {
                None => 0,
                Some(q @ ("0" | "1" | "2")) => q.as_bytes()[0] - b'0',
                Some(other) => return Err(Garbage(format!("qos {other} is none of 0, 1, 2"))),
            };
            let retain = match non_empty("retain")?.as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => return Err(Garbage(format!("retain {other} is neither true nor false"))),
            };
            Request::Authz { client_id, username, access, topic, qos, retain }
        }
    })
}

fn result(r: &str) -> Value {
    json!({ "result": r })
}

/// Seconds since the Unix epoch, now.
fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Decides `request` on the worker that holds its client's session.
pub(crate) fn decide(shard: &mut Shard, request: &Request) -> Reply {
    // EMQX's client ids are cluster-wide: one scope.
    let client: Client = (String::new(), request.client_id().to_owned());
    match request {
        Request::Authn { client_id, username, password, peer } => {
            let hello = Hello {
                username: username.as_deref(),
                password: password.as_deref().map(str::as_bytes),
                peer: peer.as_deref().unwrap_or("unknown"),
                ..Hello::new(client_id)
            };
            let (outcome, key) = shard.login(client, &hello);
            let deny = |tenant: String| Reply { allow: false, kind: "connect", tenant, body: result("deny") };
            match outcome {
                ConnectOutcome::Accept { .. } => {
                    let Some(who) = shard.worker.admitted_as(&key) else { return deny("*".into()) };
                    let tenant = who.tenant.to_owned();
                    let mut attrs = Map::new();
                    attrs.insert("tenant".into(), Value::String(tenant.clone()));
                    if !who.device_id.is_empty() {
                        attrs.insert("device_id".into(), Value::String(who.device_id.to_owned()));
                    }
                    let mut body = json!({ "result": "allow", "is_superuser": false, "client_attrs": attrs });
                    if let Some(ms) = who.expires_at_ms {
                        let at = ms / 1000;
                        if at <= now_s() {
                            // EMQX refuses an `expire_at` in the past; the proof is as good as expired.
                            let mut e = Event::new(
                                &tenant,
                                Action::Connect,
                                Severity::Warn,
                                "deny",
                                "the proof expires within the second: refused, EMQX takes no expiry in the past",
                            );
                            e.client_id = Some(client_id.clone());
                            shard.worker.gateway().tenant(&tenant).events().emit(e);
                            shard.end(&(String::new(), client_id.clone()));
                            return deny(tenant);
                        }
                        body["expire_at"] = json!(at);
                    }
                    Reply { allow: true, kind: "connect", tenant, body }
                }
                ConnectOutcome::Reject(_) => deny("*".into()),
                // The policy is not deciding: EMQX's next authenticator does.
                ConnectOutcome::Defer => {
                    Reply { allow: false, kind: "connect", tenant: "*".into(), body: result("ignore") }
                }
            }
        }
        Request::Authz { client_id, username, access, topic, qos, retain } => {
            let kind = if *access == Access::Publish { "publish" } else { "subscribe" };
            let restored =
                Restored { client_id, username: username.as_deref(), protocol: Protocol::Mqtt5, tenant: None };
            let key = shard.session_or_restore(&client, &restored);
            let tenant = shard.worker.admitted_as(&key).map_or("*", |w| w.tenant).to_owned();
            let check = Check {
                access: *access,
                topic: topic.as_bytes(),
                qos: *qos,
                retain: *retain,
                payload_size: 0,
                client: None,
            };
            let reply = |allow: bool, r: &str| Reply { allow, kind, tenant: tenant.clone(), body: result(r) };
            match shard.worker.check(&key, &check) {
                CheckOutcome::Allow => reply(true, "allow"),
                CheckOutcome::AllowRetainCleared => {
                    let mut e = Event::new(
                        &tenant,
                        Action::Publish,
                        Severity::Warn,
                        "deny",
                        format!(
                            "retained publish to {topic} refused: the policy allows it only with the retained flag \
                             cleared, which EMQX's authorization cannot do"
                        ),
                    );
                    e.client_id = Some(client_id.clone());
                    e.topic = Some(topic.clone());
                    shard.worker.gateway().tenant(&tenant).events().emit(e);
                    reply(false, "deny")
                }
                // The gateway or the policy emitted the event.
                CheckOutcome::Deny(_) => reply(false, "deny"),
                // Fail-open mode: EMQX's next source (or `no_match`) decides.
                CheckOutcome::Defer => reply(false, "ignore"),
            }
        }
    }
}
