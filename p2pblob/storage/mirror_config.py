"""
Mirrors as the node's configuration names them (C{--mirror NAME=PLUGIN},
C{--mirror-option NAME:OPTION=VALUE}, C{--mirror-rule NAME=RULE}), the
names a stream's file may take on a mirror, and the errors of exports.
See L{p2pblob.storage.mirror} for what mirrors do.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from p2pblob.blob.store import ROLE_DOWNLOADED, ROLE_PUBLISHED
from p2pblob.errors import (
    ConfigError,
    P2PBlobError,
)
from p2pblob.interfaces import IStoragePlugin
from p2pblob.storage.configured import parse_assignment
from p2pblob.storage.discovery import find_plugin
from p2pblob.storage.options import parse_options

__all__ = [
    "RULES",
    "MirrorError",
    "MirrorTarget",
    "MirrorUnavailableError",
    "StreamNotHeldError",
    "StreamUnfinishedError",
    "UnknownMirrorError",
    "check_mirrors",
    "mirror_keys",
    "mirror_targets",
    "parse_mirror",
    "parse_mirror_option",
    "parse_mirror_rule",
]

RULES: Final = ("none", "published", "downloaded", "all")
"""
Which streams a mirror exports by itself: none, those published, those
downloaded (once finished), or both.
"""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SUFFIX_DIGITS = 16
_MAX_KEY_BYTES = 255
_MAX_EXTENSION_BYTES = 32


# -- errors ------------------------------------------------------------------


class MirrorError(P2PBlobError):
    """
    A stream cannot be exported to a mirror.
    """


class UnknownMirrorError(MirrorError):
    """
    The node has no mirror of that name.

    @ivar name: the name asked for.
    @ivar known: the names of the node's mirrors.
    """

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        names = ", ".join(self.known) or "none: give --mirror NAME=PLUGIN to twistd p2pblob"
        super().__init__(f"this node has no mirror named {name!r:.100} (its mirrors: {names})")


class StreamNotHeldError(MirrorError):
    """
    The node neither published nor downloaded the stream asked for.

    @ivar sd_hash: the stream.
    """

    def __init__(self, sd_hash: str) -> None:
        self.sd_hash = sd_hash
        super().__init__(
            f"this node holds no stream {sd_hash}: only streams it published or "
            "downloaded can be mirrored"
        )


class StreamUnfinishedError(MirrorError):
    """
    The stream asked for is a download that has not finished.

    @ivar sd_hash: the stream.
    """

    def __init__(self, sd_hash: str) -> None:
        self.sd_hash = sd_hash
        super().__init__(
            f"the download of stream {sd_hash} has not finished: it can be mirrored once "
            "it has"
        )


class MirrorUnavailableError(MirrorError):
    """
    The mirrors, or one of them, cannot export anything now.

    @ivar reason: why, in words.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# -- configuration -------------------------------------------------------------


@dataclass(frozen=True)
class MirrorTarget:
    """
    A mirror, as the configuration names it.

    @ivar name: its name (letters, digits, C{_}, C{.} and C{-}, at most 64).
    @ivar plugin: the storage plugin of its backend.
    @ivar options: C{(name, value)} pairs of that plugin's options, as
        strings.
    @ivar rule: which streams it exports by itself, one of L{RULES}.
    """

    name: str
    plugin: str
    options: tuple[tuple[str, str], ...] = ()
    rule: str = "none"

    def __post_init__(self) -> None:
        _check_name(self.name, "mirror")
        if self.rule not in RULES:
            raise ConfigError(
                f"mirror {self.name!r}: {self.rule!r:.50} is not a rule (none, published, "
                "downloaded or all)"
            )

    def selects(self, role: str, finished: bool) -> bool:
        """
        Whether this mirror's rule selects a stream of the index's C{role}.
        """
        if self.rule in ("published", "all") and role == ROLE_PUBLISHED:
            return True
        return self.rule in ("downloaded", "all") and role == ROLE_DOWNLOADED and finished


