//! Mosquitto's values as gateway inputs, and gateway outcomes as Mosquitto return codes.

use std::ffi::c_int;

use rustc_hash::FxHashMap;

use mqtt_policy_gateway::{Access, BrokerClose, CheckOutcome, ConnectOutcome};
use mqtt_policy_host::{Denial, Protocol, ReasonCode};

use crate::ffi::{Internals, access, err, state};

/// The access an ACL check asks about; `None` for a code this plugin does not know.
pub fn access_of(code: c_int) -> Option<Access> {
    match code {
        access::WRITE => Some(Access::Publish),
        access::SUBSCRIBE => Some(Access::Subscribe),
        access::UNSUBSCRIBE => Some(Access::Unsubscribe),
        access::READ => Some(Access::Delivery),
        _ => None,
    }
}

/// The protocol of `mosquitto_client_protocol_version`'s level.
pub fn protocol_of(level: c_int) -> Protocol {
    match level {
        3 => Protocol::Mqtt31,
        4 => Protocol::Mqtt311,
        _ => Protocol::Mqtt5,
    }
}

/// How a connection closed, from what Mosquitto 2.0.11 leaves in the client at
/// MOSQ_EVT_DISCONNECT ([`Internals`]; its event's `reason` is always -1): the state it set
/// (DISCONNECT received, taken over), else one and a half keep-alive periods without a
/// packet (Mosquitto's own timeout test, `src/keepalive.c`), else whether the client's side of
/// the socket is closed (`peer_closed`: the client left) or still open (the broker closes it).
pub fn broker_close(
    internals: Option<Internals>,
    keepalive: c_int,
    now_s: i64,
    peer_closed: impl FnOnce(c_int) -> bool,
) -> BrokerClose {
    let Some(i) = internals else { return BrokerClose::Unknown };
    // A time of the last packet outside [0, now] means the layout guess read something else:
    // nothing is concluded from it.
    let silent_too_long =
        (0..=now_s).contains(&i.last_msg_in) && keepalive > 0 && now_s - i.last_msg_in > i64::from(keepalive) * 3 / 2;
    match i.state {
        state::DISCONNECTING | state::DISCONNECT_WITH_WILL => BrokerClose::Normal,
        state::DUPLICATE => BrokerClose::Takeover,
        // Websockets connections close through this state whatever the cause: only the
        // keep-alive test tells something.
        state::ACTIVE | state::DISCONNECT_WS if silent_too_long => BrokerClose::KeepAlive,
        state::ACTIVE if !(0..=now_s).contains(&i.last_msg_in) => BrokerClose::Unknown,
        state::ACTIVE => match i.sock {
            Some(fd) if !peer_closed(fd) => BrokerClose::ServerClosed,
            _ => BrokerClose::ClientClosed,
        },
        _ => BrokerClose::Unknown,
    }
}

/// The BASIC_AUTH return code.
pub fn connect_rc(outcome: &ConnectOutcome) -> c_int {
    match outcome {
        ConnectOutcome::Accept { .. } => err::SUCCESS,
        ConnectOutcome::Reject(_) => err::AUTH,
        ConnectOutcome::Defer => err::PLUGIN_DEFER,
    }
}

/// The ACL_CHECK return code. A cleared retained flag is applied by the MESSAGE event that
/// follows ([`RetainRewrites`]).
pub fn check_rc(access: Access, outcome: &CheckOutcome) -> c_int {
    match outcome {
        CheckOutcome::Allow | CheckOutcome::AllowRetainCleared => err::SUCCESS,
        CheckOutcome::Defer => err::PLUGIN_DEFER,
        // A read check cannot end the session without disturbing the other subscribers'
        // deliveries: a refused delivery is only skipped.
        CheckOutcome::Deny(_) if access == Access::Delivery => err::ACL_DENIED,
        CheckOutcome::Deny(d) => denial_rc(d),
    }
}

/// The Mosquitto return code for a denial: a negative acknowledgement (PUBACK/SUBACK 0x87),
/// or, when the policy asks to disconnect, the error Mosquitto turns into a DISCONNECT with
/// the closest reason code it can send.
pub fn denial_rc(d: &Denial) -> c_int {
    if !d.disconnect {
        return err::ACL_DENIED;
    }
    match d.reason {
        ReasonCode::RetainNotSupported => err::RETAIN_NOT_SUPPORTED,
        ReasonCode::QosNotSupported => err::QOS_NOT_SUPPORTED,
        ReasonCode::ProtocolError => err::PROTOCOL,
        _ => err::UNKNOWN,
    }
}

/// Publishes whose retained flag is to be cleared. Mosquitto 2.0 lets a plugin change the
/// flag only in the MESSAGE event that follows the write check, for the same stored message
/// (identified by its topic pointer); QoS cannot be changed at all.
#[derive(Default)]
pub struct RetainRewrites {
    /// Client pointer → topic pointer of the publish whose flag is cleared.
    pending: FxHashMap<usize, usize>,
}

impl RetainRewrites {
    /// Records the outcome of a write check.
    pub fn checked(&mut self, client: usize, topic: usize, outcome: &CheckOutcome) {
        if *outcome == CheckOutcome::AllowRetainCleared {
            self.pending.insert(client, topic);
        } else if !self.pending.is_empty() {
            self.pending.remove(&client);
        }
    }

