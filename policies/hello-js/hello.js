// The hello policy in JavaScript: the same rules as `policies/hello/src/rules.rs`, exported as
// the WIT world `policy` of the repository's one `wit/policy.wit` (componentize-js generates
// the bindings from it at build time: `scripts/build-lang-policies.sh`).
//
// - A device connects with a client id that is a valid single topic level; it becomes the device id.
// - It may publish under `devices/{device}/#`, up to `max-payload` bytes (settings).
// - It may subscribe to its own commands, `devices/{device}/commands/#` or anything narrower.
//
// WIT to JavaScript: functions and record fields in camelCase, enums as their WIT names
// ('not-authorized'), variants as `{ tag, val }`, `option` as a value or `undefined`,
// `result<_, string>` as a return (ok) or a thrown string (err), u64 as BigInt.

import { cacheDecision } from 'mqtt-policy:policy/host@0.2.0';

/** Payload limit when the settings name none (the IBM Watson IoT limit). */
const DEFAULT_MAX_PAYLOAD = 131072;
/** Longest topic the protocol can carry (a UTF-8 string with a 16-bit length). */
const MAX_TOPIC_LEN = 65535;

let maxPayload = DEFAULT_MAX_PAYLOAD;
/** Per session id (a BigInt), the device connected under it. */
const devices = new Map();

/** Parses `key = value` lines; `#` starts a comment. Known key: `max-payload`. */
function parseSettings(settings) {
  let max = DEFAULT_MAX_PAYLOAD;
  settings.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.split('#')[0].trim();
    if (line === '') return;
    const eq = line.indexOf('=');
    if (eq < 0) throw `line ${i + 1}: expected \`key = value\`, found \`${line}\``;
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (key !== 'max-payload') throw `line ${i + 1}: unknown setting \`${key}\` (known: max-payload)`;
    if (!/^[0-9]+$/.test(value) || Number(value) > 0xffffffff) {
      throw `line ${i + 1}: max-payload must be a whole number of bytes, found \`${value}\``;
    }
    max = Number(value);
  });
  return { maxPayload: max };
}

const deny = (reason, message) => ({ tag: 'deny', val: { reason, message, disconnect: false } });

export function validateSettings(settings) {
  maxPayload = parseSettings(settings).maxPayload;
}

export function authenticate(session, c) {
  const id = c.clientId;
  if (id === '') {
    return { tag: 'reject', val: { reason: 'client-identifier-not-valid', message: 'client identifier cannot be empty', disconnect: false } };
  }
  if (/[/+#\0]/.test(id)) {
    const message = `client identifier \`${id}\` cannot contain '/', '+', '#' or NUL`;
    return { tag: 'reject', val: { reason: 'client-identifier-not-valid', message, disconnect: false } };
  }
  devices.set(session, id);
  return { tag: 'accept', val: { deviceId: id, attributes: [], expiresAtMs: undefined } };
}

export function authorizePublish(session, p) {
  const device = devices.get(session);
  const problem = topicNameProblem(p.topic);
  if (problem) return deny('topic-name-invalid', `invalid topic: ${problem}`);
  if (!p.topic.startsWith(`devices/${device}/`)) return deny('not-authorized', `unauthorized topic ${p.topic}`);
  if (p.payloadSize > maxPayload) {
    return deny('packet-too-large', `message payload is too large (${p.payloadSize} bytes, limit ${maxPayload})`);
  }
  // The allow depends only on the session's device, the topic and a payload within the limit:
  // the host may answer repeats itself, without calling the policy.
  cacheDecision(maxPayload);
  return { tag: 'allow' };
}

export function authorizeSubscribe(session, s) {
  const device = devices.get(session);
  const problem = topicFilterProblem(s.filter);
  if (problem) return deny('topic-filter-invalid', `invalid topic filter: ${problem}`);
  if (!filterWithin(s.filter, `devices/${device}/commands/#`)) {
    return deny('not-authorized', `unauthorized topic filter ${s.filter}`);
  }
  return { tag: 'grant', val: Math.min(s.qos, 1) };
}

export function authorizeDelivery(_session, _d) {
  return { tag: 'allow' };
}

export function endSession(session) {
  devices.delete(session);
}

// MQTT topic names and filters (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7), as the Rust SDK's `topic` module.

function commonProblem(s) {
  if (s === '') return 'topic is empty';
  if (new TextEncoder().encode(s).length > MAX_TOPIC_LEN) return 'topic is longer than 65535 bytes';
  if (s.includes('\0')) return 'topic contains the null character U+0000';
  return undefined;
}

/** Why `name` is not a valid PUBLISH topic name, or undefined. */
function topicNameProblem(name) {
  const problem = commonProblem(name);
  if (problem) return problem;
  if (/[+#]/.test(name)) return "topic name contains a wildcard ('+' or '#')";
  return undefined;
}

/** `$share/{group}/{filter}` as [group, filter]; undefined for anything else. */
function splitShared(filter) {
  if (!filter.startsWith('$share/')) return undefined;
  const rest = filter.slice('$share/'.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return undefined;
  const group = rest.slice(0, slash);
  const inner = rest.slice(slash + 1);
  if (group === '' || /[+#]/.test(group) || inner === '') return undefined;
  return [group, inner];
}

/** Why `filter` is not a valid SUBSCRIBE topic filter, or undefined. */
function topicFilterProblem(filter) {
  const problem = commonProblem(filter);
  if (problem) return problem;
  let inner = filter;
  if (filter.startsWith('$share/')) {
    const shared = splitShared(filter);
    if (!shared) {
      return "a shared subscription must be $share/{group}/{filter}, the group non-empty without '/', '+' or '#'";
    }
    inner = shared[1];
  }
  const levels = inner.split('/');
  for (const [i, level] of levels.entries()) {
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return "'#' must be the last level, on its own";
    if (level.includes('+') && level !== '+') return "'+' must be a whole level, on its own";
  }
  return undefined;
}

/** Whether every topic `inner` can match is also matched by `outer` (both valid filters). */
function filterWithin(inner, outer) {
  if (topicFilterProblem(inner) || topicFilterProblem(outer)) return false;
  const i = (splitShared(inner) ?? [undefined, inner])[1].split('/');
  const o = (splitShared(outer) ?? [undefined, outer])[1].split('/');
  for (let n = 0; ; n++) {
    const ol = o[n];
    const il = i[n];
    const first = n === 0;
    // A leading wildcard in `outer` does not reach `$`-topics, which `inner` may name.
    if (ol === '#') return !(first && il !== undefined && il.startsWith('$'));
    if (ol === '+' && il !== undefined) {
      if (first && il.startsWith('$')) return false;
      // A leading `#` matches what `+/#` does (one level or more).
      if (il === '#') return first && o[n + 1] === '#';
      continue;
    }
    if (ol === undefined && il === undefined) return true;
    if (ol !== undefined && ol === il) continue;
    return false;
  }
}
