//! What a broker's client actually sees for a policy's decision, per broker: the translation
//! behind `mqtt-policy eval --broker` and `test --broker`, and the decisions a broker cannot
//! carry out (a lowered subscription QoS on Mosquitto, a rewrite on RabbitMQ...), flagged.
//!
//! Sources, one per broker: Mosquitto 2.0.11, the plugin's mapping (`broker/mosquitto/src/
//! mapping.rs`, the gateway's refusal of a lowered grant) as tested end to end (README, "What
//! the client sees"); RabbitMQ 3.10, `mqtt-policy serve` as tested (README, "Clusters
//! (RabbitMQ)"); EMQX 5 and VerneMQ, their documented HTTP/webhook contracts as read
//! (`../shared/DESIGN.md` §9: emqx-docs `access-control/authz/http.md`, vmq-docs
//! `webhookplugins.md`), not tested here.

use crate::compile::Broker;
use crate::run::Outcome;
use mqtt_policy_host::{Protocol, ReasonCode};

/// What the client sees, and what of the decision the broker cannot carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// e.g. `SUBACK 0x87`, `PUBACK 0x00`, `CONNACK 5`, `connection closed (no PUBACK)`.
    pub client: String,
    /// Each way the broker's behaviour differs from the decision (empty: it carries it out).
    pub flags: Vec<String>,
}

/// The check a decision answered, as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// `connect`, `publish`, `subscribe` or `deliver`.
    pub action: &'static str,
    /// The client's protocol.
    pub protocol: Protocol,
    /// The QoS of the publish, subscription or delivery.
    pub qos: u8,
    /// The retain flag of the publish.
    pub retain: bool,
}

impl Broker {
    /// The broker's name as `--broker` and cases files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Mosquitto => "mosquitto",
            Broker::Rabbitmq => "rabbitmq",
            Broker::Emqx => "emqx",
            Broker::Vernemq => "vernemq",
        }
    }

    /// The broker named `name`; `Ok(None)` for `none`.
    pub fn parse(name: &str) -> Result<Option<Broker>, String> {
        match name {
            "none" => Ok(None),
            "mosquitto" => Ok(Some(Broker::Mosquitto)),
            "rabbitmq" => Ok(Some(Broker::Rabbitmq)),
            "emqx" => Ok(Some(Broker::Emqx)),
            "vernemq" => Ok(Some(Broker::Vernemq)),
            other => Err(format!("unknown broker `{other}` (mosquitto, rabbitmq, emqx, vernemq or none)")),
        }
    }
}

fn v5(asked: &Asked) -> bool {
    asked.protocol == Protocol::Mqtt5
}

/// The acknowledgement of a publish at `qos` carrying `code` (v5) or none (v3.1.1).
fn ack(asked: &Asked, code: &str) -> String {
    let packet = if asked.qos == 2 { "PUBREC" } else { "PUBACK" };
    match (asked.qos, v5(asked)) {
        (0, _) => "nothing (QoS 0 has no acknowledgement)".to_owned(),
        (_, true) => format!("{packet} {code}"),
        (_, false) => format!("{packet} (no reason code in MQTT 3.1.1)"),
    }
}

/// What `broker`'s client sees for `outcome`, the answer to `asked`.
pub fn client_sees(broker: Broker, asked: &Asked, outcome: &Outcome) -> Seen {
    let mut flags = Vec::new();
    let client = match broker {
        Broker::Mosquitto => mosquitto(asked, outcome, &mut flags),
        Broker::Rabbitmq => rabbitmq(asked, outcome, &mut flags),
        Broker::Emqx => emqx(asked, outcome, &mut flags),
        Broker::Vernemq => vernemq(asked, outcome, &mut flags),
    };
    Seen { client, flags }
}

/// A denial's reason that the broker replaces with 0x87 on the wire.
fn only_0x87(broker: &str, outcome: &Outcome, flags: &mut Vec<String>) {
    if let Some(r) = outcome.reason
        && r != ReasonCode::NotAuthorized
    {
        flags.push(format!("{broker} sends 0x87, not {r} (the event keeps the precise code)"));
    }
}

