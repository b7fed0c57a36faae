"""SMTP email adapter and transport: the request the adapter builds, the SMTP dialogue it drives
(against the in-process sink), how SMTP replies and broken connections classify, TLS, and
gw.email end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import socket
import ssl
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from providers import Attachment, Email
from providers.email.smtp import AsyncSmtpTransport, SmtpTransport
from resilient.config import settings_from_mapping
from resilient.errors import AmbiguousOutcome, ChainExhausted, FatalError, InvalidRequest
from resilient.gateway import Gateway
from resilient.testing import Simulator
from resilient.testing.routes import postmark as postmark_routes
from resilient.testing.smtp_sink import SmtpFault, SmtpSink
from tests.conftest import receipt
from tests.conftest import send_message as send

FULL = Email(
    sender="Shop <shop@example.com>",
    to=["Doe, Jane <jane@example.org>", "bob@example.org"],
    cc=["carol@example.org"],
    bcc=["audit@example.com"],
    reply_to="help@example.com",
    subject="Your order",
    text="Thanks!\n.a line that starts with a dot",
    html="<p>Thanks!</p>",
    attachments=[Attachment("receipt.pdf", b"%PDF-1.7\x00\xff", "application/pdf")],
    headers={"X-Order": "42"},
    tags=["orders"],
    metadata={"order_id": "42"},
    idempotency_key="order-42-receipt",
)
USERS = {"app": "s3cret-password"}
STARTTLS_SINK = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the sink's STARTTLS needs StreamWriter.start_tls"
)


def smtp(port: int | None, **options: Any) -> dict[str, Any]:
    table = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "security": "none",
        "username": "app",
        "api_key": USERS["app"],
        "local_hostname": "client.test",
        "retry": {"attempts": 2, "backoff": "10ms..20ms"},
        "timeout": {"connect": "500ms", "attempt": "500ms"},
        **options,
    }
    if port is not None:
        table["port"] = port
    return table


def settings(chain: list[str], **providers: dict[str, Any]) -> Any:
    return settings_from_mapping(
        {"providers": providers, "capabilities": {"email": {"chain": chain}}}
    )


def gateway(port: int, context: ssl.SSLContext | None = None, **options: Any) -> Gateway:
    """An smtp-only gateway whose transports the test configures (TLS context, hostname)."""
    return Gateway(
        settings(["smtp"], smtp=smtp(port, **options)),
        transport=SmtpTransport(ssl_context=context, local_hostname="client.test"),
        async_transport=AsyncSmtpTransport(ssl_context=context, local_hostname="client.test"),
    )


def email(**changes: Any) -> Email:
    return dataclasses.replace(FULL, idempotency_key=f"op-{uuid.uuid4().hex}", **changes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(users=USERS) as server:
        yield server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext, Path]:
    """(server context, client context, CA file) for a self-signed 127.0.0.1 certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp-sink.test")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file)), cert_file


# -- the request the adapter builds ------------------------------------------------------------


@pytest.mark.parametrize(
    ("security", "port", "url"),
    [
        ("starttls", None, "smtp+tls://mail.example.com:587"),
        ("ssl", None, "smtp+ssl://mail.example.com:465"),
        ("none", None, "smtp://mail.example.com:25"),
        ("starttls", 2525, "smtp+tls://mail.example.com:2525"),
    ],
)
def test_request_names_the_server_and_its_security(
    security: str, port: int | None, url: str
) -> None:
    table = smtp(port, host="mail.example.com", security=security)
    gw = Gateway(settings(["smtp"], smtp=table))
    rt = gw.provider("smtp")
    request = rt.adapter.build(FULL, rt, "op-1")
    gw.close()
    assert str(request.url) == url
    assert request.headers["authorization"] == "Basic YXBwOnMzY3JldC1wYXNzd29yZA=="
    body = json.loads(request.content)
    assert body["mail_from"] == "shop@example.com"
    assert body["rcpt_to"] == [
        "jane@example.org",
        "bob@example.org",
        "carol@example.org",
        "audit@example.com",
    ]
    assert "\r\nBcc:" not in body["message"]


