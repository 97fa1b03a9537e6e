"""The handlers' contract, through flowd_connector.testing, which runs them as serve does."""

import unittest

from flowd_connector import ItemError, Output, PollResult
from flowd_connector.testing import invoke, poll

MANIFEST = {
    "name": "sample",
    "version": "1.0.0",
    "actions": {
        "echo": {"title": "Echo"},
        "route": {"title": "Route", "ports": ["odd"]},
    },
    "triggers": {"count": {"title": "Count"}},
}


def echo(config, input, connection):
    if input == "boom":
        raise RuntimeError("boom")
    if input == "later":
        raise ItemError("rate_limited", "slow down", retryable=True, retry_after_ms=1500)
    if input == "nothing":
        return None
    if input == "many":
        return [{"n": 1}, Output({"n": 2})]
    if input == "array":
        return Output([1, 2])
    if input == "nan":
        return {"x": float("nan")}
    if input == "object":
        return {"x": object()}
    return {"config": config, "input": input, "connection": connection}


def route(config, input, connection):
    return Output(input, "odd" if input % 2 else "even")


ACTIONS = {"echo": echo, "route": route}


def count(config, cursor, connection):
    if cursor == "bad":
        raise ItemError("invalid_cursor", "not mine")
    if cursor == "wrong":
        return ["a"]
    if cursor == "result":
        return PollResult([{"n": 1}], "r")
    last = int(cursor or 0)
    end = min(last + 2, config.get("total", 5))
    return [{"n": n} for n in range(last + 1, end + 1)], str(end)


TRIGGERS = {"count": count}


class InvokeTest(unittest.TestCase):
    def call(self, input, config=None, connection=None, action="echo"):
        return invoke(MANIFEST, ACTIONS, action, config, input, connection)

    def error(self, input, **kwargs):
        with self.assertRaises(ItemError) as caught:
            self.call(input, **kwargs)
        return caught.exception

    def test_one_output(self):
        outs = self.call({"name": "Ada"}, config={"k": 1})
        self.assertEqual(outs, [Output({"config": {"k": 1}, "input": {"name": "Ada"}, "connection": None})])

    def test_defaults(self):
        # Unset config is {}, unset input None: as the host sends them.
        self.assertEqual(self.call(None), [Output({"config": {}, "input": None, "connection": None})])

    def test_connection(self):
        conn = {"type": "bearer", "data": {"token": "t"}}
        self.assertEqual(self.call(1, connection=conn)[0].data["connection"], conn)

    def test_outputs(self):
        self.assertEqual(self.call("nothing"), [])
        self.assertEqual(self.call("many"), [Output({"n": 1}), Output({"n": 2})])
        self.assertEqual(self.call("array"), [Output([1, 2])])

    def test_ports(self):
        self.assertEqual(self.call(3, action="route"), [Output(3, "odd")])
        e = self.error(4, action="route")
        self.assertEqual((e.code, e.retryable), ("invalid_output", False))
        self.assertIn("'even'", e.message)

    def test_item_error(self):
        e = self.error("later")
        self.assertEqual((e.code, e.message, e.retryable, e.retry_after_ms), ("rate_limited", "slow down", True, 1500))

    def test_exception_is_a_permanent_panic(self):
        with self.assertLogs("flowd_connector", "ERROR"):
            e = self.error("boom")
        self.assertEqual((e.code, e.retryable), ("panic", False))
        self.assertIn("boom", e.message)

    def test_unencodable_output(self):
        for input in ("nan", "object"):
            with self.subTest(input=input):
                self.assertEqual(self.error(input).code, "invalid_output")

    def test_config_must_be_an_object(self):
        self.assertEqual(self.error(1, config=[1]).code, "invalid_config")

    def test_unknown_action(self):
        with self.assertRaises(ItemError) as caught:
            invoke(MANIFEST, ACTIONS, "wave")
        self.assertEqual(caught.exception.code, "unknown_action")

    def test_handlers_must_match_the_manifest(self):
        for actions in ({"echo": echo}, {**ACTIONS, "wave": echo}, {"echo": echo, "route": "route"}):
            with self.subTest(actions=sorted(actions)), self.assertRaises(ValueError):
                invoke(MANIFEST, actions, "echo")
        with self.assertRaises(ValueError):
            invoke({"version": "1.0.0"}, {}, "echo")


class PollTest(unittest.TestCase):
    def test_resumes_from_the_cursor(self):
        got, cursor = [], ""
        for want in ([1, 2], [3, 4], [5], []):
            res = poll(MANIFEST, TRIGGERS, "count", {}, cursor)
            self.assertEqual([item["n"] for item in res.items], want)
            got.extend(res.items)
            cursor = res.cursor
        self.assertEqual(cursor, "5")

    def test_poll_result(self):
        self.assertEqual(poll(MANIFEST, TRIGGERS, "count", {}, "result"), PollResult([{"n": 1}], "r"))

    def test_errors(self):
        for trigger, cursor, code in (("count", "bad", "invalid_cursor"), ("count", "wrong", "invalid_output"),
                                      ("tick", "", "unknown_trigger")):
            with self.subTest(cursor=cursor), self.assertRaises(ItemError) as caught:
                poll(MANIFEST, TRIGGERS, trigger, {}, cursor)
            self.assertEqual(caught.exception.code, code)


if __name__ == "__main__":
    unittest.main()
