"""
Tests for L{p2pblob.wallet.cheques}: the signed encoding, its vector,
strict parsing of untrusted input, and the acceptance rule.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import (
    BadChequeError,
    ForgedChequeError,
    MalformedChequeError,
    WrongPayeeError,
)
from p2pblob.wallet.cheques import (
    CHEQUE_DOMAIN,
    MAX_TOTAL,
    Cheque,
    check_cheque,
    credit_for,
    issue_cheque,
    parse_cheque,
    signed_bytes,
)
from p2pblob.wallet.keys import NodeKey
from tests.wallet._helpers import SEED_A, SEED_B, SEED_C

A = NodeKey.from_seed(SEED_A)
B = NodeKey.from_seed(SEED_B)
C = NodeKey.from_seed(SEED_C)

# A cheque from A to B for 1.5 points in all, the third: its keys, the
# bytes A signs and A's signature (Ed25519 signatures are deterministic).
VECTOR_PAYER = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
VECTOR_PAYEE = "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7"
VECTOR_SIGNED = (
    CHEQUE_DOMAIN.hex() + VECTOR_PAYER + VECTOR_PAYEE
    + "000000000016e360"  # 1_500_000
    + "0000000000000003"
)
VECTOR_SIGNATURE = (
    "bec299457fe85e6e59ed1b8a077d45bd2d6da9e34936536de04e0f61b19637d2"
    "fe386db1d5d7b1a0a3af851ead066283519eab91e5bce1c27e7d2aeefe934103"
)


class EncodingTests(SynchronousTestCase):
    def test_vector(self) -> None:
        """
        The signed bytes are the domain tag and the fixed-width fields, and
        the signature is the known one.
        """
        self.assertEqual(A.public_hex, VECTOR_PAYER)
        self.assertEqual(B.public_hex, VECTOR_PAYEE)
        cheque = issue_cheque(A, B.public_key, 1_500_000, 3)
        self.assertEqual(CHEQUE_DOMAIN, b"p2pblob-cheque-v1")
        self.assertEqual(cheque.signed_bytes().hex(), VECTOR_SIGNED)
        self.assertEqual(len(cheque.signed_bytes()), 17 + 32 + 32 + 8 + 8)
        self.assertEqual(cheque.signature.hex(), VECTOR_SIGNATURE)
        check_cheque(cheque, B.public_key)

    def test_wire_vector(self) -> None:
        """
        The wire form of the vector parses, verifies, and is the form
        L{Cheque.to_wire} gives.
        """
        wire = {
            "payer": VECTOR_PAYER, "payee": VECTOR_PAYEE, "total": 1_500_000,
            "sequence": 3, "signature": VECTOR_SIGNATURE,
        }
        cheque = parse_cheque(json.loads(json.dumps(wire)))
        check_cheque(cheque, B.public_key)
        self.assertEqual(cheque.to_wire(), wire)
        self.assertEqual(cheque, issue_cheque(A, B.public_key, 1_500_000, 3))

    @given(st.integers(0, MAX_TOTAL), st.integers(1, 2**63 - 1))
    def test_round_trip(self, total: int, sequence: int) -> None:
        """
        Any cheque survives JSON and verifies.
        """
        cheque = issue_cheque(A, B.public_key, total, sequence)
        again = parse_cheque(json.loads(json.dumps(cheque.to_wire())))
        self.assertEqual(again, cheque)
        check_cheque(again, B.public_key)

    @given(st.data())
    def test_tampered_byte(self, data: st.DataObject) -> None:
        """
        Changing any byte of the signed fields or of the signature makes
        the cheque a forgery (or one for someone else).
        """
        cheque = issue_cheque(A, B.public_key, 1_500_000, 3)
        raw = bytearray(cheque.signed_bytes()[len(CHEQUE_DOMAIN):] + cheque.signature)
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= data.draw(st.integers(1, 255))
        tampered = Cheque(
            bytes(raw[0:32]), bytes(raw[32:64]),
            int.from_bytes(raw[64:72], "big"), int.from_bytes(raw[72:80], "big"),
            bytes(raw[80:]),
        )
        with self.assertRaises(BadChequeError):
            check_cheque(tampered, B.public_key)

    def test_forged(self) -> None:
        """
        A cheque signed by someone other than its payer is forged; one
        whose total was raised after signing too.
        """
        by_c = issue_cheque(C, B.public_key, 5, 1)
        forged = Cheque(A.public_key, B.public_key, 5, 1, by_c.signature)
        with self.assertRaises(ForgedChequeError):
            check_cheque(forged, B.public_key)
        good = issue_cheque(A, B.public_key, 5, 1)
        raised = Cheque(good.payer, good.payee, 5_000_000, 1, good.signature)
        with self.assertRaises(ForgedChequeError) as e:
            check_cheque(raised, B.public_key)
        self.assertIn("forged or altered", str(e.exception))

    def test_wrong_payee(self) -> None:
        """
        A cheque to C is refused by B, even if genuine.
        """
        cheque = issue_cheque(A, C.public_key, 5, 1)
        with self.assertRaises(WrongPayeeError) as e:
            check_cheque(cheque, B.public_key)
        self.assertIn("not this node", str(e.exception))

    def test_out_of_range(self) -> None:
        """
        Fields that cannot be encoded are refused when signing and when
        checking.
        """
        for total, sequence in ((-1, 1), (MAX_TOTAL + 1, 1), (0, 0), (0, 2**63)):
            with self.assertRaises(ValueError):
                signed_bytes(A.public_key, B.public_key, total, sequence)
            with self.assertRaises(MalformedChequeError):
                check_cheque(Cheque(A.public_key, B.public_key, total, sequence, b"\0" * 64),
                             B.public_key)
        with self.assertRaises(ValueError):
            signed_bytes(A.public_key[:31], B.public_key, 0, 1)


def _good() -> dict[str, Any]:
    return issue_cheque(A, B.public_key, 10, 2).to_wire()


class ParsingTests(SynchronousTestCase):
    def test_malformed(self) -> None:
        """
        Anything but exactly the wire form is malformed, and says why.
        """
        cases: list[tuple[object, str]] = [
            (None, "JSON object"),
            ([1, 2], "JSON object"),
            ("cheque", "JSON object"),
            ({k: v for k, v in _good().items() if k != "total"}, "missing total"),
            ({**_good(), "extra": 1}, "unexpected extra"),
            ({**_good(), "payer": _good()["payer"].upper()}, "payer is not 64 lowercase"),
            ({**_good(), "payee": _good()["payee"][:-2]}, "payee is not 64"),
            ({**_good(), "payee": 5}, "payee is not"),
            ({**_good(), "signature": "zz" * 64}, "signature is not 128"),
            ({**_good(), "total": "10"}, "total is not an integer"),
            ({**_good(), "total": 10.0}, "total is not an integer"),
            ({**_good(), "total": True}, "total is not an integer"),
            ({**_good(), "total": -1}, "total -1 is out of range"),
            ({**_good(), "total": 2**63}, "out of range"),
            ({**_good(), "sequence": 0}, "sequence 0 is out of range"),
            ({**_good(), "sequence": None}, "sequence is not an integer"),
        ]
        for value, message in cases:
            with self.assertRaises(MalformedChequeError, msg=repr(value)) as e:
                parse_cheque(value)
            self.assertIn(message, str(e.exception))
            self.assertTrue(str(e.exception).startswith("cheque refused: "))

    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=130),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(sorted(_good()) + ["x"]), children, max_size=6),
        max_leaves=20,
    ))
    def test_anything(self, value: object) -> None:
        """
        Arbitrary JSON values either parse or raise L{MalformedChequeError};
        nothing else escapes.
        """
        try:
            parse_cheque(value)
        except MalformedChequeError:
            pass

    @given(st.dictionaries(st.sampled_from(sorted(_good())), st.integers(), min_size=5))
    def test_fields_of_wrong_kinds(self, value: dict[str, Any]) -> None:
        with self.assertRaises(MalformedChequeError):
            parse_cheque(value)


class AcceptanceRuleTests(SynchronousTestCase):
    def test_rule(self) -> None:
        """
        New means a greater sequence and a total no less; it is worth the
        increase.  Anything else is worth nothing.
        """
        self.assertEqual(credit_for(10, 1, None), 10)
        self.assertEqual(credit_for(0, 1, None), 0)
        self.assertEqual(credit_for(15, 3, (10, 2)), 5)
        self.assertEqual(credit_for(10, 3, (10, 2)), 0)   # new, adds nothing
        self.assertEqual(credit_for(25, 9, (10, 2)), 15)  # lost cheques made good
        self.assertIsNone(credit_for(10, 2, (10, 2)))     # replayed
        self.assertIsNone(credit_for(8, 1, (10, 2)))      # older
        self.assertIsNone(credit_for(20, 2, (10, 2)))     # same sequence, other total
        self.assertIsNone(credit_for(9, 3, (10, 2)))      # total went down

    @given(st.lists(st.integers(0, 100), min_size=1, max_size=12), st.data())
    def test_any_delivery_order(self, payments: list[int], data: st.DataObject) -> None:
        """
        However a payer's cheques are lost, repeated or reordered, the payee
        is credited exactly the total of the newest one it accepted, never
        more than was promised.
        """
        totals = [sum(payments[:i + 1]) for i in range(len(payments))]
        issued = [(total, i + 1) for i, total in enumerate(totals)]
        deliveries = data.draw(st.lists(st.sampled_from(issued), max_size=30))
        last: tuple[int, int] | None = None
        credited = 0
        for total, sequence in deliveries:
            credit = credit_for(total, sequence, last)
            if credit is not None:
                credited += credit
                last = (total, sequence)
        self.assertEqual(credited, last[0] if last else 0)
        self.assertEqual(credited, max((total for total, _ in deliveries), default=0))
        self.assertLessEqual(credited, totals[-1])
