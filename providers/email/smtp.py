"""SMTP (RFC 5321) through the same pipeline as the HTTP providers.

The pipeline sends httpx requests, so SMTP is an httpx transport: SmtpAdapter builds a request to
`smtp://`, `smtp+tls://` (STARTTLS) or `smtp+ssl://` (implicit TLS) `host:port` whose JSON body is
the envelope and the MIME message, with `Authorization: Basic` holding the `username` option and
the provider's `api_key` as password; SmtpTransport holds the SMTP session and answers as an HTTP
API would, so the email status rules classify it like any other provider:

- 250 after the message: 200 `{"queue_id", "message_id", "reply", "refused"}`;
- a 4xx reply (the server did not take the message and says to try later): 503, retried;
- a 5xx reply to MAIL, RCPT, DATA or the message: 422, fatal; to the greeting or EHLO: 403,
  and 530/534/535 (authentication): 401, both failed over;
- no connection, or one lost before the message was handed over: httpx.ConnectError (or
  ConnectTimeout), retried;
- a connection lost or silent once the message was being sent: httpx.RemoteProtocolError (or
  ReadTimeout): ambiguous, never sent elsewhere.

The Message-ID derives from the operation id, so a repeat of one operation carries the same id.
SMTP has no idempotency key, no tags and no metadata: those fields are not sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.parser import HeaderParser
from email.policy import SMTP
from email.utils import formatdate
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from providers.adapter import api_key, basic_auth, json_field
from providers.email._common import EMAIL_RULES, formatted, split_address
from providers.models import Email
from resilient import registry
from resilient.errors import InvalidRequest
from resilient.runtime import ProviderRuntime
from resilient.settings import ProviderSettings

SCHEMES = {"none": "smtp", "starttls": "smtp+tls", "ssl": "smtp+ssl"}
PORTS = {"smtp": 25, "smtp+tls": 587, "smtp+ssl": 465}
_POLICY = SMTP.clone(cte_type="7bit")  # ASCII on the wire: no server needs 8BITMIME
_MESSAGE_STAGES = frozenset({"mail", "rcpt", "data", "message"})
_AUTH_CODES = frozenset({530, 534, 535})
_QUEUE_ID = (
    re.compile(r"queued as\s+<?([\w.@-]+)", re.IGNORECASE),  # Postfix, most others
    re.compile(r"\bid=<?([\w.@-]+)"),  # Exim
)


class SmtpOptions(BaseModel):
    """Config keys of an "smtp" provider; `api_key` is the password of `username`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int | None = Field(default=None, ge=1, le=65535)  # by security: 587, 465, or 25
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None  # None: no AUTH (a relay that trusts the network)
    ca_file: str | None = None  # PEM CAs verifying the server (a private relay); else the system's
    local_hostname: str | None = None  # the EHLO name; else this machine's FQDN


class SmtpAdapter:
    honours_idempotency_key = False

    def __init__(self, settings: ProviderSettings) -> None:
        self.options = SmtpOptions.model_validate(dict(settings.options))

    def build(self, model: Email, provider: ProviderRuntime, operation_id: str) -> httpx.Request:
        o = self.options
        scheme = SCHEMES[o.security]
        host = f"[{o.host}]" if ":" in o.host else o.host
        headers = {}
        if o.username is not None:
            headers["Authorization"] = basic_auth(o.username, api_key(provider))
        sender = split_address(model.sender)[1]
        rcpt = recipients(model)
        if not all(address.isascii() for address in (sender, *rcpt)):
            raise InvalidRequest("smtp: a non-ASCII address needs SMTPUTF8, not supported here")
        return httpx.Request(
            "POST",
            f"{scheme}://{host}:{o.port or PORTS[scheme]}",
            headers=headers,
            json={
                "mail_from": sender,
                "rcpt_to": rcpt,
                "message": mime(model, operation_id).decode("ascii"),
            },
        )

    def message_id(self, response: httpx.Response) -> str | None:
        return json_field(response, "queue_id") or json_field(response, "message_id")


def recipients(email: Email) -> list[str]:
    """Every bare recipient (to, cc, bcc) once, in order: the envelope, Bcc included."""
    return list(dict.fromkeys(split_address(a)[1] for a in (*email.to, *email.cc, *email.bcc)))