def test_no_username_means_no_auth() -> None:
    table = smtp(25)
    del table["username"], table["api_key"]
    gw = Gateway(settings(["smtp"], smtp=table))
    rt = gw.provider("smtp")
    request = rt.adapter.build(FULL, rt, "op-1")
    gw.close()
    assert "authorization" not in request.headers


def test_message_id_follows_the_operation() -> None:
    """A repeat of one operation carries the same Message-ID (receivers may fold duplicates);
    another operation gets another; a caller's own Message-ID wins."""
    gw = Gateway(settings(["smtp"], smtp=smtp(25)))
    rt = gw.provider("smtp")

    def message_id(op: str, model: Email = FULL) -> str:
        message = json.loads(rt.adapter.build(model, rt, op).content)["message"]
        return str(next(line for line in message.split("\r\n") if line.startswith("Message-ID")))

    digest = hashlib.sha256(b"op-1").hexdigest()[:32]
    assert message_id("op-1") == message_id("op-1") == f"Message-ID: <{digest}@example.com>"
    assert message_id("op-2") != message_id("op-1")
    own = dataclasses.replace(FULL, headers={"Message-ID": "<mine@example.com>"})
    assert message_id("op-1", own) == "Message-ID: <mine@example.com>"
    gw.close()


async def test_non_ascii_addresses_are_refused_before_sending(sink: SmtpSink, mode: str) -> None:
    """SMTPUTF8 is not spoken here: such a message is refused before any session opens."""
    gw = gateway(sink.port)
    try:
        with pytest.raises(InvalidRequest, match="SMTPUTF8"):
            await send(gw, mode, email(to=["jürgen@example.org"]))
    finally:
        await gw.aclose()
    assert sink.commands == []


# -- the dialogue -------------------------------------------------------------------------------


async def test_dialogue_and_message(sink: SmtpSink, mode: str) -> None:
    """Both facades deliver one message: the envelope holds every recipient, Bcc included, the
    headers do not; fields map to their RFC 5322 headers and MIME parts; the receipt holds the
    server's queue id; the password never shows in the dialogue."""
    gw = gateway(sink.port)
    try:
        result = await send(gw, mode, FULL)
    finally:
        await gw.aclose()

    assert result.status == "delivered"
    assert result.provider == "smtp"
    [received] = sink.messages
    assert receipt(result).message_id == received.queue_id
    assert received.user == "app"
    assert received.mail_from == "shop@example.com"
    assert received.rcpt_to == (
        "jane@example.org",
        "bob@example.org",
        "carol@example.org",
        "audit@example.com",
    )
    message = received.message()
    assert message["From"] == "Shop <shop@example.com>"
    assert message["To"] == '"Doe, Jane" <jane@example.org>, bob@example.org'
    assert message["Cc"] == "carol@example.org"
    assert message["Bcc"] is None
    assert message["Reply-To"] == "help@example.com"
    assert message["Subject"] == "Your order"
    assert message["X-Order"] == "42"
    digest = hashlib.sha256(b"order-42-receipt").hexdigest()[:32]
    assert message["Message-ID"] == f"<{digest}@example.com>"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and text.get_content() == "Thanks!\n.a line that starts with a dot\n"
    assert html is not None and html.get_content() == "<p>Thanks!</p>\n"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "receipt.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == b"%PDF-1.7\x00\xff"
    assert sink.commands[:2] == ["EHLO client.test", "AUTH ***"]
    assert not any(USERS["app"] in line for line in sink.commands)


@STARTTLS_SINK
async def test_starttls_before_credentials(
    tls: tuple[ssl.SSLContext, ssl.SSLContext, Path], mode: str
) -> None:
    server, client, _ = tls
    with SmtpSink(tls=server, users=USERS) as sink:
        gw = gateway(sink.port, client, security="starttls")
        try:
            result = await send(gw, mode, email())
        finally:
            await gw.aclose()
    assert result.status == "delivered"
    [received] = sink.messages
    assert received.tls and received.user == "app"
    assert sink.commands[:4] == ["EHLO client.test", "STARTTLS", "EHLO client.test", "AUTH ***"]


