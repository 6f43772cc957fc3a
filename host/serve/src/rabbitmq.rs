//! RabbitMQ's `rabbitmq_auth_backend_http` (3.10), for MQTT clients of `rabbitmq_mqtt`.
//!
//! RabbitMQ sends a GET with query parameters, or (`auth_http.http_method = post`) a POST with
//! a form-encoded body, to four paths, and reads a 200 answer whose body is `allow` or `deny`
//! (any other status is an error, which RabbitMQ treats as a refusal). The parameters, as
//! `rabbit_auth_backend_http`, `rabbit_direct`, `rabbit_channel` and `rabbit_mqtt_processor`
//! of v3.10.8 send them for an MQTT connection:
//!
//! | path | parameters |
//! |---|---|
//! | `user_path` (login) | `username`, `password`, `vhost`, `client_id` |
//! | `vhost_path` | `username`, `vhost`, `ip`, `tags`, `client_id` |
//! | `resource_path` | `username`, `vhost`, `resource` (`queue`, `exchange`), `name`, `permission` (`configure`, `write`, `read`), `tags`, `client_id` |
//! | `topic_path` | `username`, `vhost`, `resource` (`topic`), `name` (the exchange), `permission` (`write` per publish, `read` at subscribe), `tags`, `routing_key`, `variable_map.client_id`, `variable_map.username`, `variable_map.vhost` |
//!
//! The routing key is the MQTT topic or filter with `/` replaced by `.` and `+` by `*`
//! (`rabbit_mqtt_util:to_amqp`); [`to_mqtt`] turns it back as `rabbit_mqtt_util:to_mqtt`
//! does, so the policy sees what RabbitMQ routes. RabbitMQ sends neither the payload size,
//! the retained flag, the QoS nor the peer address at login, and never announces a
//! disconnect: publishes and subscriptions are checked at QoS 1 (the most RabbitMQ 3.10
//! delivers), not retained, with an empty payload, and sessions end when idle.
//!
//! A session is keyed by (virtual host, client id). A check for a session the service does not
//! hold (it restarted, or the client's node asked another service) is re-established with
//! `resumed = true` and only what the request carries ([`mqtt_policy_gateway::Worker::restore`]);
//! the policy decides what such a session may do (hub-rules: neither publish nor subscribe, so
//! RabbitMQ closes the connection and the client's reconnect proves itself again).

use std::collections::HashMap;

use mqtt_policy_gateway::{Access, Check, CheckOutcome, ConnectOutcome, Hello, Restored};
use mqtt_policy_host::Protocol;
use mqtt_policy_host::events::{Action, Event, Severity};

use crate::pool::{Client, Shard};

/// The four request paths of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `user_path`: a login.
    User,
    /// `vhost_path`: access to the virtual host, right after the login.
    Vhost,
    /// `resource_path`: a queue or exchange operation.
    Resource,
    /// `topic_path`: a publish (`write`) or a subscription (`read`).
    Topic,
}

impl Path {
    /// The path of the URL `/rabbitmq/SEGMENT`.
    pub fn from_segment(segment: &str) -> Option<Path> {
        match segment {
            "user" => Some(Path::User),
            "vhost" => Some(Path::Vhost),
            "resource" => Some(Path::Resource),
            "topic" => Some(Path::Topic),
            _ => None,
        }
    }
}

/// Which permission a resource or topic request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `configure`: declare or delete.
    Configure,
    /// `write`: publish to, bind to.
    Write,
    /// `read`: consume from, bind from.
    Read,
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A login.
    User {
        /// User name (without the `vhost:` prefix RabbitMQ may have taken off).
        username: String,
        /// Password, if sent.
        password: Option<String>,
        /// Virtual host.
        vhost: String,
        /// MQTT client id (`None` for non-MQTT connections).
        client_id: Option<String>,
    },
    /// Access to a virtual host.
    Vhost {
        /// User name.
        username: String,
        /// Virtual host.
        vhost: String,
        /// MQTT client id.
        client_id: Option<String>,
    },
    /// A queue or exchange operation.
    Resource {
        /// User name.
        username: String,
        /// Virtual host.
        vhost: String,
        /// `queue` or `exchange`.
        resource: String,
        /// Its name.
        name: String,
        /// The permission asked for.
        permission: Permission,
        /// MQTT client id.
        client_id: Option<String>,
    },
    /// A publish or subscription.
    Topic {
        /// User name.
        username: String,
        /// Virtual host.
        vhost: String,
        /// The exchange.
        exchange: String,
        /// `Write` for a publish, `Read` for a subscription.
        permission: Permission,
        /// The routing key (topic or binding key).
        routing_key: String,
        /// MQTT client id (`variable_map.client_id`).
        client_id: Option<String>,
    },
}