def mime(email: Email, operation_id: str) -> bytes:
    """The RFC 5322 message, CRLF and 7-bit: Bcc is in the envelope only, never a header."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = formatted(email.sender)
    msg["To"] = ", ".join(formatted(a) for a in email.to)
    if email.cc:
        msg["Cc"] = ", ".join(formatted(a) for a in email.cc)
    if email.reply_to:
        msg["Reply-To"] = formatted(email.reply_to)
    msg["Subject"] = email.subject
    msg["Date"] = formatdate(usegmt=True)
    digest = hashlib.sha256(operation_id.encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<{digest}@{split_address(email.sender)[1].rpartition('@')[2]}>"
    for name, value in email.headers.items():
        del msg[name]  # the caller's header replaces ours (a Message-ID of their own, say)
        msg[name] = value
    if email.text is not None:
        msg.set_content(email.text)
    if email.html is not None:
        if email.text is None:
            msg.set_content(email.html, subtype="html")
        else:
            msg.add_alternative(email.html, subtype="html")
    for a in email.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(
            a.content, maintype=maintype, subtype=subtype or "octet-stream", filename=a.filename
        )
    return msg.as_bytes()


class SmtpTransport(httpx.BaseTransport):
    """Sends the requests SmtpAdapter builds over SMTP, one session per message."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, local_hostname: str | None = None
    ) -> None:
        self._context = ssl_context or ssl.create_default_context()
        self._local_hostname = local_hostname

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in PORTS:
            raise httpx.UnsupportedProtocol(
                f"SMTP transport: expected one of {', '.join(PORTS)}, got {request.url.scheme!r}",
                request=request,
            )
        if self._local_hostname is None:
            self._local_hostname = socket.getfqdn()  # once: it may ask DNS
        return _Session(request, self._context, self._local_hostname).run()


