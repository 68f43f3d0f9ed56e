"""
Bencode, the encoding of every DHT datagram, without any I/O.

Values are integers, byte strings, lists and dictionaries.  As in LBRY, a
dictionary's keys are either all byte strings (sorted bytewise) or all
integers (sorted numerically): every datagram is a dictionary with the
integer keys C{0}, C{1}, ... (C{spec/lbry-wire.md} section 7.2).

L{bdecode} accepts only the canonical form L{bencode} writes, so that
decoding then encoding gives back the very same bytes: no leading zeros, no
C{-0}, keys sorted without duplicates, nothing after the value.  lbry-sdk's
own decoder is laxer (it accepts C{i03e} and trailing bytes) but its encoder
never produces such input, so refusing it costs nothing.  It also has a bug
we do not share: after a nested dictionary it loses the rest of every
enclosing container, so a dictionary must come last in what we send (see
L{p2pblob.dht.messages}).

Both directions work with an explicit stack, not recursion, and refuse
containers nested more than L{MAX_NESTING} deep and integers of more than
L{MAX_INTEGER_DIGITS} digits, so hostile input costs at most linear time and
raises nothing but L{BencodeError}.
"""

from __future__ import annotations

import re

from p2pblob.errors import BencodeError

__all__ = ["MAX_INTEGER_DIGITS", "MAX_NESTING", "bdecode", "bencode"]

MAX_NESTING = 32
"""
The deepest nesting of lists and dictionaries accepted in either direction
(a datagram needs 4).
"""

MAX_INTEGER_DIGITS = 64
"""
The most decimal digits an integer may have in either direction (a datagram
needs 5).
"""

_INTEGER = re.compile(rb"i(0|-?[1-9][0-9]{0,%d})e" % (MAX_INTEGER_DIGITS - 1))
# A byte string's length has at most 10 digits: anything longer could not
# fit in the data anyway, and is refused before being converted.
_LENGTH = re.compile(rb"(0|[1-9][0-9]{0,9}):")
_DIGITS = frozenset(b"0123456789")

_INT = ord("i")
_LIST = ord("l")
_DICT = ord("d")
_END = ord("e")

_INTEGER_BOUND = 10**MAX_INTEGER_DIGITS


class _DictionaryFrame:
    """
    A dictionary being decoded: the pairs so far, and the key read last.

    @ivar items: the finished pairs, in wire order.
    @ivar pending: the key waiting for its value, or L{None} when the next
        thing read is a key.
    @ivar previous: the last key that got its value (the next key must sort
        after it), or L{None} at the start.
    """

    __slots__ = ("items", "pending", "previous")

    def __init__(self) -> None:
        self.items: dict[int | bytes, object] = {}
        self.pending: int | bytes | None = None
        self.previous: int | bytes | None = None

    def add(self, value: object, offset: int) -> None:
        """
        Take the next key or value, which ended just before C{offset}.

        @raise BencodeError: if a key is not an integer or a byte string,
            is of another kind than the keys before it, or does not sort
            after them.
        """
        if self.pending is not None:
            self.items[self.pending] = value
            self.previous = self.pending
            self.pending = None
            return
        if not isinstance(value, (int, bytes)):
            raise BencodeError(
                f"dictionary key ending at offset {offset} is not an integer or a byte string"
            )
        previous = self.previous
        if previous is not None:
            if isinstance(value, int) and isinstance(previous, int):
                in_order = value > previous
            elif isinstance(value, bytes) and isinstance(previous, bytes):
                in_order = value > previous
            else:
                raise BencodeError(
                    f"dictionary at offset {offset} mixes integer and byte string keys"
                )
            if not in_order:
                raise BencodeError(
                    f"dictionary key ending at offset {offset} is a duplicate or out of order"
                )
        self.pending = value


