"""
Cheques: signed, cumulative promises of payment.

A cheque says "payer owes payee C{total} micro-points in all, as of its
C{sequence}-th cheque", signed with the payer's Ed25519 key.  Each new
cheque from a payer to a payee carries the previous total plus the new
payment and the next sequence number, so the payee needs only the latest
one; a cheque that is lost is made good by the next, and one that arrives
twice, late or replayed is worth nothing more (L{credit_for}).

What is signed is L{signed_bytes}: the domain tag C{b"p2pblob-cheque-v1"}
then the fields in fixed widths, so that no two different cheques, and no
message of another kind, have the same bytes::

    b"p2pblob-cheque-v1"      17 bytes
    payer public key          32 bytes
    payee public key          32 bytes
    total (micro-points)       8 bytes, unsigned big-endian
    sequence                   8 bytes, unsigned big-endian

On the wire (an extension key of the peer protocol) a cheque is a JSON
object, L{Cheque.to_wire}::

    {"payer": "<64 hex>", "payee": "<64 hex>", "total": <int>,
     "sequence": <int>, "signature": "<128 hex>"}

L{parse_cheque} reads that form from untrusted input strictly (exactly those
keys, lowercase hex of the exact sizes, integers in range) and
L{check_cheque} then checks who it pays and its signature.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

from p2pblob.errors import ForgedChequeError, MalformedChequeError, WrongPayeeError
from p2pblob.wallet.keys import KEY_SIZE, SIGNATURE_SIZE, NodeKey, verify_signature

__all__ = [
    "CHEQUE_DOMAIN",
    "MAX_SEQUENCE",
    "MAX_TOTAL",
    "Cheque",
    "check_cheque",
    "credit_for",
    "issue_cheque",
    "parse_cheque",
    "signed_bytes",
]

CHEQUE_DOMAIN = b"p2pblob-cheque-v1"
"""
The tag every signed cheque starts with, so that a cheque signature can
never be taken for the signature of anything else.
"""

MAX_TOTAL = 2**63 - 1
"""
The largest total a cheque may carry (what the ledger can hold).
"""

MAX_SEQUENCE = 2**63 - 1
"""
The largest sequence number a cheque may carry.
"""

_WIRE_KEYS = frozenset({"payer", "payee", "total", "sequence", "signature"})
_FIELDS = struct.Struct(">QQ")


@dataclass(frozen=True)
class Cheque:
    """
    A signed cumulative promise of payment.

    @ivar payer: the payer's public key, 32 raw bytes.
    @ivar payee: the payee's public key, 32 raw bytes.
    @ivar total: every micro-point the payer has promised the payee so far,
        this cheque included.
    @ivar sequence: this cheque's number among the payer's cheques to this
        payee, counting from 1.
    @ivar signature: the payer's Ed25519 signature of L{signed_bytes}.
    """

    payer: bytes
    payee: bytes
    total: int
    sequence: int
    signature: bytes

    def signed_bytes(self) -> bytes:
        """
        The bytes the payer signed.
        """
        return signed_bytes(self.payer, self.payee, self.total, self.sequence)

    def to_wire(self) -> dict[str, Any]:
        """
        The cheque as a JSON-able C{dict}, with the keys and signature in
        lowercase hex.
        """
        return {
            "payer": self.payer.hex(),
            "payee": self.payee.hex(),
            "total": self.total,
            "sequence": self.sequence,
            "signature": self.signature.hex(),
        }

    def __repr__(self) -> str:
        return (
            f"<Cheque {self.payer.hex()[:8]}→{self.payee.hex()[:8]} "
            f"total={self.total} sequence={self.sequence}>"
        )


def signed_bytes(payer: bytes, payee: bytes, total: int, sequence: int) -> bytes:
    """
    The canonical bytes of a cheque, which its payer signs.

    @raise ValueError: a key is not 32 bytes, or the total or sequence is
        out of range.
    """
    if len(payer) != KEY_SIZE or len(payee) != KEY_SIZE:
        raise ValueError("cheque keys must be 32 bytes")
    if not 0 <= total <= MAX_TOTAL:
        raise ValueError(f"cheque total {total} is out of range")
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"cheque sequence {sequence} is out of range")
    return CHEQUE_DOMAIN + payer + payee + _FIELDS.pack(total, sequence)


def issue_cheque(key: NodeKey, payee: bytes, total: int, sequence: int) -> Cheque:
    """
    Sign a cheque from C{key}'s owner to C{payee}.
    """
    data = signed_bytes(key.public_key, payee, total, sequence)
    return Cheque(key.public_key, payee, total, sequence, key.sign(data))


def parse_cheque(value: object) -> Cheque:
    """
    Read a cheque in its wire form (L{Cheque.to_wire}) from untrusted input.

    This checks the form only; L{check_cheque} checks the signature.

    @raise MalformedChequeError: C{value} is not exactly a cheque's wire
        form.
    """
    if not isinstance(value, dict):
        raise MalformedChequeError("a cheque must be a JSON object")
    keys = set(value)
    if keys != _WIRE_KEYS:
        missing = sorted(_WIRE_KEYS - keys)
        extra = sorted(str(k)[:20] for k in keys - _WIRE_KEYS)
        detail = "; ".join(
            part for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(extra)}" if extra else "",
            ) if part
        )
        raise MalformedChequeError(f"wrong fields ({detail})")
    return Cheque(
        payer=_hex_field(value, "payer", KEY_SIZE),
        payee=_hex_field(value, "payee", KEY_SIZE),
        total=_int_field(value, "total", 0, MAX_TOTAL),
        sequence=_int_field(value, "sequence", 1, MAX_SEQUENCE),
        signature=_hex_field(value, "signature", SIGNATURE_SIZE),
    )


def _hex_field(value: dict[Any, Any], name: str, size: int) -> bytes:
    text = value[name]
    if not isinstance(text, str) or re.fullmatch(f"[0-9a-f]{{{2 * size}}}", text) is None:
        raise MalformedChequeError(f"{name} is not {2 * size} lowercase hex characters")
    return bytes.fromhex(text)


def _int_field(value: dict[Any, Any], name: str, low: int, high: int) -> int:
    number = value[name]
    if isinstance(number, bool) or not isinstance(number, int):
        raise MalformedChequeError(f"{name} is not an integer")
    if not low <= number <= high:
        raise MalformedChequeError(f"{name} {number} is out of range")
    return number


def check_cheque(cheque: Cheque, payee: bytes) -> None:
    """
    Check that C{cheque} pays C{payee} and carries its payer's signature.

    @raise WrongPayeeError: it pays some other key.
    @raise ForgedChequeError: its signature is not the payer's signature of
        its fields.
    @raise MalformedChequeError: a field is out of range (a L{Cheque} built
        by hand rather than by L{parse_cheque}).
    """
    if cheque.payee != payee:
        raise WrongPayeeError(
            f"it pays {cheque.payee.hex()[:16]}…, not this node ({payee.hex()[:16]}…)"
        )
    try:
        data = cheque.signed_bytes()
    except ValueError as e:
        raise MalformedChequeError(str(e)) from None
    if not verify_signature(cheque.payer, cheque.signature, data):
        raise ForgedChequeError(
            f"the signature is not {cheque.payer.hex()[:16]}…'s; forged or altered"
        )


def credit_for(total: int, sequence: int, last: tuple[int, int] | None) -> int | None:
    """
    The acceptance rule at the payee: what a valid cheque of C{total} and
    C{sequence} is worth, given the C{(total, sequence)} of the last cheque
    accepted from the same payer (or L{None} if there is none yet).

    A cheque is new only if its sequence is greater than the last one's and
    its total is no less; it is then worth C{total - last_total} (which may
    be 0).  Any other cheque (replayed, older, equal, or lowering the total)
    is not accepted and worth nothing.

    @return: the micro-points to credit, or L{None} if the cheque is not
        new.
    """
    last_total, last_sequence = last if last is not None else (0, 0)
    if sequence <= last_sequence or total < last_total:
        return None
    return total - last_total
