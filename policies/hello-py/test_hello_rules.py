"""The hello rules in Python, tested natively: `python3 -m unittest discover -s policies/hello-py`
(scripts/test.sh runs it). The same cases as the Rust rules' unit tests."""

import unittest

from hello_rules import DEFAULT_MAX_PAYLOAD, Denied, Refusal, Rules, check_subscribe, device_id


def refusal(f, *args) -> Refusal:
    try:
        f(*args)
    except Denied as d:
        return d.reason
    raise AssertionError(f"{f.__name__}{args} did not refuse")


class HelloRules(unittest.TestCase):
    def test_settings_parse_with_defaults_and_named_errors(self):
        self.assertEqual(Rules.parse("").max_payload, DEFAULT_MAX_PAYLOAD)
        self.assertEqual(Rules.parse("# comment\nmax-payload = 64 # bytes\n").max_payload, 64)
        with self.assertRaisesRegex(ValueError, "^line 2: max-payload"):
            Rules.parse("\nmax-payload = lots")
        with self.assertRaisesRegex(ValueError, "unknown setting `max-paylod`"):
            Rules.parse("max-paylod = 1")
        with self.assertRaisesRegex(ValueError, "expected `key = value`"):
            Rules.parse("max-payload")

    def test_publish_inside_own_tree_within_limit(self):
        r = Rules(max_payload=10)
        r.check_publish("d1", "devices/d1/temp", 10)
        r.check_publish("d1", "devices/d1/a/b/c", 0)
        self.assertEqual(refusal(r.check_publish, "d1", "devices/d1/temp", 11), Refusal.PACKET_TOO_LARGE)
        for other in ["devices/d2/temp", "devices/d10/temp", "devices/d1", "devices/d1x/t", "d1/temp", "$SYS/x"]:
            self.assertEqual(refusal(r.check_publish, "d1", other, 1), Refusal.NOT_AUTHORIZED, other)
        self.assertEqual(refusal(r.check_publish, "d1", "devices/d1/+", 1), Refusal.TOPIC_NAME_INVALID)
        self.assertEqual(refusal(r.check_publish, "d1", "", 1), Refusal.TOPIC_NAME_INVALID)

    def test_subscribe_only_to_own_commands(self):
        for ok in ["devices/d1/commands/#", "devices/d1/commands", "devices/d1/commands/reboot",
                   "devices/d1/commands/+/x", "devices/d1/commands/+/#"]:
            check_subscribe("d1", ok)
        for no in ["devices/d1/#", "devices/+/commands/#", "#", "devices/d2/commands/#",
                   "devices/d1/commandsx", "devices/d1/telemetry"]:
            self.assertEqual(refusal(check_subscribe, "d1", no), Refusal.NOT_AUTHORIZED, no)
        self.assertEqual(refusal(check_subscribe, "d1", "devices/d1/commands/#/x"), Refusal.TOPIC_FILTER_INVALID)

    def test_client_ids_that_are_not_one_level_are_refused(self):
        self.assertEqual(device_id("sensor-1"), "sensor-1")
        for bad in ["", "a/b", "a+", "#", "x\0"]:
            self.assertEqual(refusal(device_id, bad), Refusal.CLIENT_IDENTIFIER_NOT_VALID, repr(bad))


if __name__ == "__main__":
    unittest.main()