pub use crate::Garbage;

/// Parses the parameters of a request to `path`: the query string and the form-encoded body
/// together. A parameter given twice, a missing required one, or an unknown permission is
/// [`Garbage`].
pub fn parse(path: Path, query: Option<&str>, body: &[u8]) -> Result<Request, Garbage> {
    let mut params: HashMap<String, String> = HashMap::new();
    for source in [query.unwrap_or("").as_bytes(), body] {
        for (k, v) in form_urlencoded::parse(source) {
            if params.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(Garbage(format!("parameter {k} given twice")));
            }
        }
    }
    let mut take = |name: &str| params.remove(name);
    let need = |v: Option<String>, name: &str| v.ok_or_else(|| Garbage(format!("parameter {name} is missing")));
    let permission = |v: String| match v.as_str() {
        "configure" => Ok(Permission::Configure),
        "write" => Ok(Permission::Write),
        "read" => Ok(Permission::Read),
        other => Err(Garbage(format!("permission {other} is none of configure, write, read"))),
    };
    let username = need(take("username"), "username")?;
    Ok(match path {
        Path::User => Request::User {
            username,
            password: take("password"),
            vhost: need(take("vhost"), "vhost")?,
            client_id: take("client_id"),
        },
        Path::Vhost => Request::Vhost { username, vhost: need(take("vhost"), "vhost")?, client_id: take("client_id") },
        Path::Resource => Request::Resource {
            username,
            vhost: need(take("vhost"), "vhost")?,
            resource: need(take("resource"), "resource")?,
            name: need(take("name"), "name")?,
            permission: permission(need(take("permission"), "permission")?)?,
            client_id: take("client_id"),
        },
        Path::Topic => {
            let resource = need(take("resource"), "resource")?;
            if resource != "topic" {
                return Err(Garbage(format!("topic_path resource {resource} is not topic")));
            }
            let permission = permission(need(take("permission"), "permission")?)?;
            if permission == Permission::Configure {
                return Err(Garbage("topic_path permission configure".into()));
            }
            Request::Topic {
                username,
                vhost: need(take("vhost"), "vhost")?,
                exchange: need(take("name"), "name")?,
                permission,
                routing_key: need(take("routing_key"), "routing_key")?,
                client_id: take("variable_map.client_id"),
            }
        }
    })
}

/// The MQTT topic (or filter, for `read`) of a routing key, as `rabbit_mqtt_util:to_mqtt`
/// gives it: `*` becomes `+`, `.` becomes `/`. `None` for a publish whose routing key has a
/// wildcard: a topic name cannot, so it is denied.
pub fn to_mqtt(routing_key: &str, permission: Permission) -> Option<String> {
    if permission == Permission::Write && routing_key.contains(['*', '#']) {
        return None;
    }
    Some(routing_key.replace('*', "+").replace('.', "/"))
}

/// How the RabbitMQ dialect is configured.
#[derive(Debug, Clone)]
pub struct Dialect {
    /// Whether the tenant is the virtual host's name; otherwise the gateway's configured
    /// tenant source decides.
    pub tenant_from_vhost: bool,
    /// The exchange MQTT publishes to (`mqtt.exchange`, default `amq.topic`).
    pub exchange: String,
}

impl Default for Dialect {
    fn default() -> Dialect {
        Dialect { tenant_from_vhost: true, exchange: "amq.topic".into() }
    }
}

/// The answer to one request, with what metrics need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `allow` or `deny`.
    pub allow: bool,
    /// The metrics kind: `connect`, `vhost`, `resource`, `publish` or `subscribe`.
    pub kind: &'static str,
    /// The tenant label: the virtual host with `tenant_from_vhost`, else `*`.
    pub tenant: String,
}

impl Request {
    /// The client id that routes the request to its worker (empty when there is none).
    pub fn client_id(&self) -> &str {
        let id = match self {
            Request::User { client_id, .. }
            | Request::Vhost { client_id, .. }
            | Request::Resource { client_id, .. }
            | Request::Topic { client_id, .. } => client_id,
        };
        id.as_deref().unwrap_or("")
    }

    /// The metrics kind of the request.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::User { .. } => "connect",
            Request::Vhost { .. } => "vhost",
            Request::Resource { .. } => "resource",
            Request::Topic { permission: Permission::Write, .. } => "publish",
            Request::Topic { .. } => "subscribe",
        }
    }
}