def bdecode(data: bytes) -> object:
    """
    Decode one bencoded value that fills all of C{data}.

    @return: an L{int}, L{bytes}, L{list} or L{dict} (whose keys are all
        L{int} or all L{bytes}), nested to any depth up to L{MAX_NESTING}.

    @raise BencodeError: if C{data} is not exactly one canonical bencoded
        value, whatever is wrong with it.
    """
    if not isinstance(data, bytes):
        raise BencodeError(f"expected bytes, got {type(data).__name__}")
    end = len(data)
    stack: list[list[object] | _DictionaryFrame] = []
    position = 0
    while True:
        if position >= end:
            raise BencodeError("the data ends inside a list or dictionary" if stack else "no data")
        marker = data[position]
        if marker == _LIST or marker == _DICT:
            _check_can_open(stack, position)
            stack.append([] if marker == _LIST else _DictionaryFrame())
            position += 1
            continue
        value: object
        if marker == _END:
            if not stack:
                raise BencodeError(f"unexpected end marker at offset {position}")
            frame = stack.pop()
            if isinstance(frame, _DictionaryFrame):
                if frame.pending is not None:
                    raise BencodeError(f"dictionary key has no value at offset {position}")
                value = frame.items
            else:
                value = frame
            position += 1
        elif marker == _INT:
            match = _INTEGER.match(data, position)
            if match is None:
                raise BencodeError(f"malformed integer at offset {position}")
            value = int(match.group(1))
            position = match.end()
        else:
            value, position = _decode_string(data, position)
        if not stack:
            if position != end:
                raise BencodeError(f"{end - position} unexpected byte(s) after the value")
            return value
        top = stack[-1]
        if isinstance(top, list):
            top.append(value)
        else:
            top.add(value, position)


def _check_can_open(stack: list[list[object] | _DictionaryFrame], position: int) -> None:
    """
    Refuse a list or dictionary starting at C{position} if it would be a
    dictionary key or nest too deep.
    """
    if stack:
        top = stack[-1]
        if isinstance(top, _DictionaryFrame) and top.pending is None:
            raise BencodeError(
                f"dictionary key at offset {position} is not an integer or a byte string"
            )
    if len(stack) >= MAX_NESTING:
        raise BencodeError(f"nesting deeper than {MAX_NESTING} at offset {position}")


def _decode_string(data: bytes, position: int) -> tuple[bytes, int]:
    """
    The byte string starting at C{position}, and the offset just after it.
    """
    match = _LENGTH.match(data, position)
    if match is None:
        if data[position] in _DIGITS:
            raise BencodeError(f"malformed byte string length at offset {position}")
        raise BencodeError(f"unexpected byte 0x{data[position]:02x} at offset {position}")
    start = match.end()
    stop = start + int(match.group(1))
    if stop > len(data):
        raise BencodeError(f"byte string at offset {position} runs past the end of the data")
    return data[start:stop], stop


class _Close:
    """
    Marks, on the encoder's stack, where a list or dictionary ends.
    """


_CLOSE = _Close()


def bencode(value: object) -> bytes:
    """
    Encode C{value}: an L{int}, L{bytes}, L{list} or L{tuple} (both written
    as lists), or L{dict} whose keys are all L{int} or all L{bytes}, nested
    up to L{MAX_NESTING} deep.  Dictionary keys are written sorted, as
    lbry-sdk writes them.

    @raise BencodeError: if C{value} holds anything else (L{str}, L{bool},
        L{None}, floats...), an integer of more than L{MAX_INTEGER_DIGITS}
        digits, or nests too deep.
    """
    pieces: list[bytes] = []
    stack: list[object] = [value]
    nesting = 0
    while stack:
        item = stack.pop()
        if item is _CLOSE:
            pieces.append(b"e")
            nesting -= 1
        elif isinstance(item, bytes):
            pieces.append(b"%d:" % len(item))
            pieces.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -_INTEGER_BOUND < item < _INTEGER_BOUND:
                raise BencodeError(f"integer has more than {MAX_INTEGER_DIGITS} digits")
            pieces.append(b"i%de" % item)
        elif isinstance(item, (list, tuple, dict)):
            nesting += 1
            if nesting > MAX_NESTING:
                raise BencodeError(f"nesting deeper than {MAX_NESTING}")
            stack.append(_CLOSE)
            if isinstance(item, dict):
                pieces.append(b"d")
                for key in reversed(_sorted_keys(item)):
                    stack.append(item[key])
                    stack.append(key)
            else:
                pieces.append(b"l")
                stack.extend(reversed(item))
        else:
            raise BencodeError(f"cannot encode a value of type {type(item).__name__}")
    return b"".join(pieces)


def _sorted_keys(mapping: dict[object, object]) -> list[int] | list[bytes]:
    """
    The keys of C{mapping} in the order bencode writes them.

    @raise BencodeError: unless they are all integers or all byte strings.
    """
    keys = list(mapping)
    integers = [key for key in keys if isinstance(key, int) and not isinstance(key, bool)]
    if len(integers) == len(keys):
        return sorted(integers)
    strings = [key for key in keys if isinstance(key, bytes)]
    if len(strings) == len(keys):
        return sorted(strings)
    raise BencodeError("dictionary keys must be all integers or all byte strings")
