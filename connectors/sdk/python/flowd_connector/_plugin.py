"""The plugin side of hashicorp/go-plugin's protocol, as the flowd host speaks it: the handshake
line, mutual TLS (AutoMTLS) with grpcio's own TLS, the Connector and health services, protocol
version negotiation, and exiting with the host. The Go SDK's counterpart is connectors/sdk."""

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

from ._dispatch import Handlers
from ._log import setup_logging
from ._types import ItemError

# Shared with every connector (connectors/sdk/plugin.go).
MAGIC_COOKIE_KEY = "FLOWD_CONNECTOR_PLUGIN"
MAGIC_COOKIE_VALUE = "7c1e5f0a9b3d4e62a8f1c0d9e7b6a534"
CORE_PROTOCOL_VERSION = 1  # go-plugin's own handshake version
APP_PROTOCOL_VERSIONS = (1,)  # flowd connector protocols this package speaks
PARENT_PID_ENV = "FLOWD_CONNECTOR_PARENT_PID"
CLIENT_CERT_ENV = "PLUGIN_CLIENT_CERT"
MAX_MESSAGE_SIZE = 32 << 20  # sdk.MaxMessageSize: the same bound both ways
LISTEN_HOST = "127.0.0.1"

log = logging.getLogger("flowd_connector")


def main(manifest: dict, actions: dict | None, triggers: dict | None, argv: list[str]) -> int:
    """`describe` prints the manifest; no argument serves the host. The exit status."""
    setup_logging()
    try:
        handlers = Handlers(manifest, actions or {}, triggers or {})
    except ValueError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    if argv == ["describe"]:
        sys.stdout.write(json.dumps(manifest, indent=2) + "\n")
        sys.stdout.flush()
        return 0
    if argv:
        sys.stderr.write(
            f"usage: {handlers.name} [describe]\n\n{handlers.name} is a flowd connector: the flowd runners start it "
            "as a plugin.\ndescribe prints its manifest as JSON.\n"
        )
        return 2
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        # go-plugin's own words, so a person who runs it by hand learns what it is.
        sys.stderr.write(
            "This binary is a plugin. These are not meant to be executed directly.\n"
            "Please execute the program that consumes these plugins, which will\n"
            "load any plugins automatically\n"
        )
        return 1
    try:
        return serve_plugin(handlers)
    except Exception:
        # One JSON record the host logs as an error, rather than a traceback line by line.
        log.exception(f"{handlers.name} failed")
        return 1


def serve_plugin(handlers: Handlers) -> int:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from . import connector_pb2_grpc

    handshake_out = take_stdout()
    die_with_parent()
    # The host's certificate, PEM. The host refuses a connector that serves without TLS.
    client_cert = os.environ.get(CLIENT_CERT_ENV, "")
    if not client_cert:
        log.error(f"{CLIENT_CERT_ENV} not set: the host passes its certificate there")
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

    connector_pb2_grpc.add_ConnectorServicer_to_server(make_servicer(handlers), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)  # go-plugin's name
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_go_plugin_services(server, stopping, shutdown)

    # AutoMTLS: we answer with our certificate in the handshake and accept only connections
    # presenting the host's.
    cert_pem, key_pem, cert_der = generate_cert()
    creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_cert.encode(), require_client_auth=True)
    # TCP on loopback: go-plugin's host accepts tcp as well as unix in the handshake, and grpcio
    # serves TLS on either; the Go SDK announces a unix socket.
    port = server.add_secure_port(f"{LISTEN_HOST}:0", creds)
    if not port:
        log.error(f"could not listen on {LISTEN_HOST}")
        return 1
    server.start()

    # go-plugin decodes the certificate field with base64.RawStdEncoding: standard alphabet, no
    # padding.
    cert_field = base64.b64encode(cert_der).decode().rstrip("=")
    handshake_out.write(f"{CORE_PROTOCOL_VERSION}|{version}|tcp|{LISTEN_HOST}:{port}|grpc|{cert_field}\n")
    handshake_out.close()
    log.info("serving", extra={"fields": {"port": port, "protocol": version}})
    server.wait_for_termination()
    return 0


def take_stdout():
    """Stdout belongs to the handshake, its first line and nothing else (go-plugin drops what
    follows). The returned file is the only way to it: from here on file descriptor 1 and
    sys.stdout are stderr, so a stray print, or a child process's output, reaches the host's logs
    rather than the handshake."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def make_servicer(handlers: Handlers):
    from . import connector_pb2 as pb2
    from . import connector_pb2_grpc

    def proto_error(e: ItemError):
        return pb2.Error(code=e.code, message=e.message, retryable=e.retryable, retry_after_ms=e.retry_after_ms)

    def wire_connection(msg):
        return (msg.connection.type, msg.connection.data_json) if msg.HasField("connection") else None

    class Connector(connector_pb2_grpc.ConnectorServicer):
        def Describe(self, request, context):
            return pb2.DescribeResponse(manifest_json=handlers.manifest_json)

        def Execute(self, request, context):
            # A failing item is reported in its own result; the batch as a whole succeeds.
            return pb2.ExecuteResponse(results=[self._run(inv) for inv in request.invocations])

        def Poll(self, request, context):
            # A failed poll is reported in the response's error, never as a gRPC error.
            try:
                items, cursor = handlers.poll(request.trigger, request.config_json, request.cursor,
                                              wire_connection(request))
            except ItemError as e:
                return pb2.PollResponse(error=proto_error(e))
            return pb2.PollResponse(items_json=items, cursor=cursor)

        @staticmethod
        def _run(inv):
            result = pb2.Result(id=inv.id)
            try:
                outs = handlers.execute(inv.action, inv.config_json, inv.input_json, wire_connection(inv),
                                        {"execution": inv.execution_id, "node": inv.node_id})
            except ItemError as e:
                result.error.CopyFrom(proto_error(e))
                return result
            result.outputs.extend(pb2.Output(port=port, data_json=data) for port, data in outs)
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
    we asked (and the signal firing only when the forking thread exits)."""
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
        except (OSError, AttributeError):
            log.warning("prctl unavailable: relying on the parent watchdog")

    def gone():
        log.warning("parent process is gone: exiting", extra={"fields": {"parent": parent}})
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)  # polling the parent: there is nothing to wait on
        gone()

    if os.getppid() != parent:
        gone()
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