fn mosquitto(asked: &Asked, o: &Outcome, flags: &mut Vec<String>) -> String {
    let refused = if v5(asked) { "0x87" } else { "0x80" };
    match (asked.action, o.kind) {
        ("connect", "accept") => if v5(asked) { "CONNACK 0x00" } else { "CONNACK 0" }.to_owned(),
        ("connect", "reject") => {
            only_0x87("Mosquitto 2.0", o, flags);
            if v5(asked) { "CONNACK 0x87" } else { "CONNACK 5 (not authorized)" }.to_owned()
        }
        ("connect", _) => "the broker's own authentication decides (password_file, allow_anonymous)".to_owned(),
        ("publish", "allow" | "defer") => {
            format!("{}; delivered", ack(asked, "0x00 (0x10 no matching subscribers when nobody subscribes)"))
        }
        ("publish", "rewrite") => {
            if o.qos.is_some_and(|q| q < asked.qos) {
                flags.push(format!(
                    "Mosquitto 2.0 cannot change a message's QoS: delivered at QoS {} as published",
                    asked.qos
                ));
            }
            let retain = if asked.retain && o.retain == Some(false) { " without the retained flag" } else { "" };
            format!("{}; delivered{retain}", ack(asked, "0x00"))
        }
        ("publish", "deny") if o.disconnect => disconnect(asked, o.reason),
        ("publish", "deny") => {
            only_0x87("Mosquitto 2.0", o, flags);
            format!("{}; message dropped", ack(asked, "0x87"))
        }
        ("subscribe", "grant") if o.qos.is_some_and(|q| q < asked.qos) => {
            flags.push(format!(
                "refused, not downgraded: Mosquitto 2.0 cannot lower the granted QoS ({} asked, {} granted); grant \
                 the asked QoS or deny",
                asked.qos,
                o.qos.unwrap_or(0)
            ));
            format!("SUBACK {refused}")
        }
        ("subscribe", "grant" | "defer") => format!("SUBACK 0x{:02X}", asked.qos),
        ("subscribe", "deny") if o.disconnect => disconnect(asked, o.reason),
        ("subscribe", "deny") => {
            only_0x87("Mosquitto 2.0", o, flags);
            format!("SUBACK {refused}")
        }
        ("deliver", "deny") => "the message is not sent to this subscriber".to_owned(),
        ("deliver", _) => "the message is delivered".to_owned(),
        _ => o.kind.to_owned(),
    }
}

/// The DISCONNECT Mosquitto 2.0 sends for a disconnecting denial (see the plugin's
/// `denial_rc`): 0x9A, 0x9B and 0x82 are reachable, anything else is 0x80.
fn disconnect(asked: &Asked, reason: Option<ReasonCode>) -> String {
    if !v5(asked) {
        return "connection closed".to_owned();
    }
    let code = match reason {
        Some(r @ (ReasonCode::RetainNotSupported | ReasonCode::QosNotSupported | ReasonCode::ProtocolError)) => {
            r.code()
        }
        _ => 0x80,
    };
    format!("DISCONNECT 0x{code:02X}; connection closed")
}

fn rabbitmq(asked: &Asked, o: &Outcome, flags: &mut Vec<String>) -> String {
    if v5(asked) {
        flags.push("RabbitMQ 3.10 speaks MQTT 3.1 and 3.1.1 only: an MQTT 5 client is refused".to_owned());
    }
    if matches!(asked.action, "publish" | "subscribe") && (asked.qos != 1 || asked.retain) {
        flags.push(
            "RabbitMQ sends no QoS, retained flag or payload size: serve checks every publish and subscription at QoS 1, \
             not retained, so its decision may differ from this one"
                .to_owned(),
        );
    }
    match (asked.action, o.kind) {
        ("connect", "accept") => "CONNACK 0".to_owned(),
        ("connect", "reject") => "CONNACK 4 (bad user name or password)".to_owned(),
        ("connect", _) => {
            flags.push("serve has no next authenticator: a deferred login is refused".to_owned());
            "CONNACK 4 (bad user name or password)".to_owned()
        }
        ("publish", "allow" | "defer") => {
            if asked.qos == 0 {
                "nothing (QoS 0); delivered".to_owned()
            } else {
                "PUBACK; delivered".to_owned()
            }
        }
        ("publish", "rewrite") => {
            flags.push("RabbitMQ cannot rewrite a message: it is allowed unchanged".to_owned());
            "PUBACK; delivered unchanged".to_owned()
        }
        ("publish", "deny") => "connection closed (no PUBACK); message dropped".to_owned(),
        ("subscribe", "grant") if o.qos.is_some_and(|q| q < asked.qos.min(1)) => {
            flags.push("refused: RabbitMQ cannot lower the granted QoS".to_owned());
            "connection closed (no SUBACK)".to_owned()
        }
        ("subscribe", "grant" | "defer") => format!("SUBACK {}", asked.qos.min(1)),
        ("subscribe", "deny") => "connection closed (no SUBACK)".to_owned(),
        ("deliver", "deny") => {
            flags.push("never asked: RabbitMQ checks at subscribe only, so this delivery is not refused".to_owned());
            "the message is delivered".to_owned()
        }
        ("deliver", _) => "the message is delivered (RabbitMQ does not ask per delivery)".to_owned(),
        _ => o.kind.to_owned(),
    }
}

