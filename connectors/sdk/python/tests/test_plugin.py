"""serve() in a process of its own, as the host runs it: describe, the refusals, and the plugin
protocol end to end (handshake line, mutual TLS, the Connector service, shutdown)."""

import base64
import json
import os
import queue
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flowd_connector import _plugin
from flowd_connector import connector_pb2 as pb2
from flowd_connector import connector_pb2_grpc

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONNECTOR = textwrap.dedent('''
    import sys
    from flowd_connector import ItemError, serve

    MANIFEST = {"name": "sample", "version": "1.0.0",
                "actions": {"echo": {"title": "Echo"}}, "triggers": {"count": {"title": "Count"}}}

    def echo(config, input, connection):
        print("a stray print")  # must not reach the handshake's stdout
        if input is None:
            raise ItemError("invalid_input", "input missing")
        return {"echo": input, "connection": connection}

    def count(config, cursor, connection):
        return [{"n": 1}], "1"

    serve(MANIFEST if sys.argv[1:] != ["bad"] else {}, {"echo": echo}, {"count": count})
''')


class PluginTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.script = os.path.join(tmp.name, "sample.py")
        with open(self.script, "w") as f:
            f.write(CONNECTOR)
        self.env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": PACKAGE_ROOT, "PYTHONDONTWRITEBYTECODE": "1"}

    def run_connector(self, *args, env=None):
        return subprocess.run([sys.executable, self.script, *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=60)

    def test_describe(self):
        res = self.run_connector("describe")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(json.loads(res.stdout)["name"], "sample")

    def test_refusals(self):
        res = self.run_connector()
        self.assertEqual(res.returncode, 1)
        self.assertIn("This binary is a plugin", res.stderr)
        res = self.run_connector("extra")
        self.assertEqual(res.returncode, 2)
        self.assertIn("usage: sample [describe]", res.stderr)
        res = self.run_connector("bad")
        self.assertEqual(res.returncode, 2)
        self.assertIn("manifest", res.stderr)
        cookie = {_plugin.MAGIC_COOKIE_KEY: _plugin.MAGIC_COOKIE_VALUE, _plugin.PARENT_PID_ENV: str(os.getpid())}
        res = self.run_connector(env=cookie)  # no PLUGIN_CLIENT_CERT: no plaintext fallback
        self.assertEqual((res.returncode, res.stdout), (1, ""))
        self.assertIn(_plugin.CLIENT_CERT_ENV, res.stderr)

    def test_serves_the_host(self):
        host_cert, host_key, _ = _plugin.generate_cert()  # the host's certificate has this shape
        proc = subprocess.Popen(
            [sys.executable, self.script],
            env={**self.env, _plugin.MAGIC_COOKIE_KEY: _plugin.MAGIC_COOKIE_VALUE,
                 _plugin.PARENT_PID_ENV: str(os.getpid()), "PLUGIN_PROTOCOL_VERSIONS": "1",
                 _plugin.CLIENT_CERT_ENV: host_cert.decode()},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.wait, 30)
        self.addCleanup(proc.kill)
        stderr = []
        threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        line = lines.get(timeout=30)

        core, app, network, address, protocol, cert = line.rstrip("\n").split("|")
        self.assertEqual((core, app, network, protocol), ("1", "1", "tcp", "grpc"), line)
        self.assertTrue(address.startswith("127.0.0.1:"), line)
        der = base64.b64decode(cert + "=" * (-len(cert) % 4))
        server_pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)

        creds = grpc.ssl_channel_credentials(root_certificates=server_pem, private_key=host_key, certificate_chain=host_cert)
        with grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
            stub = connector_pb2_grpc.ConnectorStub(channel)
            manifest = json.loads(stub.Describe(pb2.DescribeRequest(), timeout=30).manifest_json)
            self.assertEqual(manifest["name"], "sample")

            resp = stub.Execute(pb2.ExecuteRequest(invocations=[
                pb2.Invocation(id="a", action="echo", input_json=b'{"x": 1}',
                               connection=pb2.Connection(type="bearer", data_json=b'{"token": "t"}')),
                pb2.Invocation(id="b", action="echo"),
                pb2.Invocation(id="c", action="wave"),
            ]), timeout=30)
            a, b, c = resp.results
            self.assertEqual([r.id for r in resp.results], ["a", "b", "c"])
            self.assertFalse(a.HasField("error"))
            self.assertEqual([(o.port, json.loads(o.data_json)) for o in a.outputs],
                             [("", {"echo": {"x": 1}, "connection": {"type": "bearer", "data": {"token": "t"}}})])
            self.assertEqual((b.error.code, c.error.code), ("invalid_input", "unknown_action"))

            polled = stub.Poll(pb2.PollRequest(trigger="count"), timeout=30)
            self.assertEqual(([json.loads(i) for i in polled.items_json], polled.cursor), ([{"n": 1}], "1"))
            self.assertEqual(stub.Poll(pb2.PollRequest(trigger="tick"), timeout=30).error.code, "unknown_trigger")

            # go-plugin's GRPCController.Shutdown: the connector exits.
            channel.unary_unary("/plugin.GRPCController/Shutdown")(b"", timeout=30)
        self.assertEqual(proc.wait(timeout=30), 0)
        self.assertEqual(proc.stdout.read(), "", "stdout after the handshake")
        self.assertIn("a stray print", "".join(stderr))


if __name__ == "__main__":
    unittest.main()
