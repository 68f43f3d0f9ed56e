"""
Admitting a manifest's files into a prefix, all or none (L{admit}): each
name must be valid and free (neither published nor pending in the prefix,
nor twice in the manifest), each size one a stream can hold, and the files
must fit the prefix's quota and the room left in the blob store with 5 % of
the disk (and of the disk-use limit) kept free.  Refused, the manifest is
answered with every file refused and why.

Then, admitting an upload of one of the files (L{check_pending},
L{check_range}): the file must still be pending, and the upload must start
at byte 0 or where the node holds the file up to, and carry the rest.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from p2pblob.errors import (
    ManifestRefusedError,
    OffsetMismatchError,
    Refusal,
    UploadCancelledError,
    UploadCompleteError,
    WrongLengthError,
)
from p2pblob.publish._manifest_checks import MAX_FILE_SIZE, FileSpec, check_name, stored_size
from p2pblob.publish._manifest_state import (
    CANCELLED,
    COMPLETE,
    PENDING,
    ManifestState,
    Transfer,
    Upload,
)
from p2pblob.stream.crypt import random_key

__all__ = ["admit", "check_pending", "check_range"]


def admit(state: ManifestState, prefix: str, files: Sequence[FileSpec], *, now: float,
          ttl: float, quota: int | None, room: Callable[[], int | None]) -> Transfer:
    """
    Admit C{files} into C{prefix} under a new transfer key, all or none.

    @param now: the time of admission (clock seconds).
    @param ttl: seconds the transfer key stays valid from C{now}.
    @param quota: bytes the prefix may hold, or L{None}.
    @param room: tells how many more bytes the blob store can take, or
        L{None} for no bound.
    @return: the transfer, recorded in C{state}, its files pending.
    @raise ManifestRefusedError: a file was refused (then none is
        admitted).
    """
    names, refusals = _check_names(state, prefix, files)
    refusals.extend(_room_refusals(state, prefix, files, {r.number for r in refusals},
                                   quota, room()))
    if refusals:
        raise ManifestRefusedError(sorted(refusals, key=lambda r: r.number), len(files))
    key = secrets.token_hex(16)
    uploads = tuple(
        Upload(key, number, prefix, name, spec.size, spec.md5, random_key(), PENDING)
        for number, (name, spec) in enumerate(zip(names, files, strict=True)))
    transfer = Transfer(key, prefix, now, now + ttl, uploads)
    state.add_transfer(transfer)
    return transfer


def _check_names(state: ManifestState, prefix: str,
                 files: Sequence[FileSpec]) -> tuple[list[str], list[Refusal]]:
    """
    The names the files are published under, and the files refused for
    their name or size.
    """
    refusals: list[Refusal] = []
    names: list[str] = []
    seen: set[str] = set()
    for number, spec in enumerate(files):
        try:
            name = check_name(spec.name)
        except ValueError as e:
            refusals.append(Refusal(number, spec.name, "bad_name", str(e)))
            names.append(spec.name)
            continue
        names.append(name)
        if spec.size > MAX_FILE_SIZE:
            refusals.append(Refusal(number, spec.name, "too_large",
                                    f"{spec.size} bytes is more than one stream may hold "
                                    f"({MAX_FILE_SIZE} bytes)"))
        elif name in seen:
            refusals.append(Refusal(number, spec.name, "duplicate_name",
                                    "the manifest lists this name twice"))
        elif state.name_taken(prefix, name):
            refusals.append(Refusal(number, spec.name, "name_taken",
                                    f"the name is already published or pending in {prefix!r}"))
        seen.add(name)
    return names, refusals


def _room_refusals(state: ManifestState, prefix: str, files: Sequence[FileSpec],
                   refused: set[int], quota: int | None, room: int | None) -> list[Refusal]:
    """
    The files that do not fit the prefix's quota or the store's room,
    counted in manifest order (the files refused otherwise left out).
    """
    refusals = []
    used = state.prefix_usage(prefix)
    # (what the pending files have yet to store)
    needed = sum(stored_size(u.size) - u.stored for u in state.uploads(state=PENDING))
    for number, spec in enumerate(files):
        if number in refused:
            continue
        if quota is not None and used + spec.size > quota:
            refusals.append(Refusal(
                number, spec.name, "quota",
                f"{spec.size} bytes do not fit the quota of {prefix!r} ({quota} bytes, "
                f"{max(quota - used, 0)} left for this file)"))
            continue
        if room is not None and needed + stored_size(spec.size) > room:
            refusals.append(Refusal(
                number, spec.name, "disk_full",
                f"the blob store has room for {max(room - needed, 0)} more bytes (keeping "
                f"5 % free), not the {stored_size(spec.size)} this file needs"))
            continue
        used += spec.size
        needed += stored_size(spec.size)
    return refusals


def check_pending(upload: Upload) -> None:
    """
    @raise UploadCompleteError: C{upload} is already published.
    @raise UploadCancelledError: it was cancelled.
    """
    if upload.state == COMPLETE:
        raise UploadCompleteError(upload)
    if upload.state == CANCELLED:
        raise UploadCancelledError(f"the upload of {upload.name!r} was cancelled; send a "
                                   "new manifest to upload it again")


def check_range(upload: Upload, start: int, length: int | None) -> None:
    """
    Check that an upload of C{upload} from byte C{start}, carrying
    C{length} bytes (L{None}: it does not say), can go on.

    @raise OffsetMismatchError: C{start} is neither 0 nor where the node
        holds the file up to.
    @raise WrongLengthError: C{length} is not the rest of the file.
    """
    if start not in (0, upload.stored):
        raise OffsetMismatchError(
            upload.stored, f"the node holds {upload.name!r} up to byte {upload.stored}, "
            f"not {start}: go on from there")
    if length is not None and length != upload.size - start:
        raise WrongLengthError(
            upload.stored, f"{upload.name!r} is {upload.size} bytes: an upload from byte "
            f"{start} must carry {upload.size - start}, not {length}")
