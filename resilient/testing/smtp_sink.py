"""An SMTP server for tests: real sockets on loopback, every accepted message kept, faults scripted
per stage of the dialogue.

    with SmtpSink(users={"app": "secret"}) as sink:
        sink.inject(SmtpFault.reply("rcpt", 450, "4.2.1 mailbox busy"), times=1)
        ...  # send through an "smtp" provider at 127.0.0.1:sink.port
        assert len(sink.messages) == 1

It speaks HELO/EHLO, STARTTLS (given a server `tls` context; Python 3.11+), AUTH PLAIN and LOGIN
(given `users`), MAIL, RCPT, DATA, RSET, NOOP and QUIT; with `implicit_tls` the whole session is
TLS, as on port 465. One asyncio loop in a daemon thread serves every connection.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Literal

from resilient.testing.background_server import BackgroundServer

Stage = Literal["greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "message"]
Action = Literal["reply", "drop", "hang"]

_LINGER_RST = struct.pack("ii", 1, 0)
_PATH = re.compile(r"^(?:FROM|TO):\s*<([^>]*)>", re.IGNORECASE)


@dataclass(frozen=True)
class SmtpFault:
    """What the sink does instead of its normal reply at one stage. Build with the class methods.

    `accept` (stage "message" only) keeps the message, as delivered, before the fault acts: the
    client then cannot know it was taken. `match` limits the fault to command lines containing
    it (one recipient's RCPT, say).
    """

    stage: Stage
    action: Action
    code: int = 0
    text: str = ""
    accept: bool = False
    match: str | None = None

    @classmethod
    def reply(
        cls, stage: Stage, code: int, text: str = "", *, match: str | None = None
    ) -> SmtpFault:
        """Answer `code text` and skip the command (a 451 to the message: not taken)."""
        return cls(stage, "reply", code, text or "fault injected", match=match)

    @classmethod
    def drop(cls, stage: Stage, *, accept: bool = False) -> SmtpFault:
        """Cut the connection with a TCP RST instead of replying."""
        return cls(stage, "drop", accept=accept)

    @classmethod
    def hang(cls, stage: Stage, *, accept: bool = False) -> SmtpFault:
        """Never reply: only the client's timeout ends the session."""
        return cls(stage, "hang", accept=accept)


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the sink accepted (replied 250 to, or kept before a fault)."""

    queue_id: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes  # as received, dot-stuffing undone
    user: str | None  # who authenticated, if anyone
    tls: bool

    def message(self) -> EmailMessage:
        """The message parsed, its line ends made "\n" as the email package expects."""
        parsed = message_from_bytes(self.data.replace(b"\r\n", b"\n"), policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Injected:
    fault: SmtpFault
    remaining: int | None


@dataclass
class _Session:
    tls: bool
    user: str | None = None
    mail_from: str | None = None
    rcpt_to: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.mail_from = None
        self.rcpt_to = []


class SmtpSink(BackgroundServer):
    """The fake SMTP server. Inject faults and read what it received from any thread."""

    _thread_name = "smtp-sink"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        users: Mapping[str, str] | None = None,
    ) -> None:
        if implicit_tls and tls is None:
            raise ValueError("implicit_tls needs a server tls context")
        super().__init__(host, port)
        self.host = host
        self._tls = tls
        self._implicit = implicit_tls
        self._users = dict(users) if users is not None else None
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._commands: list[str] = []
        self._faults: list[_Injected] = []

    # what tests script and read

    def inject(self, fault: SmtpFault, *, times: int | None = None) -> None:
        """Apply `fault` to the next `times` matching stages (every one when None)."""
        with self._lock:
            self._faults.append(_Injected(fault, times))

    def clear(self) -> None:
        """No faults, no messages, no commands: as new."""
        with self._lock:
            self._faults.clear()
            self._messages.clear()
            self._commands.clear()

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def commands(self) -> list[str]:
        """Every command line received, in order, verbs upper-cased and AUTH secrets masked."""
        with self._lock:
            return list(self._commands)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._serve_session,
            self.host,
            self._requested_port,
            ssl=self._tls if self._implicit else None,
        )

    async def _serve_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._track(task)
        try:
            await self._converse(reader, writer, _Session(tls=self._implicit))
        except (OSError, asyncio.IncompleteReadError):  # the client went away
            pass
        except asyncio.CancelledError:
            pass  # stop() cancels us
        finally:
            writer.close()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: _Session
    ) -> None:
        if await self._step(reader, writer, "greeting", "", "220 sink ESMTP ready") == "closed":
            return
        while True:
            line = await reader.readline()
            if not line:
                return
            text = line.decode("utf-8", errors="replace").rstrip("\r\n")
            verb, _, argument = text.partition(" ")
            verb = verb.upper()
            self._log(f"{verb} ***" if verb == "AUTH" else f"{verb} {argument}".rstrip())
            if verb in ("EHLO", "HELO"):
                session.reset()
                hello = self._hello(verb, session)
                if await self._step(reader, writer, "ehlo", text, hello) == "closed":
                    return
            elif verb == "STARTTLS":
                if not await self._starttls(reader, writer, session, text):
                    return
            elif verb == "AUTH":
                if not await self._auth(reader, writer, session, argument):
                    return
            elif verb == "MAIL":
                if not await self._mail(reader, writer, session, text, argument):
                    return
            elif verb == "RCPT":
                if not await self._rcpt(reader, writer, session, text, argument):
                    return
            elif verb == "DATA":
                if not await self._data(reader, writer, session, text):
                    return
            elif verb == "RSET":
                session.reset()
                await _send(writer, "250 2.0.0 Ok")
            elif verb == "NOOP":
                await _send(writer, "250 2.0.0 Ok")
            elif verb == "QUIT":
                await _send(writer, "221 2.0.0 Bye")
                return
            else:
                await _send(writer, "502 5.5.2 Error: command not recognized")

    def _hello(self, verb: str, session: _Session) -> str:
        if verb == "HELO":
            return "250 sink"
        lines = ["sink", "8BITMIME"]
        if self._tls is not None and not session.tls:
            lines.append("STARTTLS")
        if self._users is not None:
            lines.append("AUTH PLAIN LOGIN")
        return "\r\n".join(
            f"250{' ' if i == len(lines) - 1 else '-'}{line}" for i, line in enumerate(lines)
        )

    async def _starttls(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: _Session,
        text: str,
    ) -> bool:
        if self._tls is None or session.tls:
            await _send(writer, "502 5.5.1 Error: TLS not available")
            return True
        step = await self._step(reader, writer, "starttls", text, "220 2.0.0 Ready to start TLS")
        if step != "normal":
            return step == "faulted"
        if sys.version_info < (3, 11):  # pragma: no cover - StreamWriter.start_tls is 3.11+
            raise RuntimeError("the SMTP sink speaks STARTTLS on Python 3.11+ only")
        await writer.start_tls(self._tls)
        session.tls = True
        session.reset()
        return True

    async def _auth(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: _Session,
        argument: str,
    ) -> bool:
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if self._users is None or mechanism not in ("PLAIN", "LOGIN"):
            await _send(writer, "504 5.5.4 Unrecognized authentication type")
            return True
        try:
            if mechanism == "PLAIN":
                token = initial or await _challenge(reader, writer, "")
                _, user, password = _b64(token).split("\0", 2)
            else:
                user = _b64(initial or await _challenge(reader, writer, "VXNlcm5hbWU6"))
                password = _b64(await _challenge(reader, writer, "UGFzc3dvcmQ6"))
        except ValueError:
            await _send(writer, "501 5.5.2 Cannot decode response")
            return True
        if self._users.get(user) != password:
            reply = "535 5.7.8 Authentication credentials invalid"
            return await self._step(reader, writer, "auth", "AUTH", reply) != "closed"
        reply = "235 2.7.0 Authentication successful"
        step = await self._step(reader, writer, "auth", "AUTH", reply)
        if step == "normal":
            session.user = user
        return step != "closed"

    async def _mail(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: _Session,
        text: str,
        argument: str,
    ) -> bool:
        path = _PATH.match(argument)
        if path is None:
            await _send(writer, "501 5.5.4 Syntax: MAIL FROM:<address>")
            return True
        if self._users is not None and session.user is None:
            await _send(writer, "530 5.7.0 Authentication required")
            return True
        step = await self._step(reader, writer, "mail", text, "250 2.1.0 Ok")
        if step == "normal":
            session.reset()
            session.mail_from = path.group(1)
        return step != "closed"

    async def _rcpt(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: _Session,
        text: str,
        argument: str,
    ) -> bool:
        path = _PATH.match(argument)
        if session.mail_from is None:
            await _send(writer, "503 5.5.1 Error: need MAIL command")
            return True
        if path is None:
            await _send(writer, "501 5.5.4 Syntax: RCPT TO:<address>")
            return True
        fault = self._fault("rcpt", text)
        if fault is not None:
            return await _act(reader, writer, fault)
        session.rcpt_to.append(path.group(1))
        await _send(writer, "250 2.1.5 Ok")
        return True

    async def _data(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: _Session,
        text: str,
    ) -> bool:
        if not session.rcpt_to or session.mail_from is None:
            await _send(writer, "503 5.5.1 Error: need RCPT command")
            return True
        step = await self._step(reader, writer, "data", text, "354 End data with <CR><LF>.<CR><LF>")
        if step != "normal":
            return step == "faulted"
        lines: list[bytes] = []
        while True:
            line = await reader.readline()
            if not line:
                return False
            if line in (b".\r\n", b".\n"):
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        received = ReceivedMessage(
            queue_id=secrets.token_hex(5).upper(),
            mail_from=session.mail_from,
            rcpt_to=tuple(session.rcpt_to),
            data=b"".join(lines),
            user=session.user,
            tls=session.tls,
        )
        session.reset()
        fault = self._fault("message", "")
        if fault is not None:
            if fault.accept:
                self._keep(received)
            return await _act(reader, writer, fault)
        self._keep(received)
        await _send(writer, f"250 2.0.0 Ok: queued as {received.queue_id}")
        return True

    async def _step(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stage: Stage,
        text: str,
        reply: str,
    ) -> Literal["normal", "faulted", "closed"]:
        """Reply normally, unless a fault is injected at `stage`: then the command is skipped
        ("faulted", after a fault's reply) or the session is over ("closed")."""
        fault = self._fault(stage, text)
        if fault is not None:
            return "faulted" if await _act(reader, writer, fault) else "closed"
        await _send(writer, reply)
        return "normal"

    def _fault(self, stage: Stage, text: str) -> SmtpFault | None:
        with self._lock:
            for injected in reversed(self._faults):
                fault = injected.fault
                if fault.stage != stage or (fault.match is not None and fault.match not in text):
                    continue
                if injected.remaining is not None:
                    injected.remaining -= 1
                    if injected.remaining == 0:
                        self._faults.remove(injected)
                return fault
        return None

    def _keep(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)

    def _log(self, line: str) -> None:
        with self._lock:
            self._commands.append(line)


async def _act(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: SmtpFault
) -> bool:
    """Carry out `fault`; True when the session goes on (a reply), False when it is over."""
    if fault.action == "reply":
        await _send(writer, f"{fault.code} {fault.text}")
        return True
    if fault.action == "drop":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        writer.transport.abort()
        return False
    while await reader.read(65536):
        pass  # hang: hold the connection until the client gives up
    return False


async def _send(writer: asyncio.StreamWriter, reply: str) -> None:
    writer.write(reply.encode() + b"\r\n")
    await writer.drain()


async def _challenge(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, prompt: str
) -> str:
    await _send(writer, f"334 {prompt}".rstrip())
    return (await reader.readline()).decode().strip()


def _b64(value: str) -> str:
    """Decoded base64 text; ValueError (binascii.Error, UnicodeDecodeError) when it is not."""
    return base64.b64decode(value, validate=True).decode()
