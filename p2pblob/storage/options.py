"""
The typed options a storage plugin declares, and their checking.

Options come from the configuration file or the command line as strings
(C{"5"}, C{"true"}) or already typed (from code); L{parse_options} checks
every one against the plugin's declarations and L{COMMON_OPTIONS}, converts
it, fills in defaults, and refuses anything wrong with a
L{p2pblob.errors.ConfigError} naming the plugin and the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from p2pblob.errors import ConfigError, DriverError

if TYPE_CHECKING:
    from p2pblob.interfaces import IStoragePlugin

__all__ = ["COMMON_OPTIONS", "KINDS", "REQUIRED", "Option", "parse_options"]


class _Required:
    """
    The type of L{REQUIRED}.
    """

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""
The default of an option that has none: it must be given.
"""

KINDS: Final = ("int", "float", "bool", "str", "enum")
"""
The kinds of value an option may take.
"""

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class Option:
    """
    An option a storage plugin takes.

    @ivar name: its name, as written in the configuration.
    @ivar kind: one of L{KINDS}.
    @ivar default: its value when not given, or L{REQUIRED}.
    @ivar help: what it does, in a sentence for the user.
    @ivar values: for an C{"enum"}, the strings it may be.
    @ivar minimum: for an C{"int"} or C{"float"}, the smallest value allowed,
        or C{None}.
    """

    name: str
    kind: str
    default: object = REQUIRED
    help: str = ""
    values: tuple[str, ...] = ()
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name!r}: unknown kind {self.kind!r}")
        if (self.kind == "enum") != bool(self.values):
            raise ValueError(f"option {self.name!r}: values go with, and only with, enum")
        if self.default is not REQUIRED:
            # A default is held to the same rules as a given value.
            self.convert(self.default)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def convert(self, value: object) -> Any:
        """
        Check a value of this option and give it in its kind.

        @param value: a string as written in a configuration, or a value of
            the option's kind.

        @return: the value, converted.
        @raise ValueError: it is not a value of this option; the message says
            what was expected.
        """
        converted: Any = _CONVERTERS[self.kind](self, value)
        if self.minimum is not None and converted < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}")
        return converted


def _to_int(option: Option, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("must be a whole number")


def _to_float(option: Option, value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError("must be a number")


def _to_bool(option: Option, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError("must be true or false")


def _to_str(option: Option, value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("must be a string")


def _to_enum(option: Option, value: object) -> str:
    if isinstance(value, str) and value in option.values:
        return value
    raise ValueError("must be one of " + ", ".join(repr(v) for v in option.values))


_CONVERTERS = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "enum": _to_enum,
}

COMMON_OPTIONS: Final = (
    Option(
        "chunk_size",
        "int",
        1024 * 1024,
        help="The size, in bytes, of the chunks uploaded and read (the backend may raise it).",
        minimum=1,
    ),
    Option(
        "retries",
        "int",
        5,
        help="How many times an operation the storage service failed is tried again.",
        minimum=0,
    ),
)
"""
The options every storage plugin takes, in addition to its own.
"""


def parse_options(plugin: IStoragePlugin, given: Mapping[str, object]) -> dict[str, Any]:
    """
    Check and convert the options given to a storage plugin.

    @param plugin: the plugin.
    @param given: option names mapped to strings (from a configuration file
        or the command line) or to values of the options' kinds.

    @return: every option of the plugin and every common option, mapped to
        its value: the one given, converted, or the default.
    @raise p2pblob.errors.ConfigError: an option is unknown, has a value of
        the wrong kind or out of range, or is required and missing; the
        message names the plugin and the option.
    @raise p2pblob.errors.DriverError: the plugin declares an option twice
        (or one of L{COMMON_OPTIONS}).
    """
    declared = {option.name: option for option in COMMON_OPTIONS}
    for option in plugin.options:
        if option.name in declared:
            raise DriverError(
                f"storage plugin {plugin.name!r} declares the option {option.name!r} twice"
            )
        declared[option.name] = option
    for name in given:
        if name not in declared:
            known = ", ".join(sorted(declared))
            raise ConfigError(
                f"storage plugin {plugin.name!r} has no option {name!r} (its options: {known})"
            )
    parsed: dict[str, Any] = {}
    for name, option in declared.items():
        if name not in given:
            if option.required:
                raise ConfigError(f"storage plugin {plugin.name!r} needs the option {name!r}")
            parsed[name] = option.default
            continue
        try:
            parsed[name] = option.convert(given[name])
        except ValueError as e:
            raise ConfigError(
                f"storage plugin {plugin.name!r}: option {name!r} {e}, "
                f"not {given[name]!r:.100}"
            ) from None
    return parsed