fn emqx(asked: &Asked, o: &Outcome, flags: &mut Vec<String>) -> String {
    match (asked.action, o.kind) {
        ("connect", "accept") => if v5(asked) { "CONNACK 0x00" } else { "CONNACK 0" }.to_owned(),
        ("connect", "reject") => {
            only_0x87("EMQX", o, flags);
            if v5(asked) { "CONNACK 0x87" } else { "CONNACK 5 (not authorized)" }.to_owned()
        }
        ("connect", _) => "the next authenticator decides (HTTP `ignore`)".to_owned(),
        ("publish", "allow" | "defer") => format!("{}; delivered", ack(asked, "0x00")),
        ("publish", "rewrite") => {
            flags.push("EMQX's HTTP authorization answers allow or deny only: the message is not rewritten".to_owned());
            format!("{}; delivered unchanged", ack(asked, "0x00"))
        }
        ("publish", "deny") => {
            only_0x87("EMQX", o, flags);
            format!("{}; message dropped", ack(asked, "0x87"))
        }
        ("subscribe", "grant") if o.qos.is_some_and(|q| q < asked.qos) => {
            flags.push("refused: EMQX's HTTP authorization answers allow or deny, it cannot lower the QoS".to_owned());
            format!("SUBACK {}", if v5(asked) { "0x87" } else { "0x80" })
        }
        ("subscribe", "grant" | "defer") => format!("SUBACK 0x{:02X}", asked.qos),
        ("subscribe", "deny") => {
            only_0x87("EMQX", o, flags);
            format!("SUBACK {}", if v5(asked) { "0x87" } else { "0x80" })
        }
        ("deliver", "deny") => {
            flags.push(
                "never asked: EMQX authorizes PUBLISH and SUBSCRIBE only, so this delivery is not refused".to_owned(),
            );
            "the message is delivered".to_owned()
        }
        ("deliver", _) => "the message is delivered (EMQX does not ask per delivery)".to_owned(),
        _ => o.kind.to_owned(),
    }
}

fn vernemq(asked: &Asked, o: &Outcome, flags: &mut Vec<String>) -> String {
    match (asked.action, o.kind) {
        ("connect", "accept") => if v5(asked) { "CONNACK 0x00" } else { "CONNACK 0" }.to_owned(),
        ("connect", "reject") => {
            only_0x87("VerneMQ", o, flags);
            if v5(asked) { "CONNACK 0x87" } else { "CONNACK 5 (not authorized)" }.to_owned()
        }
        ("connect", _) => "the next plugin decides (webhook `next`)".to_owned(),
        ("publish", "allow" | "defer") => format!("{}; delivered", ack(asked, "0x00")),
        // auth_on_publish modifiers may set qos and retain.
        ("publish", "rewrite") => {
            let retain = if asked.retain && o.retain == Some(false) { " without the retained flag" } else { "" };
            format!("{}; delivered at QoS {}{retain}", ack(asked, "0x00"), o.qos.unwrap_or(asked.qos))
        }
        ("publish", "deny") => {
            only_0x87("VerneMQ", o, flags);
            format!("{}; message dropped", ack(asked, "0x87"))
        }
        // auth_on_subscribe may rewrite each topic's QoS.
        ("subscribe", "grant") => format!("SUBACK 0x{:02X}", o.qos.unwrap_or(asked.qos)),
        ("subscribe", "defer") => format!("SUBACK 0x{:02X}", asked.qos),
        ("subscribe", "deny") => {
            only_0x87("VerneMQ", o, flags);
            format!("SUBACK {}", if v5(asked) { "0x87" } else { "0x80" })
        }
        ("deliver", "deny") => {
            flags.push("on_deliver cannot refuse in VerneMQ: this delivery is not refused".to_owned());
            "the message is delivered".to_owned()
        }
        ("deliver", _) => "the message is delivered".to_owned(),
        _ => o.kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(q: u8) -> Outcome {
        let mut o = crate::run::Outcome::plain_kind("grant");
        o.qos = Some(q);
        o
    }

    #[test]
    fn a_lowered_grant_is_a_refusal_on_mosquitto_and_a_grant_on_vernemq() {
        let asked = Asked { action: "subscribe", protocol: Protocol::Mqtt5, qos: 1, retain: false };
        let m = client_sees(Broker::Mosquitto, &asked, &grant(0));
        assert_eq!(m.client, "SUBACK 0x87");
        assert!(m.flags[0].starts_with("refused, not downgraded"), "{m:?}");
        let v = client_sees(Broker::Vernemq, &asked, &grant(0));
        assert_eq!((v.client.as_str(), v.flags.len()), ("SUBACK 0x00", 0));
        let v3 = Asked { protocol: Protocol::Mqtt311, ..asked };
        assert_eq!(client_sees(Broker::Mosquitto, &v3, &grant(0)).client, "SUBACK 0x80");
        assert_eq!(
            client_sees(Broker::Mosquitto, &asked, &grant(1)),
            Seen { client: "SUBACK 0x01".into(), flags: vec![] }
        );
    }
}
