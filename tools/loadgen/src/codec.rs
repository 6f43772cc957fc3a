//! A minimal MQTT 3.1.1 codec: only the packets a load generator sends or receives.
//!
//! Decoded packets borrow from the read buffer, so the subscriber hot path does not allocate
//! per message: on a 2-core machine the client shares the CPU with the broker it measures.

use std::fmt;

/// Largest value the variable-length "remaining length" field can carry (MQTT 3.1.1 §2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// A malformed or unsupported packet. Any of these ends the connection: the stream cannot be
/// resynchronised after a framing error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The remaining-length field used more than four bytes.
    BadRemainingLength,
    /// The packet is larger than the caller's limit.
    TooLarge(usize),
    /// A packet type this codec does not handle (e.g. QoS 2 flow, UNSUBSCRIBE).
    UnsupportedType(u8),
    /// The reserved flag bits of the fixed header are wrong for the packet type.
    BadFlags(u8),
    /// The body is shorter or longer than its fields say.
    BadLength,
    /// A string is not valid UTF-8 or contains U+0000.
    BadString,
    /// QoS 3 or a packet identifier of 0 where one is required.
    BadField(&'static str),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::BadRemainingLength => write!(f, "remaining length longer than 4 bytes"),
            CodecError::TooLarge(n) => write!(f, "packet of {n} bytes exceeds the limit"),
            CodecError::UnsupportedType(t) => write!(f, "unsupported packet type {t}"),
            CodecError::BadFlags(b) => write!(f, "bad fixed-header flags in byte {b:#04x}"),
            CodecError::BadLength => write!(f, "packet body length does not match its fields"),
            CodecError::BadString => write!(f, "string is not valid MQTT UTF-8"),
            CodecError::BadField(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// The packets this load generator speaks. Strings and payloads borrow from the buffer they
/// were decoded from (or from the caller, when encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Client → broker. Will messages are not supported: a benchmark has no use for them.
    Connect {
        /// Client identifier.
        client_id: &'a str,
        /// Optional user name.
        username: Option<&'a str>,
        /// Optional password (binary in MQTT 3.1.1).
        password: Option<&'a [u8]>,
        /// Keep-alive interval in seconds (0 disables it).
        keep_alive: u16,
        /// Discard any previous session.
        clean_session: bool,
    },
    /// Broker → client answer to CONNECT.
    ConnAck {
        /// The broker resumed a stored session.
        session_present: bool,
        /// 0 = accepted; 1..=5 = refused (see [`connack_reason`]).
        return_code: u8,
    },
    /// An application message, either direction.
    Publish {
        /// Redelivery flag.
        dup: bool,
        /// 0, 1 or 2.
        qos: u8,
        /// Retain flag.
        retain: bool,
        /// Topic name (no wildcards).
        topic: &'a str,
        /// Present exactly when `qos > 0`.
        packet_id: Option<u16>,
        /// Application payload.
        payload: &'a [u8],
    },
    /// Acknowledges a QoS 1 PUBLISH.
    PubAck {
        /// Identifier of the acknowledged PUBLISH.
        packet_id: u16,
    },
    /// Client → broker subscription request.
    Subscribe {
        /// Non-zero identifier echoed in SUBACK.
        packet_id: u16,
        /// (topic filter, requested QoS) pairs; at least one.
        filters: Vec<(&'a str, u8)>,
    },
    /// Broker → client answer to SUBSCRIBE.
    SubAck {
        /// Identifier of the SUBSCRIBE.
        packet_id: u16,
        /// Granted QoS per filter, or 0x80 for failure.
        return_codes: &'a [u8],
    },
    /// Keep-alive probe.
    PingReq,
    /// Keep-alive answer.
    PingResp,
    /// Clean client-side close.
    Disconnect,
}

/// Human-readable meaning of a CONNACK return code.
pub fn connack_reason(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Callers validate lengths up front (see `encoded_len`), so this cannot truncate silently.
    debug_assert!(s.len() <= u16::MAX as usize);
    put_u16(out, s.len() as u16);
    out.extend_from_slice(s);
}

fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Encoding failed because a field does not fit the wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub &'static str);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode packet: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

impl Packet<'_> {
    /// Appends the wire form of this packet to `out`.
    ///
    /// Appending (rather than returning a new buffer) lets a publisher batch many packets into
    /// one `write` call.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let check_str = |s: &[u8]| {
            if s.len() > u16::MAX as usize { Err(EncodeError("string longer than 65535 bytes")) } else { Ok(()) }
        };
        match self {
            Packet::Connect { client_id, username, password, keep_alive, clean_session } => {
                check_str(client_id.as_bytes())?;
                let mut flags = 0u8;
                let mut len = 10 + 2 + client_id.len();
                if let Some(u) = username {
                    check_str(u.as_bytes())?;
                    flags |= 0x80;
                    len += 2 + u.len();
                }
                if let Some(p) = password {
                    // MQTT 3.1.1 §3.1.2.9: a password requires a user name.
                    if username.is_none() {
                        return Err(EncodeError("password without user name"));
                    }
                    check_str(p)?;
                    flags |= 0x40;
                    len += 2 + p.len();
                }
                if *clean_session {
                    flags |= 0x02;
                }
                out.push(0x10);
                put_remaining_length(out, len);
                put_str(out, b"MQTT");
                out.push(4); // protocol level 4 = 3.1.1
                out.push(flags);
                put_u16(out, *keep_alive);
                put_str(out, client_id.as_bytes());
                if let Some(u) = username {
                    put_str(out, u.as_bytes());
                }
                if let Some(p) = password {
                    put_str(out, p);
                }
            }
            Packet::ConnAck { session_present, return_code } => {
                out.extend_from_slice(&[0x20, 2, u8::from(*session_present), *return_code]);
            }
            Packet::Publish { dup, qos, retain, topic, packet_id, payload } => {
                if *qos > 2 {
                    return Err(EncodeError("QoS above 2"));
                }
                if (*qos > 0) != packet_id.is_some() || *packet_id == Some(0) {
                    return Err(EncodeError("packet id must be non-zero and present exactly for QoS > 0"));
                }
                check_str(topic.as_bytes())?;
                let len = 2 + topic.len() + if *qos > 0 { 2 } else { 0 } + payload.len();
                if len > MAX_REMAINING_LENGTH {
                    return Err(EncodeError("packet larger than 256 MiB"));
                }
                out.push(0x30 | (u8::from(*dup) << 3) | (qos << 1) | u8::from(*retain));
                put_remaining_length(out, len);
                put_str(out, topic.as_bytes());
                if let Some(id) = packet_id {
                    put_u16(out, *id);
                }
                out.extend_from_slice(payload);
            }
            Packet::PubAck { packet_id } => {
                out.extend_from_slice(&[0x40, 2]);
                put_u16(out, *packet_id);
            }
            Packet::Subscribe { packet_id, filters } => {
                if *packet_id == 0 || filters.is_empty() {
                    return Err(EncodeError("SUBSCRIBE needs a non-zero id and at least one filter"));
                }
                let mut len = 2;
                for (f, q) in filters {
                    check_str(f.as_bytes())?;
                    if *q > 2 {
                        return Err(EncodeError("QoS above 2"));
                    }
                    len += 2 + f.len() + 1;
                }
                out.push(0x82);
                put_remaining_length(out, len);
                put_u16(out, *packet_id);
                for (f, q) in filters {
                    put_str(out, f.as_bytes());
                    out.push(*q);
                }
            }
            Packet::SubAck { packet_id, return_codes } => {
                out.push(0x90);
                put_remaining_length(out, 2 + return_codes.len());
                put_u16(out, *packet_id);
                out.extend_from_slice(return_codes);
            }
            Packet::PingReq => out.extend_from_slice(&[0xC0, 0]),
            Packet::PingResp => out.extend_from_slice(&[0xD0, 0]),
            Packet::Disconnect => out.extend_from_slice(&[0xE0, 0]),
        }
        Ok(())
    }
}