/// Decides `request` on the worker that holds its client's session.
pub(crate) fn decide(shard: &mut Shard, dialect: &Dialect, request: &Request) -> Answer {
    let kind = request.kind();
    let (username, vhost, client_id) = match request {
        Request::User { username, vhost, client_id, .. }
        | Request::Vhost { username, vhost, client_id }
        | Request::Resource { username, vhost, client_id, .. }
        | Request::Topic { username, vhost, client_id, .. } => (username, vhost, client_id),
    };
    let tenant_label = if dialect.tenant_from_vhost { vhost.clone() } else { "*".to_owned() };
    let answer = |allow: bool| Answer { allow, kind, tenant: tenant_label.clone() };
    let tenant = dialect.tenant_from_vhost.then_some(vhost.as_str());
    let Some(client_id) = client_id.as_deref() else {
        // Only MQTT connections carry a client id; nothing else is this service's to allow.
        let e = Event::new(
            tenant.unwrap_or("*"),
            action_of(request),
            Severity::Warn,
            "deny",
            format!("{kind} request for user {username} without a client id: not an MQTT connection"),
        );
        shard.worker.gateway().tenant(tenant.unwrap_or("*")).events().emit(e);
        return answer(false);
    };
    let client: Client = (vhost.clone(), client_id.to_owned());
    if let Request::User { password, .. } = request {
        if shard.same_login(&client, username, password.as_deref()) {
            return answer(true);
        }
        let hello = Hello {
            username: Some(username),
            password: password.as_deref().map(str::as_bytes),
            // RabbitMQ 3.10 speaks MQTT 3.1.1 and sends neither clean session, keep-alive nor
            // the peer address at login.
            protocol: Protocol::Mqtt311,
            peer: "unknown",
            tenant,
            ..Hello::new(client_id)
        };
        let key = shard.fresh(&client);
        let outcome = shard.worker.connect(key.clone(), &hello);
        let accepted = matches!(outcome, ConnectOutcome::Accept { .. });
        if accepted {
            shard.adopt(client, key, Some((username, password.as_deref())));
        }
        // A defer lets RabbitMQ try its next authentication backend.
        return answer(accepted);
    }
    let restored = Restored { client_id, username: Some(username), protocol: Protocol::Mqtt311, tenant };
    let key = shard.session_or_restore(&client, &restored);
    match request {
        Request::User { .. } => unreachable!("answered above"),
        Request::Vhost { .. } => answer(shard.worker.admitted(&key)),
        Request::Resource { resource, name, permission, .. } => {
            let own = match resource.as_str() {
                // The two subscription queues of the client (`rabbit_mqtt_util:subcription_queue_name`).
                "queue" => name
                    .strip_prefix("mqtt-subscription-")
                    .and_then(|n| n.strip_prefix(client_id))
                    .is_some_and(|q| q == "qos0" || q == "qos1"),
                "exchange" => name == &dialect.exchange && *permission != Permission::Configure,
                _ => false,
            };
            let admitted = shard.worker.admitted(&key);
            if !(admitted && own) {
                let why = if admitted { "not one of this client's own" } else { "no session the policy admitted" };
                let mut e = Event::new(
                    tenant.unwrap_or("*"),
                    Action::Subscribe,
                    Severity::Warn,
                    "deny",
                    format!("{permission:?} access to {resource} {name} refused: {why}"),
                );
                e.client_id = Some(client_id.to_owned());
                shard.worker.gateway().tenant(tenant.unwrap_or("*")).events().emit(e);
            }
            answer(admitted && own)
        }
        Request::Topic { exchange, permission, routing_key, .. } => {
            let access = if *permission == Permission::Write { Access::Publish } else { Access::Subscribe };
            let topic = to_mqtt(routing_key, *permission).filter(|_| exchange == &dialect.exchange);
            let Some(topic) = topic else {
                let mut e = Event::new(
                    tenant.unwrap_or("*"),
                    action_of(request),
                    Severity::Warn,
                    "deny",
                    format!("routing key {routing_key} on exchange {exchange} is no MQTT topic of this service"),
                );
                e.client_id = Some(client_id.to_owned());
                shard.worker.gateway().tenant(tenant.unwrap_or("*")).events().emit(e);
                return answer(false);
            };
            let check = Check { access, topic: topic.as_bytes(), qos: 1, retain: false, payload_size: 0, client: None };
            let outcome = shard.worker.check(&key, &check);
            answer(matches!(outcome, CheckOutcome::Allow | CheckOutcome::AllowRetainCleared))
        }
    }
}

fn action_of(request: &Request) -> Action {
    match request {
        Request::Topic { permission: Permission::Write, .. } => Action::Publish,
        Request::Topic { .. } | Request::Resource { .. } => Action::Subscribe,
        _ => Action::Connect,
    }
}
