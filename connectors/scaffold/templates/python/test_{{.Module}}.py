"""Unit tests of the {{.Name}} connector's handlers: `python -m unittest` in this directory. They
run in process, as serve runs them, without the flowd host."""

import unittest

from flowd_connector import ItemError, Output
from flowd_connector.testing import invoke, poll

import {{.Module}} as connector


class EchoTest(unittest.TestCase):
    def test_prefixes_the_text(self):
        outs = invoke(connector.MANIFEST, connector.ACTIONS, "echo", {"prefix": "> "}, {"text": "hi"})
        self.assertEqual(outs, [Output({"message": "> hi"})])

    def test_prefix_is_optional(self):
        outs = invoke(connector.MANIFEST, connector.ACTIONS, "echo", {}, {"text": "hi"})
        self.assertEqual(outs, [Output({"message": "hi"})])

    def test_signs_with_an_account(self):
        account = {"type": "{{.Name}}.account", "data": {"user": "ada", "token": "t0k"}}
        outs = invoke(connector.MANIFEST, connector.ACTIONS, "echo", {}, {"text": "hi"}, account)
        self.assertEqual(outs, [Output({"message": "hi (from ada)"})])

    def test_input_without_text_is_a_permanent_error(self):
        with self.assertRaises(ItemError) as caught:
            invoke(connector.MANIFEST, connector.ACTIONS, "echo", {}, {"txt": "hi"})
        self.assertEqual((caught.exception.code, caught.exception.retryable), ("invalid_input", False))


class TicksTest(unittest.TestCase):
    def test_counts_to_the_total_from_the_cursor(self):
        cursor = ""
        for want in (["tick-1", "tick-2"], ["tick-3", "tick-4"], ["tick-5"], []):
            res = poll(connector.MANIFEST, connector.TRIGGERS, "ticks", {"total": 5, "batch": 2}, cursor)
            self.assertEqual([item["id"] for item in res.items], want)
            cursor = res.cursor
        self.assertEqual(cursor, "5")

    def test_ticks_are_echo_inputs(self):
        item = poll(connector.MANIFEST, connector.TRIGGERS, "ticks", {"total": 1}).items[0]
        outs = invoke(connector.MANIFEST, connector.ACTIONS, "echo", {"prefix": "got "}, item)
        self.assertEqual(outs, [Output({"message": "got tick 1"})])

    def test_errors(self):
        for config, cursor, code in (({"total": 5}, "nope", "invalid_cursor"), ({}, "", "invalid_config")):
            with self.subTest(config=config, cursor=cursor), self.assertRaises(ItemError) as caught:
                poll(connector.MANIFEST, connector.TRIGGERS, "ticks", config, cursor)
            self.assertEqual(caught.exception.code, code)


if __name__ == "__main__":
    unittest.main()