/// Reads fields from a packet body, failing with [`CodecError::BadLength`] on underrun.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.buf.split_first().ok_or(CodecError::BadLength)?;
        self.buf = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::BadLength);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn binary(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    fn string(&mut self) -> Result<&'a str, CodecError> {
        let s = std::str::from_utf8(self.binary()?).map_err(|_| CodecError::BadString)?;
        // MQTT 3.1.1 §1.5.3: U+0000 is forbidden in UTF-8 strings.
        if s.contains('\0') {
            return Err(CodecError::BadString);
        }
        Ok(s)
    }

    fn nonzero_id(&mut self) -> Result<u16, CodecError> {
        match self.u16()? {
            0 => Err(CodecError::BadField("packet identifier 0")),
            id => Ok(id),
        }
    }

    fn finish(self) -> Result<(), CodecError> {
        if self.buf.is_empty() { Ok(()) } else { Err(CodecError::BadLength) }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet (read more and retry), or the
/// packet and how many bytes it used. `max_packet` bounds the remaining length so a corrupt
/// length cannot make the caller buffer without limit.
pub fn decode(buf: &[u8], max_packet: usize) -> Result<Option<(Packet<'_>, usize)>, CodecError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut len = 0usize;
    let mut header_len = 1;
    loop {
        let Some(&b) = buf.get(header_len) else { return Ok(None) };
        len |= ((b & 0x7F) as usize) << (7 * (header_len - 1));
        header_len += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header_len == 5 {
            return Err(CodecError::BadRemainingLength);
        }
    }
    if len > max_packet {
        return Err(CodecError::TooLarge(len));
    }
    let total = header_len + len;
    if buf.len() < total {
        return Ok(None);
    }
    let packet = decode_body(first, &buf[header_len..total])?;
    Ok(Some((packet, total)))
}

fn decode_body(first: u8, body: &[u8]) -> Result<Packet<'_>, CodecError> {
    let flags = first & 0x0F;
    let kind = first >> 4;
    // MQTT 3.1.1 §2.2.2: reserved flags must have these exact values, else the packet is malformed.
    let expected_flags = match kind {
        3 => flags, // PUBLISH: flags carry dup/qos/retain
        8 => 0x2,   // SUBSCRIBE
        _ => 0,
    };
    if flags != expected_flags {
        return Err(CodecError::BadFlags(first));
    }
    let mut r = Reader { buf: body };
    let packet = match kind {
        1 => {
            if r.string()? != "MQTT" || r.u8()? != 4 {
                return Err(CodecError::BadField("protocol name or level"));
            }
            let flags = r.u8()?;
            if flags & 0x01 != 0 {
                return Err(CodecError::BadField("reserved CONNECT flag"));
            }
            if flags & 0x04 != 0 {
                return Err(CodecError::BadField("will message (unsupported)"));
            }
            if flags & 0x40 != 0 && flags & 0x80 == 0 {
                return Err(CodecError::BadField("password without user name"));
            }
            let keep_alive = r.u16()?;
            let client_id = r.string()?;
            let username = if flags & 0x80 != 0 { Some(r.string()?) } else { None };
            let password = if flags & 0x40 != 0 { Some(r.binary()?) } else { None };
            Packet::Connect { client_id, username, password, keep_alive, clean_session: flags & 0x02 != 0 }
        }
        2 => {
            let ack_flags = r.u8()?;
            if ack_flags & 0xFE != 0 {
                return Err(CodecError::BadField("CONNACK flags"));
            }
            Packet::ConnAck { session_present: ack_flags & 1 != 0, return_code: r.u8()? }
        }
        3 => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(CodecError::BadField("QoS 3"));
            }
            let topic = r.string()?;
            let packet_id = if qos > 0 { Some(r.nonzero_id()?) } else { None };
            // The payload is whatever is left: no `finish` check here.
            return Ok(Packet::Publish {
                dup: flags & 0x08 != 0,
                qos,
                retain: flags & 0x01 != 0,
                topic,
                packet_id,
                payload: r.buf,
            });
        }
        4 => Packet::PubAck { packet_id: r.nonzero_id()? },
        8 => {
            let packet_id = r.nonzero_id()?;
            let mut filters = Vec::new();
            while !r.buf.is_empty() {
                let f = r.string()?;
                let q = r.u8()?;
                if q > 2 {
                    return Err(CodecError::BadField("requested QoS"));
                }
                filters.push((f, q));
            }
            if filters.is_empty() {
                return Err(CodecError::BadField("SUBSCRIBE without filters"));
            }
            Packet::Subscribe { packet_id, filters }
        }
        9 => {
            let packet_id = r.nonzero_id()?;
            let return_codes = std::mem::take(&mut r.buf);
            if return_codes.is_empty() || return_codes.iter().any(|&c| c > 2 && c != 0x80) {
                return Err(CodecError::BadField("SUBACK return code"));
            }
            Packet::SubAck { packet_id, return_codes }
        }
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect,
        other => return Err(CodecError::UnsupportedType(other)),
    };
    r.finish()?;
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: Packet<'_>) {
        let mut buf = Vec::new();
        p.encode(&mut buf).unwrap();
        let (q, used) = decode(&buf, MAX_REMAINING_LENGTH).unwrap().expect("complete packet");
        assert_eq!(used, buf.len());
        assert_eq!(p, q);
        // Every strict prefix is incomplete, never an error: the reader must wait for more bytes.
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut], MAX_REMAINING_LENGTH), Ok(None), "prefix {cut} of {p:?}");
        }
    }

    #[test]
    fn every_packet_roundtrips() {
        roundtrip(Packet::Connect {
            client_id: "dev-1",
            username: Some("dev-1"),
            password: Some(b"secret"),
            keep_alive: 30,
            clean_session: true,
        });
        roundtrip(Packet::Connect {
            client_id: "",
            username: None,
            password: None,
            keep_alive: 0,
            clean_session: false,
        });
        roundtrip(Packet::ConnAck { session_present: true, return_code: 0 });
        roundtrip(Packet::ConnAck { session_present: false, return_code: 5 });
        roundtrip(Packet::Publish {
            dup: false,
            qos: 0,
            retain: false,
            topic: "devices/dev-1/telemetry",
            packet_id: None,
            payload: b"hello",
        });
        roundtrip(Packet::Publish {
            dup: true,
            qos: 1,
            retain: true,
            topic: "a/b",
            packet_id: Some(65535),
            payload: &[0u8; 300],
        });
        roundtrip(Packet::Publish { dup: false, qos: 1, retain: false, topic: "t", packet_id: Some(7), payload: b"" });
        roundtrip(Packet::PubAck { packet_id: 42 });
        roundtrip(Packet::Subscribe { packet_id: 1, filters: vec![("devices/+/telemetry", 1), ("#", 0)] });
        roundtrip(Packet::SubAck { packet_id: 1, return_codes: &[1, 0x80] });
        roundtrip(Packet::PingReq);
        roundtrip(Packet::PingResp);
        roundtrip(Packet::Disconnect);
    }

    #[test]
    fn connect_bytes_match_the_spec_example() {
        let mut buf = Vec::new();
        Packet::Connect { client_id: "c", username: Some("u"), password: None, keep_alive: 60, clean_session: true }
            .encode(&mut buf)
            .unwrap();
        assert_eq!(buf, [0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0, 60, 0, 1, b'c', 0, 1, b'u']);
    }

    #[test]
    fn remaining_length_boundaries() {
        // 127 → 1 byte, 128 → 2 bytes, 16383 → 2, 16384 → 3 (MQTT 3.1.1 §2.2.3 table).
        for (payload_len, header_bytes) in [(127 - 3, 1), (128 - 3, 2), (16_383 - 3, 2), (16_384 - 3, 3)] {
            let payload = vec![7u8; payload_len];
            let p =
                Packet::Publish { dup: false, qos: 0, retain: false, topic: "a", packet_id: None, payload: &payload };
            let mut buf = Vec::new();
            p.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), 1 + header_bytes + 3 + payload_len);
            assert_eq!(decode(&buf, MAX_REMAINING_LENGTH).unwrap().unwrap().0, p);
        }
    }

    #[test]
    fn several_packets_in_one_buffer_decode_in_order() {
        let mut buf = Vec::new();
        Packet::PubAck { packet_id: 1 }.encode(&mut buf).unwrap();
        Packet::PingResp.encode(&mut buf).unwrap();
        Packet::PubAck { packet_id: 2 }.encode(&mut buf).unwrap();
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((p, n)) = decode(&buf[at..], 1024).unwrap() {
            got.push(p);
            at += n;
        }
        assert_eq!(got, [Packet::PubAck { packet_id: 1 }, Packet::PingResp, Packet::PubAck { packet_id: 2 }]);
    }

    #[test]
    fn malformed_packets_are_rejected() {
        fn d(b: &[u8]) -> Result<Option<(Packet<'_>, usize)>, CodecError> {
            decode(b, MAX_REMAINING_LENGTH)
        }
        assert_eq!(d(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), Err(CodecError::BadRemainingLength));
        assert_eq!(d(&[0x41, 2, 0, 1]), Err(CodecError::BadFlags(0x41))); // PUBACK with flags
        assert_eq!(d(&[0x80, 3, 0, 1, 0]), Err(CodecError::BadFlags(0x80))); // SUBSCRIBE without 0b0010
        assert_eq!(d(&[0x40, 2, 0, 0]), Err(CodecError::BadField("packet identifier 0")));
        assert_eq!(d(&[0x40, 3, 0, 1, 9]), Err(CodecError::BadLength));
        assert_eq!(d(&[0x36, 3, 0, 1, b'a']), Err(CodecError::BadField("QoS 3")));
        assert_eq!(d(&[0x30, 3, 0, 2, b'a']), Err(CodecError::BadLength)); // topic overruns the body
        assert_eq!(d(&[0x30, 3, 0, 1, 0xFF]), Err(CodecError::BadString));
        assert_eq!(d(&[0x30, 3, 0, 1, 0]), Err(CodecError::BadString));
        assert_eq!(d(&[0x90, 3, 0, 1, 3]), Err(CodecError::BadField("SUBACK return code")));
        assert_eq!(d(&[0xF0, 0]), Err(CodecError::UnsupportedType(15)));
        assert_eq!(d(&[0x20, 2, 2, 0]), Err(CodecError::BadField("CONNACK flags")));
        assert_eq!(decode(&[0x30, 0x80, 0x01], 100), Err(CodecError::TooLarge(128)));
    }

    #[test]
    fn encoder_refuses_inconsistent_fields() {
        let mut buf = Vec::new();
        let bad = Packet::Publish { dup: false, qos: 1, retain: false, topic: "t", packet_id: None, payload: b"" };
        assert!(bad.encode(&mut buf).is_err());
        let bad = Packet::Publish { dup: false, qos: 0, retain: false, topic: "t", packet_id: Some(1), payload: b"" };
        assert!(bad.encode(&mut buf).is_err());
        let bad = Packet::Subscribe { packet_id: 0, filters: vec![("t", 0)] };
        assert!(bad.encode(&mut buf).is_err());
        assert!(buf.is_empty(), "a refused packet writes nothing");
    }
}
