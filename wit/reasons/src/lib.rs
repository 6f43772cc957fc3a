//! The reason codes of `wit/policy.wit`'s `reason-code` enum: variant, the number MQTT 5.0 §2.4
//! gives it, and its name as the spec spells it, with the methods both sides give their enum.
//! The host (`ReasonCode` in `mqtt-policy-host`, declared with [`with_reason_codes`]) and the
//! guest SDK (the WIT-generated enum) each call [`reason_code_methods`], so a number, a name or
//! the parsing of either is written once; the generated `match` is exhaustive, so a variant added
//! to the WIT and not here fails to compile.
#![no_std]

/// Calls `$m! { [ARGS] Variant = 0xNN, "name"; ... }` with every reason code, in numeric order
/// (`ARGS`: the tokens after `$m`, if any).
#[macro_export]
macro_rules! with_reason_codes {
    ($m:path $(, $arg:tt)*) => {
        $m! {
            [$($arg)*]
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

/// Gives the enum `$ty` (whose variants are the reason codes) `ALL`, `code`, `name` and `parse`.
#[macro_export]
macro_rules! reason_code_methods {
    ($ty:ident) => {
        $crate::with_reason_codes!($crate::__reason_code_methods, $ty);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __reason_code_methods {
    ([$ty:ident] $($variant:ident = $code:literal, $name:literal;)*) => {
        impl $ty {
            /// Every reason code, in numeric order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];

            /// The number sent on the wire (MQTT 5.0 §2.4).
            pub fn code(self) -> u8 {
                match self { $($ty::$variant => $code,)* }
            }

            /// The spec's name, e.g. "not authorized".
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name,)* }
            }

            /// Looks a code up by number (`0x87`, `135`), by spec name (`not authorized`) or
            /// kebab-case name (`not-authorized`), case-insensitively: as cases files name them.
            pub fn parse(text: &str) -> Option<$ty> {
                let t = text.trim();
                let number = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(hex) => u8::from_str_radix(hex, 16).ok(),
                    None => t.parse::<u8>().ok(),
                };
                if let Some(n) = number {
                    return Self::ALL.iter().copied().find(|c| c.code() == n);
                }
                let wanted = t.replace(['-', '_'], " ").to_ascii_lowercase();
                Self::ALL.iter().copied().find(|c| c.name().to_ascii_lowercase() == wanted)
            }
        }
    };
}
