//! The reason codes of `wit/policy.wit`'s `reason-code` enum: variant, the number MQTT 5.0 §2.4
//! gives it, and its name as the spec spells it. The host (`ReasonCode` in `mqtt-policy-host`)
//! and the guest SDK (the WIT-generated enum) each expand the one list with their own macro, so
//! a number or a name is written once; each side's `match` over its enum is exhaustive, so a
//! variant added to the WIT and not here fails to compile.
#![no_std]

/// Calls `$m! { Variant = 0xNN, "name"; ... }` with every reason code, in numeric order.
#[macro_export]
macro_rules! with_reason_codes {
    ($m:ident) => {
        $m! {
            UnspecifiedError = 0x80, "unspecified error";
            MalformedPacket = 0x81, "malformed packet";
            ProtocolError = 0x82, "protocol error";
            ImplementationSpecificError = 0x83, "implementation specific error";
            UnsupportedProtocolVersion = 0x84, "unsupported protocol version";
            ClientIdentifierNotValid = 0x85, "client identifier not valid";
            BadUserNameOrPassword = 0x86, "bad user name or password";
            NotAuthorized = 0x87, "not authorized";
            ServerUnavailable = 0x88, "server unavailable";
            ServerBusy = 0x89, "server busy";
            Banned = 0x8A, "banned";
            BadAuthenticationMethod = 0x8C, "bad authentication method";
            TopicFilterInvalid = 0x8F, "topic filter invalid";
            TopicNameInvalid = 0x90, "topic name invalid";
            PacketTooLarge = 0x95, "packet too large";
            MessageRateTooHigh = 0x96, "message rate too high";
            QuotaExceeded = 0x97, "quota exceeded";
            AdministrativeAction = 0x98, "administrative action";
            PayloadFormatInvalid = 0x99, "payload format invalid";
            RetainNotSupported = 0x9A, "retain not supported";
            QosNotSupported = 0x9B, "QoS not supported";
            SharedSubscriptionsNotSupported = 0x9E, "shared subscriptions not supported";
            ConnectionRateExceeded = 0x9F, "connection rate exceeded";
            WildcardSubscriptionsNotSupported = 0xA2, "wildcard subscriptions not supported";
        }
    };
}
