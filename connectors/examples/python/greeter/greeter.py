"""greeter: a flowd connector written in Python.

It proves the connector protocol is language-neutral: it speaks hashicorp/go-plugin's handshake
and mutual TLS (AutoMTLS) as the Go SDK does, with grpcio's own TLS, serves the
flowd.connector.v1.Connector service and the gRPC health service, and exits when its parent (the
flowd host) dies. Its one action, greet, turns {"name": "Ada"} into {"message": "Hello, Ada!"}; its
polling trigger, arrivals, announces guests a few at a time, resuming from a cursor. It defines a
connection type of its own, guestbook (greeter.guestbook: a URL and a secret token), which greet
signs when its node has one.

Run `greeter describe` to print the manifest. Logs go to stderr as JSON lines in hclog's shape
(@level, @message, @timestamp), which the host re-logs under the connector's name; stdout belongs
to the handshake.
"""

import base64
import ctypes
import datetime
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from concurrent import futures

# The plugin protocol, shared with every connector (connectors/sdk/plugin.go).
MAGIC_COOKIE_KEY = "FLOWD_CONNECTOR_PLUGIN"
MAGIC_COOKIE_VALUE = "7c1e5f0a9b3d4e62a8f1c0d9e7b6a534"
CORE_PROTOCOL_VERSION = 1  # go-plugin's own handshake version
APP_PROTOCOL_VERSIONS = (1,)  # flowd connector protocols this connector speaks
PARENT_PID_ENV = "FLOWD_CONNECTOR_PARENT_PID"
MAX_MESSAGE_SIZE = 32 << 20  # sdk.MaxMessageSize: the same bound both ways

# The connection type greeter defines (MANIFEST["credentials"]); flowd names it
# "<connector>.<name>".
GUESTBOOK = "guestbook"
GUESTBOOK_TYPE = "greeter." + GUESTBOOK

# The arrivals trigger's bounds (its config schema says the same).
DEFAULT_BATCH = 3
MAX_BATCH = 100

MANIFEST = {
    "name": "greeter",
    "version": "1.1.0",
    "description": "Example connector in Python: greets someone by name.",
    "actions": {
        "greet": {
            "title": "Greet",
            "description": 'Builds "<greeting>, <name>!".',
            "configSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "properties": {"greeting": {"type": "string", "default": "Hello"}},
            },
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}},
            },
            "outputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["message"],
                "properties": {
                    "message": {"type": "string"},
                    "guestbook": {"type": "string", "description": "the guestbook signed, when the node has a guestbook connection"},
                },
            },
        }
    },
    "triggers": {
        "arrivals": {
            "title": "Arrivals",
            "description": "Guests arriving, numbered from 1: each poll returns the next `batch` guests "
            "after the cursor, up to `total` guests when it is set. Each guest is an item "
            '{"id": "guest-<n>", "number": n, "name": "Guest <n>"}, ready for greet.',
            "configSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "batch": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": DEFAULT_BATCH, "description": "guests per poll"},
                    "total": {"type": "integer", "minimum": 0, "description": "guests in all; unset: no end"},
                },
            },
            "outputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "required": ["id", "number", "name"],
                "properties": {
                    "id": {"type": "string"},
                    "number": {"type": "integer", "minimum": 1},
                    "name": {"type": "string"},
                },
            },
        }
    },
    # A connection type of its own: users create it as type "greeter.guestbook"; the token is
    # secret (encrypted by flowd, masked in its API, decrypted only for greeter's calls).
    "credentials": {
        GUESTBOOK: {
            "title": "Guestbook",
            "description": "The guestbook greet signs: its URL and the token that grants access.",
            "schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "required": ["url", "token"],
                "properties": {
                    "url": {"type": "string", "format": "uri", "description": "the guestbook's address"},
                    "token": {"type": "string", "minLength": 1, "description": "access token"},
                },
            },
            "secret": ["token"],
        }
    },
}

log = logging.getLogger("greeter")


