"""
The blob-exchange wire format, without any I/O.

A message is one JSON object with no delimiter and no length prefix; a
response that announces C{incoming_blob} is followed at once by that many raw
blob bytes.  L{JSONObjectFramer} finds where the object ends by scanning each
byte once (tracking string and nesting state across reads), then decodes
exactly that span with L{json.JSONDecoder.raw_decode}: no rescanning of the
buffer at every C{"}"}, and a hard size bound.  The key tables and the
response key order are those of lbry-sdk 0.113.0 (C{spec/lbry-wire.md}
section 4), so our bytes match what LBRY peers send.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BLOB_UNAVAILABLE",
    "CLIENT_MAX_REQUEST_SIZE",
    "DEFAULT_MAX_REQUEST_SIZE",
    "FramingError",
    "JSONObjectFramer",
    "LBRY_RESPONSE_KEYS",
    "MAX_RESPONSE_JSON_SIZE",
    "RATE_ACCEPTED",
    "RATE_TOO_LOW",
    "RATE_UNSET",
    "REQUEST_KEYS",
    "encode_request",
    "encode_response",
]

# A request we send must be shorter than this: lbry-sdk's server closes the
# connection once it has buffered 1200 bytes of one request.
CLIENT_MAX_REQUEST_SIZE = 1200
# What our server accepts by default (requests are refused at this size).
DEFAULT_MAX_REQUEST_SIZE = 64 * 1024
# The JSON part of a response we accept (2015 lbrynet's MAX_RESPONSE_INFO_SIZE).
MAX_RESPONSE_JSON_SIZE = 64 * 1024

RATE_ACCEPTED = "RATE_ACCEPTED"
RATE_TOO_LOW = "RATE_TOO_LOW"
RATE_UNSET = "RATE_UNSET"
BLOB_UNAVAILABLE = "BLOB_UNAVAILABLE"

REQUEST_KEYS = frozenset(
    {
        "requested_blobs",
        "requested_blob",
        "blob_data_payment_rate",
        "lbrycrd_address",
        "public_key",
    }
)
# A modern LBRY client drops a connection whose response has any other key.
LBRY_RESPONSE_KEYS = frozenset(
    {"incoming_blob", "blob_data_payment_rate", "available_blobs", "lbrycrd_address"}
)
# lbry-sdk's server writes its response keys in this order.
_RESPONSE_ORDER = ("incoming_blob", "blob_data_payment_rate", "available_blobs", "lbrycrd_address")

_OUTSIDE_STRING = re.compile(rb'[{}"]')
_INSIDE_STRING = re.compile(rb'["\\]')
_WHITESPACE = b" \t\r\n"
_decoder = json.JSONDecoder()


class FramingError(ValueError):
    """
    The bytes received are not one well-formed JSON object within the size
    limit.  C{str()} says what was wrong.
    """


class JSONObjectFramer:
    """
    Finds complete JSON objects in a byte stream.

    Feed it the bytes as they arrive; when an object is complete, L{feed}
    returns it with the bytes that followed it, and the framer is ready for
    the next object.  Each byte is examined once however it is split across
    reads.

    @ivar limit: an object (with any whitespace before it) of this many bytes
        or more is refused.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._reset_scan()

    def _reset_scan(self) -> None:
        self._scanned = 0
        self._depth = 0
        self._in_string = False
        self._started = False

    @property
    def buffered(self) -> int:
        """
        How many bytes of an unfinished object are held.
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> tuple[dict[str, Any], bytes] | None:
        """
        Add C{data}; return C{(object, rest)} once an object is complete,
        else L{None}.

        @raise FramingError: if the bytes cannot be the start of an object
            within the limit, or the object is not valid UTF-8 JSON.  The
            framer is then unusable (the connection should be closed).
        """
        buffer = self._buffer
        buffer += data
        end = self._scan()
        if end is None:
            if len(buffer) >= self.limit:
                raise FramingError(f"message exceeds {self.limit} bytes")
            return None
        if end >= self.limit:
            raise FramingError(f"message exceeds {self.limit} bytes")
        try:
            text = buffer[:end].decode("utf-8")
        except UnicodeDecodeError:
            raise FramingError("message is not valid UTF-8") from None
        try:
            message, _ = _decoder.raw_decode(text, len(text) - len(text.lstrip()))
        except json.JSONDecodeError as e:
            raise FramingError(f"message is not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:
            # too deeply nested, or a number too long to convert
            raise FramingError(f"message cannot be decoded ({type(e).__name__})") from None
        rest = bytes(buffer[end:])
        del buffer[:]
        self._reset_scan()
        return message, rest

    def _scan(self) -> int | None:
        """
        Go on scanning from where the last call stopped; return the offset
        just past the object's closing brace, or L{None} if it has not
        arrived yet.
        """
        buffer = self._buffer
        position = self._scanned
        if not self._started:
            while position < len(buffer) and buffer[position] in _WHITESPACE:
                position += 1
            if position == len(buffer):
                self._scanned = position
                return None
            if buffer[position] != ord("{"):
                raise FramingError("message is not a JSON object")
            self._started = True
        while True:
            pattern = _INSIDE_STRING if self._in_string else _OUTSIDE_STRING
            match = pattern.search(buffer, position)
            if match is None:
                self._scanned = len(buffer)
                return None
            position = match.end()
            char = buffer[match.start()]
            if self._in_string:
                if char == ord("\\"):
                    if position >= len(buffer):
                        # the escaped character has not arrived: look at the
                        # backslash again next time
                        self._scanned = position - 1
                        return None
                    position += 1
                else:
                    self._in_string = False
            elif char == ord('"'):
                self._in_string = True
            elif char == ord("{"):
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return position
                if self._depth < 0:
                    raise FramingError("message is not a JSON object")


def encode_request(request: Mapping[str, Any]) -> bytes:
    """
    The bytes of a request, as Python's C{json.dumps} writes them (the form
    lbry-sdk clients send: C{", "} and C{": "} separators, no newline).
    """
    return json.dumps(request).encode("utf-8")


def encode_response(response: Mapping[str, Any]) -> bytes:
    """
    The bytes of a response, with LBRY's keys in the order lbry-sdk's server
    writes them, then any extension keys sorted.
    """
    ordered = {key: response[key] for key in _RESPONSE_ORDER if key in response}
    for key in sorted(response):
        if key not in ordered:
            ordered[key] = response[key]
    return json.dumps(ordered).encode("utf-8")
