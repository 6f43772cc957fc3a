"""The hello policy's rules in plain Python, free of any host plumbing so they test natively
(`python3 -m unittest` in this directory). The same rules as `policies/hello/src/rules.rs`.

- A device connects with a client id that is a valid single topic level; it becomes the device id.
- It may publish under `devices/{device}/#`, up to `max-payload` bytes (settings).
- It may subscribe to its own commands, `devices/{device}/commands/#` or anything narrower.
"""

from dataclasses import dataclass
from enum import Enum

# Payload limit when the settings name none (the IBM Watson IoT limit).
DEFAULT_MAX_PAYLOAD = 131_072
# Longest topic the protocol can carry (a UTF-8 string with a 16-bit length).
MAX_TOPIC_LEN = 65_535


class Refusal(Enum):
    """The reason codes these rules refuse with (names as in the WIT's `reason-code`)."""

    CLIENT_IDENTIFIER_NOT_VALID = "client-identifier-not-valid"
    NOT_AUTHORIZED = "not-authorized"
    TOPIC_NAME_INVALID = "topic-name-invalid"
    TOPIC_FILTER_INVALID = "topic-filter-invalid"
    PACKET_TOO_LARGE = "packet-too-large"


class Denied(Exception):
    """A rule refused: why (a `Refusal`) and the message for the event."""

    def __init__(self, reason: Refusal, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Rules:
    """Parsed settings."""

    max_payload: int = DEFAULT_MAX_PAYLOAD

    @staticmethod
    def parse(settings: str) -> "Rules":
        """Parses `key = value` lines; `#` starts a comment. Known key: `max-payload`.
        Raises ValueError naming the line at fault."""
        max_payload = DEFAULT_MAX_PAYLOAD
        for n, raw in enumerate(settings.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"line {n}: expected `key = value`, found `{line}`")
            key, value = key.strip(), value.strip()
            if key != "max-payload":
                raise ValueError(f"line {n}: unknown setting `{key}` (known: max-payload)")
            if not (value.isascii() and value.isdigit()) or int(value) > 0xFFFF_FFFF:
                raise ValueError(f"line {n}: max-payload must be a whole number of bytes, found `{value}`")
            max_payload = int(value)
        return Rules(max_payload)

    def check_publish(self, device: str, topic: str, payload_size: int) -> None:
        """A device may publish under `devices/{device}/` within the payload limit."""
        problem = topic_name_problem(topic)
        if problem:
            raise Denied(Refusal.TOPIC_NAME_INVALID, f"invalid topic: {problem}")
        if not topic.startswith(f"devices/{device}/"):
            raise Denied(Refusal.NOT_AUTHORIZED, f"unauthorized topic {topic}")
        if payload_size > self.max_payload:
            raise Denied(
                Refusal.PACKET_TOO_LARGE,
                f"message payload is too large ({payload_size} bytes, limit {self.max_payload})",
            )


def device_id(client_id: str) -> str:
    """The device id a client id stands for: itself, if it is one non-empty topic level."""
    if not client_id:
        raise Denied(Refusal.CLIENT_IDENTIFIER_NOT_VALID, "client identifier cannot be empty")
    if any(c in client_id for c in "/+#\0"):
        raise Denied(
            Refusal.CLIENT_IDENTIFIER_NOT_VALID,
            f"client identifier `{client_id}` cannot contain '/', '+', '#' or NUL",
        )
    return client_id


def check_subscribe(device: str, topic_filter: str) -> None:
    """A device may subscribe to `devices/{device}/commands/#` or any filter inside it."""
    problem = topic_filter_problem(topic_filter)
    if problem:
        raise Denied(Refusal.TOPIC_FILTER_INVALID, f"invalid topic filter: {problem}")
    if not filter_within(topic_filter, f"devices/{device}/commands/#"):
        raise Denied(Refusal.NOT_AUTHORIZED, f"unauthorized topic filter {topic_filter}")


# MQTT topic names and filters (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7), as the Rust SDK's `topic` module.


def _common_problem(s: str) -> "str | None":
    if not s:
        return "topic is empty"
    if len(s.encode()) > MAX_TOPIC_LEN:
        return "topic is longer than 65535 bytes"
    if "\0" in s:
        return "topic contains the null character U+0000"
    return None


def topic_name_problem(name: str) -> "str | None":
    """Why `name` is not a valid PUBLISH topic name, or None."""
    problem = _common_problem(name)
    if problem is None and ("+" in name or "#" in name):
        problem = "topic name contains a wildcard ('+' or '#')"
    return problem


def split_shared(topic_filter: str) -> "tuple[str, str] | None":
    """`$share/{group}/{filter}` as (group, filter); None for anything else."""
    if not topic_filter.startswith("$share/"):
        return None
    group, sep, inner = topic_filter[len("$share/") :].partition("/")
    if not sep or not group or "+" in group or "#" in group or not inner:
        return None
    return group, inner


def topic_filter_problem(topic_filter: str) -> "str | None":
    """Why `topic_filter` is not a valid SUBSCRIBE topic filter, or None."""
    problem = _common_problem(topic_filter)
    if problem:
        return problem
    inner = topic_filter
    if topic_filter.startswith("$share/"):
        shared = split_shared(topic_filter)
        if shared is None:
            return "a shared subscription must be $share/{group}/{filter}, the group non-empty without '/', '+' or '#'"
        inner = shared[1]
    levels = inner.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be the last level, on its own"
        if "+" in level and level != "+":
            return "'+' must be a whole level, on its own"
    return None


def filter_within(inner: str, outer: str) -> bool:
    """Whether every topic `inner` can match is also matched by `outer` (both valid filters)."""
    if topic_filter_problem(inner) or topic_filter_problem(outer):
        return False
    inner = (split_shared(inner) or (None, inner))[1]
    outer = (split_shared(outer) or (None, outer))[1]
    i, o = inner.split("/"), outer.split("/")
    for n in range(max(len(i), len(o)) + 1):
        ol = o[n] if n < len(o) else None
        il = i[n] if n < len(i) else None
        first = n == 0
        if ol == "#":
            # A leading wildcard in `outer` does not reach `$`-topics, which `inner` may name.
            return not (first and il is not None and il.startswith("$"))
        if ol == "+" and il is not None:
            if first and il.startswith("$"):
                return False
            if il == "#":
                # A leading `#` matches what `+/#` does (one level or more).
                return first and n + 1 < len(o) and o[n + 1] == "#"
            continue
        if ol is None and il is None:
            return True
        if ol is not None and ol == il and ol not in ("+", "#"):
            continue
        return False
    return False