async def test_implicit_tls(tls: tuple[ssl.SSLContext, ssl.SSLContext, Path], mode: str) -> None:
    server, client, _ = tls
    with SmtpSink(tls=server, implicit_tls=True, users=USERS) as sink:
        gw = gateway(sink.port, client, security="ssl")
        try:
            result = await send(gw, mode, email())
        finally:
            await gw.aclose()
    assert result.status == "delivered"
    assert sink.messages[0].tls


async def test_no_starttls_offered_means_nothing_sent(sink: SmtpSink, mode: str) -> None:
    """STARTTLS required but not offered: neither credentials nor mail go out in clear; the
    provider counts as unreachable (retried, then the chain moves on)."""
    gw = gateway(sink.port, security="starttls")
    try:
        with pytest.raises(ChainExhausted) as raised:
            await send(gw, mode, email())
    finally:
        await gw.aclose()
    assert [a.reason for a in raised.value.attempts] == ["ConnectError", "ConnectError"]
    assert not any(line.startswith(("AUTH", "MAIL")) for line in sink.commands)
    assert sink.messages == []


async def test_some_recipients_refused(sink: SmtpSink, mode: str) -> None:
    """A server refusing one recipient still takes the message for the others: delivered."""
    sink.inject(SmtpFault.reply("rcpt", 550, "5.1.1 no such user", match="bob@example.org"))
    gw = gateway(sink.port)
    try:
        result = await send(gw, mode, email())
    finally:
        await gw.aclose()
    assert result.status == "delivered"
    assert sink.messages[0].rcpt_to == (
        "jane@example.org",
        "carol@example.org",
        "audit@example.com",
    )


# -- how replies and broken connections classify ------------------------------------------------

# (fault, times, expected attempt reasons, messages the sink kept, what the caller gets)
OUTCOMES: dict[str, tuple[SmtpFault | None, int | None, list[str], int, Any]] = {
    "451 to the message: not taken, retried": (
        SmtpFault.reply("message", 451, "4.3.0 try again later"),
        1,
        ["503", "200"],
        1,
        None,
    ),
    "450 to every recipient: retried": (
        SmtpFault.reply("rcpt", 450, "4.2.1 mailbox busy"),
        4,
        ["503", "200"],
        1,
        None,
    ),
    "421 greeting: retried": (
        SmtpFault.reply("greeting", 421, "4.3.2 busy"),
        1,
        ["503", "200"],
        1,
        None,
    ),
    "connection lost before the message: retried": (
        SmtpFault.drop("mail"),
        1,
        ["ConnectError", "200"],
        1,
        None,
    ),
    "554 to the message: final": (
        SmtpFault.reply("message", 554, "5.7.1 rejected as spam"),
        None,
        ["422"],
        0,
        FatalError,
    ),
    "554 greeting: this server refuses us": (
        SmtpFault.reply("greeting", 554, "5.3.2 no service"),
        None,
        ["403"],
        0,
        ChainExhausted,
    ),
    "connection lost after the message: maybe sent": (
        SmtpFault.drop("message", accept=True),
        None,
        ["RemoteProtocolError"],
        1,
        AmbiguousOutcome,
    ),
    "no reply after the message: maybe sent": (
        SmtpFault.hang("message", accept=True),
        None,
        ["timeout"],
        1,
        AmbiguousOutcome,
    ),
}


