//! Conversions between the public domain types and the generated WIT types.

use crate::bindings::wit;
use crate::types::*;

pub(crate) fn protocol(p: Protocol) -> wit::Protocol {
    match p {
        Protocol::Mqtt31 => wit::Protocol::Mqtt31,
        Protocol::Mqtt311 => wit::Protocol::Mqtt311,
        Protocol::Mqtt5 => wit::Protocol::Mqtt5,
    }
}

pub(crate) fn reason(r: wit::ReasonCode) -> ReasonCode {
    use wit::ReasonCode as W;
    match r {
        W::UnspecifiedError => ReasonCode::UnspecifiedError,
        W::MalformedPacket => ReasonCode::MalformedPacket,
        W::ProtocolError => ReasonCode::ProtocolError,
        W::ImplementationSpecificError => ReasonCode::ImplementationSpecificError,
        W::UnsupportedProtocolVersion => ReasonCode::UnsupportedProtocolVersion,
        W::ClientIdentifierNotValid => ReasonCode::ClientIdentifierNotValid,
        W::BadUserNameOrPassword => ReasonCode::BadUserNameOrPassword,
        W::NotAuthorized => ReasonCode::NotAuthorized,
        W::ServerUnavailable => ReasonCode::ServerUnavailable,
        W::ServerBusy => ReasonCode::ServerBusy,
        W::Banned => ReasonCode::Banned,
        W::BadAuthenticationMethod => ReasonCode::BadAuthenticationMethod,
        W::TopicFilterInvalid => ReasonCode::TopicFilterInvalid,
        W::TopicNameInvalid => ReasonCode::TopicNameInvalid,
        W::PacketTooLarge => ReasonCode::PacketTooLarge,
        W::MessageRateTooHigh => ReasonCode::MessageRateTooHigh,
        W::QuotaExceeded => ReasonCode::QuotaExceeded,
        W::AdministrativeAction => ReasonCode::AdministrativeAction,
        W::PayloadFormatInvalid => ReasonCode::PayloadFormatInvalid,
        W::RetainNotSupported => ReasonCode::RetainNotSupported,
        W::QosNotSupported => ReasonCode::QosNotSupported,
        W::SharedSubscriptionsNotSupported => ReasonCode::SharedSubscriptionsNotSupported,
        W::ConnectionRateExceeded => ReasonCode::ConnectionRateExceeded,
        W::WildcardSubscriptionsNotSupported => ReasonCode::WildcardSubscriptionsNotSupported,
    }
}

pub(crate) fn denial(d: wit::Denial) -> Denial {
    Denial { reason: reason(d.reason), message: d.message, disconnect: d.disconnect }
}

pub(crate) fn session_info(s: wit::SessionInfo) -> SessionInfo {
    SessionInfo { device_id: s.device_id, attributes: s.attributes, expires_at_ms: s.expires_at_ms }
}

pub(crate) fn publish_decision(d: wit::PublishDecision) -> PublishDecision {
    match d {
        wit::PublishDecision::Allow => PublishDecision::Allow,
        wit::PublishDecision::Rewrite(r) => {
            PublishDecision::Rewrite(PublishRewrite { qos: r.qos, retain: r.retain, message: r.message })
        }
        wit::PublishDecision::Deny(d) => PublishDecision::Deny(denial(d)),
        wit::PublishDecision::Defer => PublishDecision::Defer,
    }
}

pub(crate) fn subscribe_decision(d: wit::SubscribeDecision) -> SubscribeDecision {
    match d {
        wit::SubscribeDecision::Grant(q) => SubscribeDecision::Grant(q),
        wit::SubscribeDecision::Deny(d) => SubscribeDecision::Deny(denial(d)),
        wit::SubscribeDecision::Defer => SubscribeDecision::Defer,
    }
}

pub(crate) fn delivery_decision(d: wit::DeliveryDecision) -> DeliveryDecision {
    match d {
        wit::DeliveryDecision::Allow => DeliveryDecision::Allow,
        wit::DeliveryDecision::Deny(d) => DeliveryDecision::Deny(denial(d)),
        wit::DeliveryDecision::Defer => DeliveryDecision::Defer,
    }
}
