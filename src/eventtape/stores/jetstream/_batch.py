"""Batched direct-get replies read straight off the wire.

A batched direct get answers one request with up to ``batch`` messages and an end-of-batch
marker. Through nats-py each reply would become a ``Msg`` with its headers parsed by the
client (an ``email``-module parser, the larger part of a load's cost), be queued to the
subscription's task and handed to a callback, one event-loop hop per message. Here the
replies of our own inbox are taken from the client before any of that: their header block
is split in a few string operations and they are collected in a list that is handed over
once, when the end-of-batch marker arrives.

This hooks ``Client._process_msg`` (nats-py 2.x calls it for every MSG/HMSG, with the raw
header block): only the subscription ids registered here are intercepted, every other
message takes nats-py's usual path.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client

from ._codec import StoredMessage

__all__ = [
    "BatchStatusError",
    "PendingBatch",
    "RawHandler",
    "intercept",
    "parse_header_block",
    "release",
]

# The header block is None for a reply sent without headers (a plain MSG).
RawHandler = Callable[[bytes, bytes, bytes | None], None]
_HANDLERS_ATTRIBUTE = "_eventtape_raw_handlers"


def parse_header_block(block: bytes) -> tuple[str | None, dict[str, str]]:
    """Return the status (``"204"``, ``"404"`` ... or ``None``) and headers of a NATS header
    block such as ``b"NATS/1.0 204 EOB\\r\\nNats-Num-Pending: 0\\r\\n\\r\\n"``."""
    lines = block.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    status = first[9:12] if len(first) >= 12 else None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key] = value.strip()
    return status, headers


def header_block(headers: dict[str, str] | None) -> bytes:
    """The header block nats-py parsed ``headers`` from (for the path without the hook)."""
    rest = dict(headers or {})
    status, description = rest.pop("Status", None), rest.pop("Description", None)
    first = f"NATS/1.0 {status} {description or ''}".rstrip() if status else "NATS/1.0"
    lines = [first, *(f"{key}: {value}" for key, value in rest.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


_EXPECTED_PARAMETERS = ["sid", "subject", "reply", "data", "headers"]


def intercept(nc: Client, sid: int, handler: RawHandler) -> bool:
    """Deliver the raw messages of subscription ``sid`` to ``handler`` (subject, body, header
    block), bypassing nats-py's parsing; installs the hook on ``nc`` once.

    Returns ``False`` (and hooks nothing) if this nats-py's ``_process_msg`` does not look like
    the one this was written for: the subscription's callback then does the work, slower.
    """
    handlers: dict[int, RawHandler] | None = getattr(nc, _HANDLERS_ATTRIBUTE, None)
    if handlers is None:
        method = getattr(nc, "_process_msg", None)
        if method is None or list(inspect.signature(method).parameters) != _EXPECTED_PARAMETERS:
            return False
        handlers = {}
        setattr(nc, _HANDLERS_ATTRIBUTE, handlers)
        original: Callable[..., Awaitable[None]] = nc._process_msg

        async def process_msg(
            sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
        ) -> None:
            handler = handlers.get(sid)
            if handler is None:
                await original(sid, subject, reply, data, headers)
                return
            nc.stats["in_msgs"] += 1
            nc.stats["in_bytes"] += len(data)
            handler(subject, data, headers)

        # An instance attribute: nats-py's parser looks the method up on the client object.
        nc._process_msg = process_msg  # type: ignore[method-assign]
        _speed_up_parser(nc, handlers)
    handlers[sid] = handler
    return True


_AWAITING_CONTROL_LINE, _AWAITING_MSG_PAYLOAD = 1, 2


def _speed_up_parser(nc: Client, handlers: dict[int, RawHandler]) -> None:
    """Take our replies off the front of nats-py's read buffer before its parser runs.

    nats-py's parser matches a regular expression and awaits ``_process_msg`` for every
    message: most of what a batched get of small messages costs. This reads the ``HMSG``
    frames of the intercepted subscriptions with a few ``bytes`` operations and hands them
    over without an await; anything else (another subscription, ``PING``, a frame split across
    reads) is left to nats-py's parser, which then goes on with the rest of the buffer (our
    later frames reach ``handler`` through the ``_process_msg`` hook). Skipped, leaving nats-py
    as it is, when its parser does not have the state this was written for.
    """
    parser = getattr(nc, "_ps", None)
    original = getattr(parser, "parse", None)
    if parser is None or original is None:
        return
    if not all(hasattr(parser, name) for name in ("buf", "state", "needed", "msg_arg")):
        return
    if getattr(parser, "state", None) not in (_AWAITING_CONTROL_LINE, _AWAITING_MSG_PAYLOAD):
        return
    stats = nc.stats

    async def parse(data: bytes = b"") -> None:
        buf = parser.buf  # read each time: a reconnect gives the parser a new buffer
        buf.extend(data)
        while parser.state == _AWAITING_CONTROL_LINE and buf[:5] == b"HMSG ":
            end = buf.find(b"\r\n", 5, 4096)
            if end < 0:
                break
            fields = buf[5:end].split()
            if len(fields) == 4:
                subject, sid, header_size, size = fields
            elif len(fields) == 5:
                subject, sid, _, header_size, size = fields
            else:
                break
            if not (sid.isdigit() and header_size.isdigit() and size.isdigit()):
                break  # malformed: nats-py's parser reports it as it always has
            handler = handlers.get(int(sid))
            if handler is None:
                break
            start = end + 2
            header_end = start + int(header_size)
            payload_end = start + int(size)
            if len(buf) < payload_end + 2:
                break  # the rest of the frame has not arrived: nats-py's parser waits for it
            header = bytes(buf[start:header_end])
            payload = bytes(buf[header_end:payload_end])
            del buf[: payload_end + 2]
            stats["in_msgs"] += 1
            stats["in_bytes"] += len(payload)
            handler(bytes(subject), payload, header)
        await original()

    parser.parse = parse


def release(nc: Client, sid: int) -> None:
    """Stop intercepting subscription ``sid``."""
    handlers: dict[int, RawHandler] | None = getattr(nc, _HANDLERS_ATTRIBUTE, None)
    if handlers is not None:
        handlers.pop(sid, None)


def _value(block: bytes, key: bytes) -> str | None:
    start = block.find(key)
    if start < 0:
        return None
    start += len(key)
    return block[start : block.find(b"\r", start)].decode("utf-8", "replace").strip()


def _stored(block: bytes, data: bytes) -> StoredMessage:
    """The three headers every read needs, found without splitting the whole block; the
    rest are parsed only if asked for (``StoredMessage.headers``)."""
    # The server writes them one after the other: read them in one pass when it did.
    at = block.find(b"\r\nNats-Subject: ")
    if at >= 0:
        subject_end = block.find(b"\r", at + 16)
        if block.startswith(b"\r\nNats-Sequence: ", subject_end):
            sequence_end = block.find(b"\r", subject_end + 17)
            if block.startswith(b"\r\nNats-Time-Stamp: ", sequence_end):
                time_end = block.find(b"\r", sequence_end + 19)
                return StoredMessage.raw(
                    int(block[subject_end + 17 : sequence_end]),
                    block[at + 16 : subject_end].decode("utf-8", "replace").strip(),
                    block[sequence_end + 19 : time_end].decode("ascii", "replace").strip(),
                    block,
                    data,
                )
    sequence = _value(block, b"\r\nNats-Sequence:")
    subject = _value(block, b"\r\nNats-Subject:")
    if sequence is None or subject is None:
        raise KeyError("Nats-Sequence or Nats-Subject missing")
    return StoredMessage.raw(
        int(sequence), subject, _value(block, b"\r\nNats-Time-Stamp:"), block, data
    )


class PendingBatch:
    """The replies to one batched direct get, collected until its end marker.

    ``done`` resolves to ``(messages, pending)``, with ``pending`` how many more messages
    match after the batch (0 when the server found nothing at all), or to an exception for
    any other status.
    """

    __slots__ = ("done", "messages", "single")

    def __init__(self, *, single: bool = False) -> None:
        #: The answer to a plain direct get by sequence: one message or a 404, no end marker.
        self.single = single
        self.messages: list[StoredMessage] = []
        self.done: asyncio.Future[tuple[list[StoredMessage], int]] = (
            asyncio.get_running_loop().create_future()
        )

    def feed(self, data: bytes, block: bytes | None) -> None:
        """Take one raw reply.

        Never raises: this runs inside nats-py's read loop, which stops for good (the
        connection reads nothing more, and does not reconnect) on any exception. Whatever
        answered the request with a malformed reply fails this batch instead.
        """
        if self.done.done():
            return  # answered already (or given up on): a late reply
        if block is None:  # a plain message: no direct-get reply is one
            self.done.set_exception(ValueError("a reply without a header block"))
            return
        if block[8:9] != b" ":  # no inline status: a stored message
            try:
                self.messages.append(_stored(block, data))
            except (KeyError, ValueError) as error:
                self.done.set_exception(error)
                return
            if self.single:
                self.done.set_result((self.messages, 0))
            return
        status, headers = parse_header_block(block)
        if status == "404":  # nothing matches from the start on (single: no such message)
            self.done.set_result((self.messages, 0))
        elif status == "204":  # end of batch
            try:
                pending = int(headers.get("Nats-Num-Pending", "0"))
            except ValueError as error:  # see above: never raise into the read loop
                self.done.set_exception(error)
                return
            self.done.set_result((self.messages, pending))
        else:
            self.done.set_exception(BatchStatusError(str(status), headers))


class BatchStatusError(Exception):
    """A status other than 204/404, turned into an eventtape error by the caller."""

    def __init__(self, status: str, headers: dict[str, Any]) -> None:
        super().__init__(f"status {status}: {headers}")
        self.status = status
        self.headers = headers