@pytest.mark.parametrize("case", list(OUTCOMES))
async def test_outcomes(sink: SmtpSink, mode: str, case: str) -> None:
    fault, times, reasons, kept, error = OUTCOMES[case]
    if fault is not None:
        sink.inject(fault, times=times)
    gw = gateway(sink.port)
    try:
        if error is None:
            result = await send(gw, mode, email())
            attempts = result.attempts
            assert result.status == "delivered"
        else:
            with pytest.raises(error) as raised:
                await send(gw, mode, email())
            attempts = raised.value.attempts
    finally:
        await gw.aclose()
    # a silent server: the socket's read timeout, or the async attempt deadline, whichever is first
    seen = [
        "timeout" if a.reason in ("ReadTimeout", "TimeoutError") else a.reason for a in attempts
    ]
    assert seen == reasons
    assert len(sink.messages) == kept


async def test_wrong_password_fails_over(sink: SmtpSink, mode: str) -> None:
    """535: our credentials for this server; not retried here, another provider may serve."""
    gw = gateway(sink.port, api_key="wrong")
    try:
        with pytest.raises(ChainExhausted) as raised:
            await send(gw, mode, email())
    finally:
        await gw.aclose()
    assert [(a.reason, a.outcome.value) for a in raised.value.attempts] == [("401", "failover")]
    assert raised.value.response is not None
    assert raised.value.response.json()["code"] == 535
    assert sink.messages == []


async def test_connection_refused_is_retried(mode: str) -> None:
    gw = gateway(free_port())
    try:
        with pytest.raises(ChainExhausted) as raised:
            await send(gw, mode, email())
    finally:
        await gw.aclose()
    assert [(a.reason, a.outcome.value) for a in raised.value.attempts] == [
        ("ConnectError", "retryable"),
        ("ConnectError", "retryable"),
    ]


async def test_maybe_sent_is_never_sent_again(sink: SmtpSink, mode: str) -> None:
    """The connection drops once the server took the message: AmbiguousOutcome; a retry of the
    same idempotency key is refused by the ledger, so the server never sees it again."""
    sink.inject(SmtpFault.drop("message", accept=True), times=1)
    gw = gateway(sink.port)
    message = email()
    try:
        with pytest.raises(AmbiguousOutcome):
            await send(gw, mode, message)
        sessions = sink.commands.count("EHLO client.test")
        with pytest.raises(AmbiguousOutcome, match="reconcile"):
            await send(gw, mode, message)
    finally:
        await gw.aclose()
    assert len(sink.messages) == 1
    assert sink.commands.count("EHLO client.test") == sessions


async def test_delivered_is_deduplicated(sink: SmtpSink, mode: str) -> None:
    gw = gateway(sink.port)
    message = email()
    try:
        first = await send(gw, mode, message)
        again = await send(gw, mode, message)
    finally:
        await gw.aclose()
    assert receipt(again).deduplicated is True
    assert receipt(again).message_id == receipt(first).message_id == sink.messages[0].queue_id
    assert len(sink.messages) == 1


# -- the kind's own transports ------------------------------------------------------------------


@STARTTLS_SINK
async def test_kind_brings_its_own_transports(
    simulator: Simulator, tls: tuple[ssl.SSLContext, ssl.SSLContext, Path], mode: str
) -> None:
    """With no gateway transport, an smtp provider sends over SMTP (STARTTLS, verified by the
    `ca_file` option) while the HTTP providers of the same chain keep HTTP: a refused SMTP
    server fails over to Postmark, a healthy one delivers."""
    server, _, ca_file = tls
    postmark = postmark_routes.mount(simulator, "/postmark")
    with SmtpSink(tls=server, users=USERS) as sink:
        for port in (free_port(), sink.port):
            gw = Gateway(
                settings(
                    ["smtp", "postmark"],
                    smtp=smtp(port, security="starttls", ca_file=str(ca_file)),
                    postmark={
                        "kind": "postmark",
                        "api_key": "pm",
                        "base_url": simulator.url("/postmark"),
                    },
                )
            )
            try:
                result = await send(gw, mode, email())
            finally:
                await gw.aclose()
            assert result.provider == ("postmark" if port != sink.port else "smtp")
    assert len(postmark.sent) == 1
    assert len(sink.messages) == 1 and sink.messages[0].tls
