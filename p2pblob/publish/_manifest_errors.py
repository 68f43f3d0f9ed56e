"""
What manifest publishing (L{p2pblob.publish.manifest}) refuses, and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2pblob.errors import P2PBlobError
from p2pblob.publish._manifest_state import Upload

__all__ = [
    "ChecksumMismatchError",
    "ManifestRefusedError",
    "OffsetMismatchError",
    "PublishError",
    "PublisherNotReadyError",
    "Refusal",
    "UnknownNameError",
    "UnknownPrefixError",
    "UnknownUploadError",
    "UploadBusyError",
    "UploadCancelledError",
    "UploadCompleteError",
    "WrongLengthError",
]


class PublishError(P2PBlobError):
    """
    Manifest publishing could not do what was asked.
    """


class UnknownPrefixError(PublishError):
    """
    No prefix of that name: the node publishes only into its configured
    prefixes.
    """


class PublisherNotReadyError(PublishError):
    """
    The node is starting: its blob store is not open yet.
    """


@dataclass(frozen=True)
class Refusal:
    """
    Why one file of a manifest was refused.

    @ivar number: its place in the manifest, from 0.
    @ivar name: its name, as given.
    @ivar code: C{bad_name}, C{too_large}, C{duplicate_name},
        C{name_taken}, C{quota} or C{disk_full}.
    @ivar reason: words for the user.
    """

    number: int
    name: str
    code: str
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"n": self.number, "name": self.name, "code": self.code, "reason": self.reason}


class ManifestRefusedError(PublishError):
    """
    A manifest was not admitted: at least one of its files was refused
    (none is admitted then).

    @ivar refusals: a L{Refusal} for each file refused.
    @ivar kind: the worst problem, from the caller's side: C{bad_name}
        (a name must change), C{too_large}, C{name_taken} (a name is in
        use), or C{no_room} (the quota or the disk is full).
    """

    def __init__(self, refusals: Sequence[Refusal], total: int) -> None:
        self.refusals = tuple(refusals)
        codes = {r.code for r in refusals}
        if "bad_name" in codes:
            self.kind = "bad_name"
        elif "too_large" in codes:
            self.kind = "too_large"
        elif codes & {"duplicate_name", "name_taken"}:
            self.kind = "name_taken"
        else:
            self.kind = "no_room"
        reasons = "; ".join(f"{r.name[:80]!r}: {r.reason}" for r in self.refusals[:5])
        more = f"; and {len(self.refusals) - 5} more" if len(self.refusals) > 5 else ""
        super().__init__(f"{len(self.refusals)} of the {total} file(s) of the manifest "
                         f"refused, so none was admitted: {reasons}{more}")


class UnknownUploadError(PublishError):
    """
    No such transfer key, or no such file in it: the key may have expired.
    """


class UploadCompleteError(PublishError):
    """
    That file of the transfer was already uploaded and published.

    @ivar upload: the file.
    """

    def __init__(self, upload: Upload) -> None:
        super().__init__(f"{upload.name!r} was already uploaded and published as stream "
                         f"{upload.sd_hash}")
        self.upload = upload


class UploadCancelledError(PublishError):
    """
    That file of the transfer was cancelled (asked for, or its MD5 did not
    match): send a new manifest to upload it again.
    """


class UploadBusyError(PublishError):
    """
    That file is being uploaded by another request right now.
    """


class OffsetMismatchError(PublishError):
    """
    An upload meant to go on from one offset, but the node holds the file
    up to another.

    @ivar offset: where the node can go on from.
    """

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


class WrongLengthError(PublishError):
    """
    An upload did not carry the bytes the manifest declared: too many, too
    few, or a range that does not end with the file's last byte.

    @ivar offset: where the node can go on from.
    """

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


class ChecksumMismatchError(PublishError):
    """
    The bytes uploaded do not have the MD5 the manifest declared: the file
    was not published, its blobs are removed and its entry cancelled.
    """

    def __init__(self, upload: Upload, md5: str) -> None:
        super().__init__(f"the {upload.size} bytes uploaded for {upload.name!r} have the MD5 "
                         f"{md5}, not {upload.md5} as the manifest declared; the file was not "
                         "published, and its entry is cancelled")
        self.expected = upload.md5
        self.actual = md5


class UnknownNameError(PublishError):
    """
    No file is published under that name (it may still be pending).

    @ivar pending: whether it is pending: admitted, not yet uploaded.
    """

    def __init__(self, message: str, pending: bool = False) -> None:
        super().__init__(message)
        self.pending = pending