    /// MESSAGE: the retained flag to store, if the write check cleared it.
    pub fn take(&mut self, client: usize, topic: usize) -> Option<bool> {
        if self.pending.is_empty() {
            return None;
        }
        (self.pending.remove(&client)? == topic).then_some(false)
    }

    /// The client is gone or connects anew.
    pub fn forget(&mut self, client: usize) {
        if !self.pending.is_empty() {
            self.pending.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnecting_denials_map_to_the_errors_mosquitto_turns_into_disconnect_codes() {
        let d = |reason, disconnect| Denial { reason, message: String::new(), disconnect };
        assert_eq!(denial_rc(&d(ReasonCode::NotAuthorized, false)), err::ACL_DENIED);
        assert_eq!(denial_rc(&d(ReasonCode::RetainNotSupported, false)), err::ACL_DENIED);
        assert_eq!(denial_rc(&d(ReasonCode::RetainNotSupported, true)), err::RETAIN_NOT_SUPPORTED);
        assert_eq!(denial_rc(&d(ReasonCode::QosNotSupported, true)), err::QOS_NOT_SUPPORTED);
        assert_eq!(denial_rc(&d(ReasonCode::ProtocolError, true)), err::PROTOCOL);
        assert_eq!(denial_rc(&d(ReasonCode::QuotaExceeded, true)), err::UNKNOWN);
    }

    #[test]
    fn a_refused_delivery_is_only_skipped_even_when_the_policy_asks_to_disconnect() {
        let d =
            CheckOutcome::Deny(Denial { reason: ReasonCode::QuotaExceeded, message: String::new(), disconnect: true });
        assert_eq!(check_rc(Access::Delivery, &d), err::ACL_DENIED);
        assert_eq!(check_rc(Access::Publish, &d), err::UNKNOWN);
        assert_eq!(check_rc(Access::Publish, &CheckOutcome::Defer), err::PLUGIN_DEFER);
        assert_eq!(check_rc(Access::Publish, &CheckOutcome::AllowRetainCleared), err::SUCCESS);
    }

    #[test]
    fn websockets_closings_and_implausible_times() {
        let i = |state, last_msg_in| Some(Internals { state, last_msg_in, sock: Some(7) });
        let open = |_| false;
        assert_eq!(broker_close(i(state::DISCONNECT_WS, 100), 10, 120, open), BrokerClose::KeepAlive);
        assert_eq!(broker_close(i(state::DISCONNECT_WS, 115), 10, 120, open), BrokerClose::Unknown);
        // A last-packet time in the future or before the epoch is not believed.
        assert_eq!(broker_close(i(state::ACTIVE, 500), 10, 120, open), BrokerClose::Unknown);
        assert_eq!(broker_close(i(state::ACTIVE, -5), 10, 120, open), BrokerClose::Unknown);
    }

    #[test]
    fn closings_from_the_client_state() {
        let i = |state, last_msg_in| Some(Internals { state, last_msg_in, sock: Some(7) });
        let open = |_| false;
        let gone = |_| true;
        assert_eq!(broker_close(i(state::DISCONNECTING, 100,), 60, 101, open), BrokerClose::Normal);
        assert_eq!(broker_close(i(state::DISCONNECT_WITH_WILL, 100), 60, 101, open), BrokerClose::Normal);
        assert_eq!(broker_close(i(state::DUPLICATE, 100), 60, 101, open), BrokerClose::Takeover);
        assert_eq!(broker_close(i(state::ACTIVE, 100), 2, 104, open), BrokerClose::KeepAlive);
        assert_eq!(broker_close(i(state::ACTIVE, 100), 2, 103, gone), BrokerClose::ClientClosed, "3 s is 1.5 × 2 s");
        assert_eq!(broker_close(i(state::ACTIVE, 100), 0, 900, gone), BrokerClose::ClientClosed, "no keep-alive");
        assert_eq!(broker_close(i(state::ACTIVE, 100), 60, 101, open), BrokerClose::ServerClosed);
        assert_eq!(broker_close(None, 60, 101, open), BrokerClose::Unknown);
        assert_eq!(broker_close(i(99, 100), 60, 101, open), BrokerClose::Unknown);
    }

    #[test]
    fn a_cleared_retain_flag_applies_to_the_message_that_was_checked_once() {
        let mut r = RetainRewrites::default();
        r.checked(1, 100, &CheckOutcome::AllowRetainCleared);
        assert_eq!(r.take(1, 101), None, "another stored message");
        r.checked(1, 100, &CheckOutcome::AllowRetainCleared);
        r.checked(2, 200, &CheckOutcome::Allow);
        assert_eq!(r.take(2, 200), None);
        assert_eq!(r.take(1, 100), Some(false));
        assert_eq!(r.take(1, 100), None, "taken once");
        r.checked(1, 100, &CheckOutcome::AllowRetainCleared);
        r.checked(1, 100, &CheckOutcome::Allow);
        assert_eq!(r.take(1, 100), None, "a later check replaces it");
    }
}
