"""
Tests for L{p2pblob.discovery._gate}: whether the announcer can announce,
what it says when that changes, and when it should warn of overdue
announcements.
"""

from __future__ import annotations

from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.discovery._gate import NOT_JOINED, NOT_LISTENING, ONION_ONLY, UNREACHABLE, Gate

OVERDUE = 100.0


class GateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reachable = True
        self.port: int | None = 3333
        self.joined = True
        self.log = Logger(namespace="announcer")
        self.gate = Gate(
            reachable=lambda: self.reachable, tcp_port=lambda: self.port,
            joined=lambda: self.joined, log=self.log, overdue=OVERDUE,
        )
        self.gate.open(0.0)

    def test_reasons(self) -> None:
        """
        Announcing cannot go ahead while the node is unreachable, while the
        peer server is not listening, or while the node has not joined the
        DHT; the first of these is the reason.
        """
        self.assertIsNone(self.gate.reason())
        self.joined = False
        self.assertEqual(self.gate.reason(), NOT_JOINED)
        self.port = None
        self.assertEqual(self.gate.reason(), NOT_LISTENING)
        self.reachable = False
        self.assertEqual(self.gate.reason(), UNREACHABLE)

    def test_logged_when_changed(self) -> None:
        """
        L{Gate.check} says in the log, in the logger given, when the reason
        changes, and only then: at info level about an unreachable node, at
        debug level about waiting.
        """
        with capturedLogs() as events:
            self.gate.check(1.0)
            self.reachable = False
            self.assertEqual(self.gate.check(2.0), UNREACHABLE)
            self.gate.check(3.0)
            self.reachable = True
            self.joined = False
            self.assertEqual(self.gate.check(4.0), NOT_JOINED)
            self.joined = True
            self.assertIsNone(self.gate.check(5.0))
            self.reachable = False
            self.gate.check(6.0)
            self.reachable = True
            self.gate.check(7.0)
        said = [(e["log_level"], formatEvent(e)) for e in events]
        self.assertEqual(said, [
            (LogLevel.info, f"Not announcing blobs on the DHT: {UNREACHABLE}"),
            (LogLevel.debug, f"Announcing waits: {NOT_JOINED}"),
            (LogLevel.info, f"Not announcing blobs on the DHT: {UNREACHABLE}"),
            (LogLevel.info, "Announcing blobs on the DHT again"),
        ])
        self.assertEqual({e["log_namespace"] for e in events}, {"announcer"})
        self.assertIsNone(self.gate.blocked)

    def test_overdue(self) -> None:
        """
        An announcement is overdue once it has waited longer than the limit;
        the gate calls for a warning at most once per limit.
        """
        self.assertIsNone(self.gate.overdue(OVERDUE, 0.0))
        self.assertEqual(self.gate.overdue(OVERDUE + 1, 0.0), OVERDUE + 1)
        self.assertIsNone(self.gate.overdue(2 * OVERDUE, 0.0))
        self.assertEqual(self.gate.overdue(2 * OVERDUE + 1, 0.0), 2 * OVERDUE + 1)

    def test_overdue_while_blocked(self) -> None:
        """
        Time spent blocked does not count: while blocked nothing is overdue,
        and once announcing can go ahead again, the wait counts from then.
        """
        self.joined = False
        self.gate.check(10.0)
        self.assertIsNone(self.gate.overdue(10 * OVERDUE, 0.0))
        self.joined = True
        self.gate.check(10 * OVERDUE)
        self.assertIsNone(self.gate.overdue(11 * OVERDUE, 0.0))
        self.assertEqual(self.gate.overdue(11 * OVERDUE + 1, 0.0), OVERDUE + 1)

    def test_open(self) -> None:
        """
        L{Gate.open} (at a start) counts waits from then, and forgets what
        blocked announcing before.
        """
        self.reachable = False
        self.gate.check(1.0)
        self.gate.open(5 * OVERDUE)
        self.assertIsNone(self.gate.blocked)
        self.reachable = True
        with capturedLogs() as events:
            self.gate.check(5 * OVERDUE)
        self.assertEqual(events, [])
        self.assertIsNone(self.gate.overdue(6 * OVERDUE, 0.0))
        self.assertEqual(self.gate.overdue(6 * OVERDUE + 1, 0.0), OVERDUE + 1)


class OnionGateTests(SynchronousTestCase):
    """
    A node whose IP address peers cannot reach but that has an onion
    service announces that only; without one it announces nothing; the
    gate says which.
    """

    def setUp(self) -> None:
        self.reachable = False
        self.onion: str | None = None
        self.gate = Gate(
            reachable=lambda: self.reachable, tcp_port=lambda: 3333, joined=lambda: True,
            log=Logger(namespace="announcer"), overdue=OVERDUE, onion=lambda: self.onion,
        )
        self.gate.open(0.0)

    def test_reasons(self) -> None:
        self.assertEqual(self.gate.reason(), UNREACHABLE)
        self.assertFalse(self.gate.onion_only())
        self.assertIn("no onion service", UNREACHABLE)
        self.onion = "abc.onion:3333"
        self.assertIsNone(self.gate.reason())
        self.assertTrue(self.gate.onion_only())
        self.assertIn("only its onion service is announced", ONION_ONLY)
        self.reachable = True
        self.assertIsNone(self.gate.reason())
        self.assertFalse(self.gate.onion_only())

    def test_logged_when_changed(self) -> None:
        """
        The log says when announcing turns to the onion service only, and
        back to the node's address, or stops for want of both.
        """
        with capturedLogs() as events:
            self.assertEqual(self.gate.check(1.0), UNREACHABLE)
            self.onion = "abc.onion:3333"
            self.assertIsNone(self.gate.check(2.0))
            self.gate.check(3.0)
            self.reachable = True
            self.assertIsNone(self.gate.check(4.0))
            self.reachable = False
            self.gate.check(5.0)
            self.onion = None
            self.assertEqual(self.gate.check(6.0), UNREACHABLE)
        said = [(e["log_level"], formatEvent(e)) for e in events]
        self.assertEqual(said, [
            (LogLevel.info, f"Not announcing blobs on the DHT: {UNREACHABLE}"),
            (LogLevel.info, f"Announcing blobs on the DHT by onion service only: {ONION_ONLY}"),
            (LogLevel.info, "Announcing blobs on the DHT at this node's address again"),
            (LogLevel.info, f"Announcing blobs on the DHT by onion service only: {ONION_ONLY}"),
            (LogLevel.info, f"Not announcing blobs on the DHT: {UNREACHABLE}"),
        ])

    def test_onion_only_is_open(self) -> None:
        """
        Announcing by onion only is announcing: waits count for overdue
        warnings.
        """
        self.onion = "abc.onion:3333"
        self.gate.check(0.0)
        self.assertEqual(self.gate.overdue(OVERDUE + 1, 0.0), OVERDUE + 1)