def _check_name(name: str, option: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{option}: {name!r:.100} is not a mirror name (letters, digits, '_', '.' and "
            "'-', at most 64, e.g. backup)"
        )
    return name


def parse_mirror(text: str) -> tuple[str, str]:
    """
    Read a C{--mirror NAME=PLUGIN} option.

    @return: the mirror's name and its plugin's.
    @raise ConfigError: it is not C{NAME=PLUGIN}, or the name is not one.
    """
    name, plugin = parse_assignment(text, "mirror")
    plugin = plugin.strip()
    if not plugin:
        raise ConfigError(f"mirror: {text!r:.200} names no storage plugin (NAME=PLUGIN, "
                          "e.g. backup=s3)")
    return _check_name(name, "mirror"), plugin


def parse_mirror_option(text: str) -> tuple[str, str, str]:
    """
    Read a C{--mirror-option NAME:OPTION=VALUE} option.

    @return: the mirror's name, the option's and its value.
    @raise ConfigError: it is not C{NAME:OPTION=VALUE}.
    """
    left, equals, value = text.partition("=")
    name, colon, option = left.partition(":")
    if not equals or not colon or not name.strip() or not option.strip():
        raise ConfigError(
            f"mirror-option: {text!r:.200} is not NAME:OPTION=VALUE "
            "(e.g. backup:bucket=my-backups)"
        )
    return _check_name(name.strip(), "mirror-option"), option.strip(), value


def parse_mirror_rule(text: str) -> tuple[str, str]:
    """
    Read a C{--mirror-rule NAME=RULE} option.

    @return: the mirror's name and the rule.
    @raise ConfigError: it is not C{NAME=RULE}, or the rule is not one of
        L{RULES}.
    """
    name, rule = parse_assignment(text, "mirror-rule")
    rule = rule.strip().lower()
    if rule not in RULES:
        raise ConfigError(
            f"mirror-rule: {rule!r:.50} is not a rule (none, published, downloaded or all)"
        )
    return _check_name(name, "mirror-rule"), rule


def _undeclared(option: str, name: str) -> ConfigError:
    return ConfigError(
        f"{option}: there is no mirror {name!r} (declare it with --mirror {name}=PLUGIN)"
    )


def mirror_targets(
    mirrors: Iterable[tuple[str, str]],
    options: Iterable[tuple[str, str, str]] = (),
    rules: Iterable[tuple[str, str]] = (),
) -> tuple[MirrorTarget, ...]:
    """
    The mirrors the options declare.

    @param mirrors: C{(name, plugin)} from L{parse_mirror}.
    @param options: C{(name, option, value)} from L{parse_mirror_option}.
    @param rules: C{(name, rule)} from L{parse_mirror_rule}; the last one
        given for a mirror counts.

    @return: the mirrors, in the order they were declared.
    @raise ConfigError: a mirror is declared twice, or an option or a rule
        is given for a mirror that is not declared.
    """
    declared: dict[str, str] = {}
    for name, plugin in mirrors:
        if name in declared:
            raise ConfigError(f"mirror: {name!r} is declared twice")
        declared[name] = plugin
    given: dict[str, list[tuple[str, str]]] = {name: [] for name in declared}
    for name, option, value in options:
        if name not in declared:
            raise _undeclared("mirror-option", name)
        given[name].append((option, value))
    chosen: dict[str, str] = {}
    for name, rule in rules:
        if name not in declared:
            raise _undeclared("mirror-rule", name)
        chosen[name] = rule
    return tuple(
        MirrorTarget(name, plugin, tuple(given[name]), chosen.get(name, "none"))
        for name, plugin in declared.items()
    )


def check_mirrors(
    targets: Iterable[MirrorTarget],
    plugins: Callable[[str], IStoragePlugin] = find_plugin,
) -> None:
    """
    Check the mirrors' plugins and options before the node starts.

    @param plugins: finds a storage plugin by name.

    @raise ConfigError: a plugin is not installed, or an option is unknown,
        of the wrong kind or missing; the message names the mirror, the
        plugin and the option.
    """
    for target in targets:
        try:
            parse_options(plugins(target.plugin), dict(target.options))
        except ConfigError as e:
            raise ConfigError(f"mirror {target.name!r}: {e}") from None


# -- names ---------------------------------------------------------------------


def _with_suffix(name: str, suffix: str) -> str:
    """
    C{name} with C{suffix} before its extension, its stem shortened so that
    the whole fits in L{_MAX_KEY_BYTES} bytes of UTF-8.
    """
    stem, extension = posixpath.splitext(name)
    if len(extension.encode("utf-8")) > _MAX_EXTENSION_BYTES:
        stem, extension = name, ""
    room = _MAX_KEY_BYTES - len((suffix + extension).encode("utf-8"))
    stem = stem.encode("utf-8")[: max(room, 0)].decode("utf-8", "ignore").rstrip(" .")
    return (stem or "stream") + suffix + extension


def mirror_keys(name: str, sd_hash: str) -> tuple[str, str, str]:
    """
    The names a stream may have on a mirror, in the order they are tried:
    its file name, then the name with the first 16 hex digits of its sd
    hash before the extension, then with the whole sd hash.

    @param name: the stream's file name, made safe (a single component).
    """
    return (
        name,
        _with_suffix(name, f"_{sd_hash[:_SUFFIX_DIGITS]}"),
        _with_suffix(name, f"_{sd_hash}"),
    )