class AsyncSmtpTransport(httpx.AsyncBaseTransport):
    """SmtpTransport for async clients: the blocking session runs in a worker thread."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, local_hostname: str | None = None
    ) -> None:
        self._sync = SmtpTransport(ssl_context=ssl_context, local_hostname=local_hostname)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await asyncio.to_thread(self._sync.handle_request, request)


class _Session:
    """One SMTP dialogue for one request; `stage` says how far it got, which decides whether a
    lost connection may have delivered the message."""

    def __init__(self, request: httpx.Request, context: ssl.SSLContext, hostname: str) -> None:
        self.request = request
        self.context = context
        self.hostname = hostname
        self.stage = "connect"
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or {}
        self.connect_timeout = timeouts.get("connect") or 30.0
        self.read_timeout = timeouts.get("read") or 30.0

    def run(self) -> httpx.Response:
        envelope = json.loads(self.request.read())
        try:
            smtp = self._connect()
        except smtplib.SMTPConnectError as exc:  # a greeting other than 220
            return self._refused(exc.smtp_code, exc.smtp_error)
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise self._lost(exc) from exc
        try:
            return self._converse(smtp, envelope)
        except smtplib.SMTPResponseException as exc:
            return self._refused(exc.smtp_code, exc.smtp_error)
        except OSError as exc:
            raise self._lost(exc) from exc
        finally:
            smtp.close()

    def _connect(self) -> smtplib.SMTP:
        url = self.request.url
        host, port = url.host, url.port or PORTS[url.scheme]
        if url.scheme == "smtp+ssl":
            return smtplib.SMTP_SSL(
                host, port, self.hostname, timeout=self.connect_timeout, context=self.context
            )
        return smtplib.SMTP(host, port, self.hostname, timeout=self.connect_timeout)

    def _converse(self, smtp: smtplib.SMTP, envelope: dict[str, Any]) -> httpx.Response:
        assert smtp.sock is not None
        smtp.sock.settimeout(self.read_timeout)
        self.stage = "ehlo"
        code, reply = self._hello(smtp)
        if code != 250:
            return self._refused(code, reply)
        if self.request.url.scheme == "smtp+tls":
            self.stage = "starttls"
            if not smtp.has_extn("starttls"):
                raise httpx.ConnectError(
                    "SMTP server offers no STARTTLS: nothing sent in clear", request=self.request
                )
            code, reply = smtp.starttls(context=self.context)
            if code != 220:
                return self._refused(code, reply)
            self.stage = "ehlo"
            code, reply = self._hello(smtp)
            if code != 250:
                return self._refused(code, reply)
        credentials = self._credentials()
        if credentials is not None:
            self.stage = "auth"
            try:
                smtp.login(*credentials)
            except (smtplib.SMTPResponseException, smtplib.SMTPServerDisconnected):
                raise
            except smtplib.SMTPException as exc:  # no AUTH, or no method we share
                return self._answer(401, 0, str(exc))
        self.stage = "mail"
        code, reply = smtp.mail(envelope["mail_from"])
        if code != 250:
            return self._refused(code, reply)
        self.stage = "rcpt"
        refused: dict[str, tuple[int, bytes]] = {}
        for address in envelope["rcpt_to"]:
            code, reply = smtp.rcpt(address)
            if code not in (250, 251):
                refused[address] = (code, reply)
        if len(refused) == len(envelope["rcpt_to"]):
            code, reply = min(refused.values())  # a 4xx (try later) before any 5xx
            return self._refused(code, reply)
        self.stage = "data"
        code, reply = smtp.docmd("DATA")
        if code != 354:
            return self._refused(code, reply)
        self.stage = "message"
        smtp.send(_dot_stuffed(envelope["message"].encode("ascii")))
        code, reply = smtp.getreply()
        if not 200 <= code < 300:
            if code < 400:  # no reply we understand: the server may have taken it
                raise httpx.RemoteProtocolError(
                    f"SMTP: unexpected reply to the message: {code} {reply!r}",
                    request=self.request,
                )
            return self._refused(code, reply)
        with contextlib.suppress(OSError):  # delivered already: how it ends changes nothing
            smtp.quit()
        return self._answer(
            200,
            code,
            reply,
            queue_id=_queue_id(reply.decode(errors="replace")),
            message_id=HeaderParser().parsestr(envelope["message"], headersonly=True)["Message-ID"],
            refused={a: f"{c} {r.decode(errors='replace')}" for a, (c, r) in refused.items()},
        )

    @staticmethod
    def _hello(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        code, reply = smtp.ehlo()
        return (code, reply) if code == 250 else smtp.helo()

    def _credentials(self) -> tuple[str, str] | None:
        scheme, _, encoded = self.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password

    def _refused(self, code: int, reply: bytes | str) -> httpx.Response:
        """The server said no: 4xx try later (503); 5xx to the message is final (422); 5xx to
        the session or to our credentials is this server's matter (403, 401)."""
        if code in _AUTH_CODES or (self.stage == "auth" and code >= 500):
            status = 401
        elif code < 500:
            status = 503
        else:
            status = 422 if self.stage in _MESSAGE_STAGES else 403
        return self._answer(status, code, reply)

    def _answer(self, status: int, code: int, reply: bytes | str, **extra: Any) -> httpx.Response:
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        body = {"stage": self.stage, "code": code, "reply": f"{code} {text}", **extra}
        return httpx.Response(status, json=body, request=self.request)

    def _lost(self, exc: BaseException) -> httpx.TransportError:
        """The connection failed: harmless before the message went out, ambiguous after."""
        timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)
        text = f"SMTP {self.stage}: {str(exc) or type(exc).__name__}"
        if self.stage == "message":
            if timed_out:
                return httpx.ReadTimeout(text, request=self.request)
            return httpx.RemoteProtocolError(text, request=self.request)
        if timed_out:
            return httpx.ConnectTimeout(text, request=self.request)
        return httpx.ConnectError(text, request=self.request)


def _dot_stuffed(message: bytes) -> bytes:
    """The DATA payload: leading dots doubled, ended by CRLF.CRLF (RFC 5321 4.5.2)."""
    body = re.sub(rb"(?m)^\.", b"..", message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _queue_id(reply: str) -> str | None:
    for pattern in _QUEUE_ID:
        found = pattern.search(reply)
        if found:
            return found.group(1)
    return None


def transports(settings: ProviderSettings) -> tuple[SmtpTransport, AsyncSmtpTransport]:
    """The transports an "smtp" provider sends through, from its options."""
    o = SmtpOptions.model_validate(dict(settings.options))
    context = ssl.create_default_context(cafile=o.ca_file)
    return (
        SmtpTransport(ssl_context=context, local_hostname=o.local_hostname),
        AsyncSmtpTransport(ssl_context=context, local_hostname=o.local_hostname),
    )


registry.register(
    registry.ProviderKind("smtp", "email", SmtpOptions, SmtpAdapter, EMAIL_RULES, transports)
)
