"""
Tests for L{p2pblob.storage.options}: checking and converting the options
given to a storage plugin.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pblob.errors import ConfigError, DriverError
from p2pblob.storage.options import COMMON_OPTIONS, REQUIRED, Option, parse_options


class _Plugin:
    """
    Just what L{parse_options} reads of a plugin.
    """

    name = "demo"
    options = (
        Option("host", "str", help="Where the service is."),
        Option("port", "int", 22),
        Option("ratio", "float", 0.5),
        Option("secure", "bool", True),
        Option("mode", "enum", "fast", values=("fast", "safe")),
    )


class ParseOptionsTests(SynchronousTestCase):
    def parse(self, **given: object) -> dict[str, object]:
        return parse_options(_Plugin(), given)  # type: ignore[arg-type]

    def refused(self, option: str, **given: object) -> str:
        error = self.assertRaises(ConfigError, self.parse, **given)
        self.assertIn("'demo'", str(error))
        self.assertIn(repr(option), str(error))
        return str(error)

    def test_defaults(self) -> None:
        """
        Options not given take their defaults, the common ones included.
        """
        self.assertEqual(
            self.parse(host="h"),
            {
                "chunk_size": 1024 * 1024,
                "retries": 5,
                "host": "h",
                "port": 22,
                "ratio": 0.5,
                "secure": True,
                "mode": "fast",
            },
        )

    def test_strings_converted(self) -> None:
        """
        Strings from a configuration file or the command line are converted.
        """
        parsed = self.parse(
            host="h", port="2222", ratio="0.25", secure="no", mode="safe", retries=" 7 "
        )
        self.assertEqual(
            (parsed["port"], parsed["ratio"], parsed["secure"], parsed["mode"], parsed["retries"]),
            (2222, 0.25, False, "safe", 7),
        )
        for word, value in [("true", True), ("YES", True), ("on", True), ("0", False)]:
            self.assertIs(self.parse(host="h", secure=word)["secure"], value)

    def test_values_kept(self) -> None:
        """
        Values of the right kind are taken as they are; an int is a float.
        """
        parsed = self.parse(host="h", port=80, ratio=1, secure=False)
        self.assertEqual((parsed["port"], parsed["ratio"], parsed["secure"]), (80, 1.0, False))

    def test_unknown(self) -> None:
        """
        An unknown option is refused, and the message lists the known ones.
        """
        message = self.refused("colour", host="h", colour="blue")
        self.assertIn("chunk_size", message)

    def test_missing(self) -> None:
        """
        A required option must be given.
        """
        self.refused("host")

    def test_wrong_kind(self) -> None:
        """
        Values that are not of the option's kind are refused.
        """
        self.refused("port", host="h", port="twenty")
        self.refused("port", host="h", port=True)
        self.refused("port", host="h", port=2.5)
        self.refused("ratio", host="h", ratio="half")
        self.refused("secure", host="h", secure="maybe")
        self.refused("secure", host="h", secure=1)
        self.refused("host", host=5)
        self.refused("mode", host="h", mode="slow")

    def test_minimum(self) -> None:
        """
        The common options refuse values below their minimum.
        """
        self.refused("chunk_size", host="h", chunk_size="0")
        self.refused("retries", host="h", retries=-1)
        self.assertEqual(self.parse(host="h", retries=0)["retries"], 0)

    def test_common_repeated(self) -> None:
        """
        A plugin may not declare a common option again.
        """

        class Repeating(_Plugin):
            options = (COMMON_OPTIONS[0],)

        self.assertRaises(DriverError, parse_options, Repeating(), {})  # type: ignore[arg-type]


class OptionTests(SynchronousTestCase):
    def test_required(self) -> None:
        self.assertTrue(Option("x", "str").required)
        self.assertIs(Option("x", "str").default, REQUIRED)
        self.assertFalse(Option("x", "str", "").required)

    def test_bad_declarations(self) -> None:
        """
        Mistakes in declaring an option are found when it is declared.
        """
        self.assertRaises(ValueError, Option, "x", "list")
        self.assertRaises(ValueError, Option, "x", "enum")
        self.assertRaises(ValueError, Option, "x", "str", values=("a",))
        self.assertRaises(ValueError, Option, "x", "int", "many")
        self.assertRaises(ValueError, Option, "x", "enum", "c", values=("a", "b"))