class ItemError(Exception):
    """A failed invocation: reported in its result, with a code. Permanent unless retryable;
    retry_after_ms is the wait the called system asked for (an HTTP Retry-After), 0 for none."""

    def __init__(self, code, message, retryable=False, retry_after_ms=0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_ms = max(0, int(retry_after_ms))

    def to_proto(self, pb2):
        return pb2.Error(code=self.code, message=self.message, retryable=self.retryable, retry_after_ms=self.retry_after_ms)


class HCLogFormatter(logging.Formatter):
    """Formats records as the JSON lines go-plugin's host parses (hclog's key names)."""

    def format(self, record):
        ts = datetime.datetime.fromtimestamp(record.created).astimezone()
        line = {
            "@level": {"WARNING": "warn", "CRITICAL": "error"}.get(record.levelname, record.levelname.lower()),
            "@message": record.getMessage(),
            # The exact layout go-plugin parses; any other makes it log the raw line.
            "@timestamp": ts.isoformat(timespec="microseconds"),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging():
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HCLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get("FLOWD_LOG_LEVEL", "INFO").upper()
    root.setLevel(level if level in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR") else "INFO")


def greet(config, item, connection=None):
    """The greet action: returns the output data, or raises ItemError for bad config, input or
    connection. connection is (type, data) when the node has one: a guestbook, whose URL the
    output names (its token is a credential: never echoed)."""
    if not isinstance(config, dict):
        raise ItemError("invalid_config", "config must be an object")
    greeting = config.get("greeting") or "Hello"
    if not isinstance(greeting, str):
        raise ItemError("invalid_config", "config.greeting must be a string")
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ItemError("invalid_input", "input.name must be a non-empty string")
    out = {"message": f"{greeting}, {item['name']}!"}
    if connection is not None:
        typ, data = connection
        if typ != GUESTBOOK_TYPE:
            raise ItemError("invalid_connection", f"greet signs a {GUESTBOOK_TYPE} connection, not {typ!r}")
        if not isinstance(data, dict) or not isinstance(data.get("url"), str) or not isinstance(data.get("token"), str) or not data["token"]:
            raise ItemError("invalid_connection", "a guestbook connection has a url and a token")
        out["guestbook"] = data["url"]
    return out


def integer(config, key, default, minimum, maximum=None):
    """config[key] as an int within bounds (None or absent: default), else invalid_config."""
    value = config.get(key)
    if value is None:
        return default
    # JSON numbers like 3.0 are integers to a schema; booleans are not numbers.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ItemError("invalid_config", f"config.{key} must be an integer {bounds}, got {json.dumps(value)}")
    return value


def arrivals(config, cursor):
    """The arrivals trigger: the guests after cursor (the number of the last guest returned, as a
    decimal string; "" before the first poll) and the cursor to resume from. Raises ItemError for
    bad config or a cursor that is not this trigger's."""
    if not isinstance(config, dict):
        raise ItemError("invalid_config", "config must be an object")
    batch = integer(config, "batch", DEFAULT_BATCH, 1, MAX_BATCH)
    total = integer(config, "total", None, 0)
    if cursor == "":
        last = 0
    elif cursor.isascii() and cursor.isdigit():
        last = int(cursor)
    else:
        raise ItemError("invalid_cursor", f"cursor {cursor[:40]!r} is not this trigger's: want the number of the last guest")
    end = last + batch if total is None else min(last + batch, total)
    items = [{"id": f"guest-{n}", "number": n, "name": f"Guest {n}"} for n in range(last + 1, end + 1)]
    # Nothing new keeps the cursor as it was.
    return items, (str(items[-1]["number"]) if items else cursor)


TRIGGERS = {"arrivals": arrivals}


def decode(data, default):
    """Decodes a JSON payload; an absent or null document is the default."""
    if not data:
        return default
    value = json.loads(data)
    return default if value is None else value


def make_servicer(pb2, pb2_grpc):
    class Connector(pb2_grpc.ConnectorServicer):
        def Describe(self, request, context):
            return pb2.DescribeResponse(manifest_json=json.dumps(MANIFEST).encode())

        def Execute(self, request, context):
            # A failing item is reported in its own result; the batch as a whole succeeds.
            return pb2.ExecuteResponse(results=[self._run(inv, pb2) for inv in request.invocations])

        def Poll(self, request, context):
            # A failed poll is reported in the response's error, never as a gRPC error.
            trigger = TRIGGERS.get(request.trigger)
            if trigger is None:
                return pb2.PollResponse(error=pb2.Error(code="unknown_trigger", message=f"connector greeter has no trigger {request.trigger!r}"))
            try:
                config = decode(request.config_json, {})
            except ValueError as e:  # json.JSONDecodeError
                return pb2.PollResponse(error=pb2.Error(code="invalid_json", message=str(e)))
            try:
                items, cursor = trigger(config, request.cursor)
            except ItemError as e:
                return pb2.PollResponse(error=e.to_proto(pb2))
            except Exception as e:
                log.exception("poll failed", extra={"fields": {"trigger": request.trigger}})
                return pb2.PollResponse(error=pb2.Error(code="panic", message=f"{request.trigger} failed: {e}"))
            return pb2.PollResponse(items_json=[json.dumps(item).encode() for item in items], cursor=cursor)

        @staticmethod
        def _run(inv, pb2):
            result = pb2.Result(id=inv.id)
            if inv.action != "greet":
                result.error.CopyFrom(pb2.Error(code="unknown_action", message=f"connector greeter has no action {inv.action!r}"))
                return result
            try:
                config = decode(inv.config_json, {})
                item = decode(inv.input_json, None)
                connection = (inv.connection.type, decode(inv.connection.data_json, {})) if inv.HasField("connection") else None
            except ValueError as e:  # json.JSONDecodeError
                result.error.CopyFrom(pb2.Error(code="invalid_json", message=str(e)))
                return result
            try:
                data = greet(config, item, connection)
            except ItemError as e:
                result.error.CopyFrom(e.to_proto(pb2))
                return result
            except Exception as e:  # a bug here fails this item, never the batch
                log.exception("greet failed", extra={"fields": {"execution": inv.execution_id, "node": inv.node_id}})
                result.error.CopyFrom(pb2.Error(code="panic", message=f"greet failed: {e}"))
                return result
            result.outputs.append(pb2.Output(data_json=json.dumps(data).encode()))
            return result

    return Connector()


def generate_cert():
    """A self-signed cert and key for AutoMTLS, shaped like go-plugin's generateCert (mtls.go) but
    ECDSA P-256, which gRPC's TLS (BoringSSL) supports: CN and DNS name localhost (the host
    verifies that name), client and server auth, a CA so the host can trust it directly.
    Returns (cert PEM, key PEM, cert DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1)
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + datetime.timedelta(hours=262980))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert.public_bytes(serialization.Encoding.DER)


def add_go_plugin_services(server, stopping, shutdown):
    """go-plugin's own services, registered by hand (no stubs needed: their messages are empty
    or never sent). GRPCController.Shutdown is how the host asks a plugin to exit; GRPCStdio is
    answered with an idle stream so the host does not warn that stdio syncing is unavailable
    (logs reach it through stderr anyway)."""
    import grpc

    def shutdown_rpc(_request, _context):
        threading.Thread(target=shutdown, name="shutdown", daemon=True).start()
        return b""  # plugin.Empty

    def stream_stdio(_request, context):
        while context.is_active() and not stopping.wait(1.0):
            pass
        return
        yield  # a generator that sends nothing

    identity = lambda b: b  # noqa: E731
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("plugin.GRPCController", {
            "Shutdown": grpc.unary_unary_rpc_method_handler(shutdown_rpc, request_deserializer=identity, response_serializer=identity),
        }),
        grpc.method_handlers_generic_handler("plugin.GRPCStdio", {
            "StreamStdio": grpc.unary_stream_rpc_method_handler(stream_stdio, request_deserializer=identity, response_serializer=identity),
        }),
    ))


def choose_protocol_version():
    """The highest protocol both sides speak, as go-plugin's server picks it. Without a match
    ours is announced anyway, so the host reports the mismatch with both versions."""
    offered = []
    for v in os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "").split(","):
        try:
            offered.append(int(v))
        except ValueError:
            if v:
                log.warning("host sent an invalid protocol version", extra={"fields": {"version": v}})
    common = sorted(set(offered) & set(APP_PROTOCOL_VERSIONS))
    if offered and not common:
        log.error("no common protocol version", extra={"fields": {"host": offered, "connector": list(APP_PROTOCOL_VERSIONS)}})
    return common[-1] if common else max(APP_PROTOCOL_VERSIONS)


def die_with_parent():
    """Exit when the host dies, so no connector outlives it: the kernel's parent-death signal
    where there is one, and a watchdog on the parent pid that also covers the host dying before
    we asked."""
    try:
        parent = int(os.environ.get(PARENT_PID_ENV, ""))
    except ValueError:
        parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                log.warning("prctl PR_SET_PDEATHSIG failed: relying on the parent watchdog")
        except OSError:
            log.warning("prctl unavailable: relying on the parent watchdog")

    def watch():
        while True:
            if os.getppid() != parent:
                log.warning("parent process is gone: exiting", extra={"fields": {"parent": parent}})
                os._exit(1)
            time.sleep(0.5)

    watch_thread = threading.Thread(target=watch, name="parent-watchdog", daemon=True)
    watch_thread.start()
    if os.getppid() != parent:
        log.warning("parent process is gone: exiting", extra={"fields": {"parent": parent}})
        os._exit(1)


def serve():
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    import connector_pb2
    import connector_pb2_grpc

    die_with_parent()
    # The host's certificate, PEM. The host refuses a connector that serves without TLS.
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "")
    if not client_cert:
        log.error("PLUGIN_CLIENT_CERT not set: the host passes its certificate there")
        return 1
    # Like go-plugin's servers: a Ctrl-C in the host's terminal is the host's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    version = choose_protocol_version()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
            ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
            ("grpc.so_reuseport", 0),
        ],
    )
    stopping = threading.Event()

    def shutdown():
        if not stopping.is_set():
            stopping.set()
            log.info("shutting down")
            server.stop(grace=2)

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=shutdown, daemon=True).start())

    connector_pb2_grpc.add_ConnectorServicer_to_server(make_servicer(connector_pb2, connector_pb2_grpc), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)  # go-plugin's name
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_go_plugin_services(server, stopping, shutdown)

    # AutoMTLS: we answer with our certificate in the handshake and accept only connections
    # presenting the host's.
    cert_pem, key_pem, cert_der = generate_cert()
    creds = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=client_cert.encode(), require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    if not port:
        log.error("could not listen on 127.0.0.1")
        return 1
    server.start()

    # The handshake is the first line on stdout; after it stdout is of no use to the host, so
    # stray prints go to stderr. go-plugin decodes the certificate field with
    # base64.RawStdEncoding: standard alphabet, no padding.
    cert_field = base64.b64encode(cert_der).decode().rstrip("=")
    sys.stdout.write(f"{CORE_PROTOCOL_VERSION}|{version}|tcp|127.0.0.1:{port}|grpc|{cert_field}\n")
    sys.stdout.flush()
    sys.stdout = sys.stderr
    log.info("serving", extra={"fields": {"port": port, "protocol": version}})
    server.wait_for_termination()
    return 0


def main(argv):
    setup_logging()
    if argv[:1] == ["describe"]:
        sys.stdout.write(json.dumps(MANIFEST, indent=2) + "\n")
        return 0
    if argv:
        sys.stderr.write("usage: greeter [describe]\n\ngreeter is a flowd connector: the flowd runners start it as a plugin.\ndescribe prints its manifest as JSON.\n")
        return 2
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        sys.stderr.write(
            "This binary is a plugin. These are not meant to be executed directly.\n"
            "Please execute the program that consumes these plugins, which will\n"
            "load any plugins automatically\n"
        )
        return 1
    try:
        return serve()
    except Exception:
        # One JSON record the host logs as an error, rather than a traceback line by line.
        log.exception("greeter failed")
        return 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    sys.exit(main(sys.argv[1:]))
