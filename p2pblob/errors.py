"""
Every error p2pblob raises on purpose.

All of them derive from L{P2PBlobError}; the command line turns any of them
into one line for the user (C{str(error)}) and an exit status, in exactly one
place (L{p2pblob.cli.main}).  Each family's docstring says, in a user's words,
what went wrong; the instances carry the details as attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2pblob.publish._manifest_state import Upload

__all__ = [
    "P2PBlobError",
    "ConfigError",
    "BlobError",
    "InvalidBlobHashError",
    "BlobHashMismatchError",
    "BlobTooLargeError",
    "BlobIncompleteError",
    "BlobWriteCancelledError",
    "BlobNotFoundError",
    "StorageError",
    "DiskLimitError",
    "StoragePluginError",
    "ServiceError",
    "DriverError",
    "StorageKeyNotFoundError",
    "TransferError",
    "SourceGoneError",
    "SourceChangedError",
    "TransferCancelledError",
    "TransferSupersededError",
    "DescriptorError",
    "InvalidDescriptorError",
    "StreamError",
    "DecryptionError",
    "IncompleteStreamError",
    "UnknownStreamError",
    "PublishError",
    "ManifestError",
    "UnknownPrefixError",
    "PublisherNotReadyError",
    "Refusal",
    "ManifestRefusedError",
    "UnknownUploadError",
    "UploadCompleteError",
    "UploadCancelledError",
    "UploadBusyError",
    "OffsetMismatchError",
    "WrongLengthError",
    "ChecksumMismatchError",
    "UnknownNameError",
    "PeerError",
    "ProtocolViolationError",
    "PeerTimeoutError",
    "BlobUnavailableError",
    "NoResponseError",
    "NoPeersError",
    "DHTError",
    "BencodeError",
    "DatagramError",
    "RPCTimeoutError",
    "RemoteDHTError",
    "NotAnnouncingError",
    "PortMappingError",
    "UPnPUnavailableError",
    "NoGatewayError",
    "MappingRefusedError",
    "TorError",
    "TorUnavailableError",
    "TorStartError",
    "TorBootstrapError",
    "TorLostError",
    "TorNotRunningError",
    "OnionServiceError",
    "OnionKeyError",
    "PaymentError",
    "InsufficientFundsError",
    "ReservationError",
    "UnknownPayeeError",
    "BadChequeError",
    "MalformedChequeError",
    "ForgedChequeError",
    "WrongPayeeError",
    "DebtLimitError",
    "LedgerError",
    "WalletKeyError",
    "NodeClientError",
    "NodeNotRunningError",
    "APIRequestError",
]


class P2PBlobError(Exception):
    """
    p2pblob could not do what was asked.  C{str()} of any instance is a
    sentence meant for the user.
    """


class ConfigError(P2PBlobError):
    """
    The configuration is wrong: an option has a bad value, or a setting names
    something that does not exist.
    """


class BlobError(P2PBlobError):
    """
    A blob could not be read, written or verified.

    @ivar blob_hash: the hex name of the blob concerned.
    """

    def __init__(self, blob_hash: str, message: str) -> None:
        super().__init__(message)
        self.blob_hash = blob_hash


class InvalidBlobHashError(BlobError):
    """
    A blob name is not 96 lowercase hexadecimal characters (a sha384 digest).
    """

    def __init__(self, blob_hash: str) -> None:
        super().__init__(
            blob_hash,
            f"{blob_hash!r:.120} is not a blob hash "
            "(expected 96 lowercase hex characters)",
        )


class BlobHashMismatchError(BlobError):
    """
    The bytes received for a blob do not hash to the blob's name: they are
    corrupt or forged and were thrown away.
    """

    def __init__(self, blob_hash: str, actual: str) -> None:
        super().__init__(
            blob_hash,
            f"data for blob {blob_hash[:16]}… hashes to {actual[:16]}…; "
            "it was discarded",
        )
        self.actual = actual


class BlobTooLargeError(BlobError):
    """
    More bytes arrived for a blob than its announced length, or a blob is
    larger than the 2 MiB limit.
    """

    def __init__(self, blob_hash: str, length: int, limit: int) -> None:
        super().__init__(
            blob_hash,
            f"blob {blob_hash[:16]}… is too long: {length} bytes where at "
            f"most {limit} are allowed; it was discarded",
        )
        self.length = length
        self.limit = limit


class BlobIncompleteError(BlobError):
    """
    A blob's data stopped before its announced length (a truncated transfer).
    """

    def __init__(self, blob_hash: str, received: int, expected: int) -> None:
        super().__init__(
            blob_hash,
            f"blob {blob_hash[:16]}… is incomplete: {received} of "
            f"{expected} bytes arrived; it was discarded",
        )
        self.received = received
        self.expected = expected


class BlobWriteCancelledError(BlobError):
    """
    A write of a blob was abandoned, usually because another copy of the same
    blob was verified first.  Nothing is wrong with the blob.
    """


class BlobNotFoundError(BlobError):
    """
    A blob is not in the local store.
    """

    def __init__(self, blob_hash: str) -> None:
        super().__init__(blob_hash, f"blob {blob_hash[:16]}… is not in the store")


class StorageError(P2PBlobError):
    """
    The blob store could not keep data: the disk is full, the disk-use limit
    is reached, or the store's files are damaged.
    """


class DiskLimitError(StorageError):
    """
    Storing more would exceed the configured disk-use limit, and nothing can be
    evicted to make room.

    @ivar needed: bytes that were to be stored.
    @ivar limit: the configured limit in bytes.
    @ivar used: bytes in use when the write was refused.
    """

    def __init__(self, needed: int, used: int, limit: int) -> None:
        super().__init__(
            f"the blob store is at its disk-use limit: storing {needed} more "
            f"bytes would bring it to {used + needed} of {limit} bytes, and "
            "nothing can be evicted (published and pinned streams are kept); "
            "raise --disk-limit or delete streams"
        )
        self.needed = needed
        self.used = used
        self.limit = limit


class StoragePluginError(StorageError):
    """
    A storage backend (where blobs are kept, or where streams are mirrored:
    a local folder, an object store, an SFTP server) could not do what was
    asked.

    @ivar reason: what went wrong, in words.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(reason if message is None else message)
        self.reason = reason


class ServiceError(StoragePluginError):
    """
    The storage service failed or could not be reached (a network error, a
    server error, a busy disk).  The operation is tried again a few times,
    waiting longer each time, before it is given up.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, f"the storage service failed: {reason}")


class DriverError(StoragePluginError):
    """
    A storage backend was asked something it cannot do (a bad name, an
    upload that was never started) or is itself at fault.  Trying again
    would not help, so it is not retried.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, f"storage backend: {reason}")


class StorageKeyNotFoundError(DriverError):
    """
    A storage backend holds no file under the name asked for.

    @ivar key: the name asked for.
    """

    def __init__(self, key: str) -> None:
        super().__init__(f"no file named {key!r:.200}")
        self.key = key


class TransferError(StorageError):
    """
    A file could not be uploaded to a storage backend (a blob store or a
    mirror): what it was copied from could not be read, kept changing, or
    the upload was stopped.
    """


class SourceGoneError(TransferError):
    """
    What a file was being uploaded from (a local file, a stream) can no
    longer be read: it was deleted, or cannot be opened.  Its upload is
    given up.

    @ivar source: the source, as the transfer journal describes it.
    @ivar reason: why it cannot be read, in words.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot read {source!r:.300}: {reason}")
        self.source = source
        self.reason = reason


class SourceChangedError(TransferError):
    """
    What a file was being uploaded from changed again and again while it
    was uploaded; each time the upload started over with the newer
    version, and in the end it was given up.

    @ivar source: the source, as the transfer journal describes it.
    @ivar key: the name the file was to have.
    @ivar restarts: how many times the upload started over.
    """

    def __init__(self, source: str, key: str, restarts: int) -> None:
        super().__init__(
            f"{source!r:.300} changed {restarts} times while it was uploaded as "
            f"{key!r:.200}; the upload was given up, try again once it stops changing"
        )
        self.source = source
        self.key = key
        self.restarts = restarts


class TransferCancelledError(TransferError):
    """
    An upload was stopped before it finished: it was cancelled (and what
    was sent of it thrown away), or the node is stopping (and it goes on
    from where it got to when the node starts again).

    @ivar key: the name the file was to have.
    @ivar reason: why it stopped, in words.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"the upload of {key!r:.200} stopped: {reason}")
        self.key = key
        self.reason = reason


class TransferSupersededError(TransferCancelledError):
    """
    An upload was given up because a newer upload of the same name began:
    the newer one wins.
    """

    def __init__(self, key: str) -> None:
        super().__init__(key, "a newer upload of the same name replaced it")


class DescriptorError(P2PBlobError):
    """
    A stream descriptor (sd blob) cannot be used.
    """


class InvalidDescriptorError(DescriptorError):
    """
    A stream descriptor is malformed or inconsistent.

    @ivar reason: what is wrong with it, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid stream descriptor: {reason}")
        self.reason = reason


class StreamError(P2PBlobError):
    """
    A stream could not be built, decrypted or assembled.
    """


class DecryptionError(StreamError):
    """
    A blob did not decrypt with the stream's key and IV (bad padding or a
    length that is not a multiple of the AES block).
    """


class IncompleteStreamError(StreamError):
    """
    Some blobs of a stream are missing or corrupt in the local store.

    @ivar missing: hashes of the blobs that are absent.
    @ivar corrupt: hashes of the blobs whose stored bytes are damaged.
    """

    def __init__(self, missing: list[str], corrupt: list[str]) -> None:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing")
        if corrupt:
            parts.append(f"{len(corrupt)} corrupt")
        super().__init__(
            "the stream is incomplete in the local store: "
            + " and ".join(parts)
            + " blob(s); run 'p2pblob verify' for the list"
        )
        self.missing = missing
        self.corrupt = corrupt


class UnknownStreamError(P2PBlobError):
    """
    The node has no download of the stream asked about: it was never
    started here, or it was deleted.

    @ivar sd_hash: the sd hash asked about.
    """

    def __init__(self, sd_hash: str) -> None:
        super().__init__(f"this node has no download of stream {sd_hash!r:.110}")
        self.sd_hash = sd_hash


class PublishError(P2PBlobError):
    """
    Publishing files sent over HTTP (a manifest, then its uploads) could
    not do what was asked.
    """


class ManifestError(PublishError):
    """
    A manifest is malformed: not JSON, not a list of files, or a file
    without a name, a size or an MD5 of the right form.
    """


class UnknownPrefixError(PublishError):
    """
    No prefix of that name: the node publishes only into its configured
    prefixes.
    """


class PublisherNotReadyError(PublishError):
    """
    The node is starting or stopping (its blob store is not open), or its
    publishing state cannot be used: nothing can be published right now.
    """


@dataclass(frozen=True)
class Refusal:
    """
    Why one file of a manifest was refused (the details of a
    L{ManifestRefusedError}).

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
    A manifest was not admitted: at least one of its files was refused (a
    name not valid or already taken, a file too large, or no room left for
    it), so none was.

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
    That file of the transfer was cancelled (it was asked for, its MD5 did
    not match, or its transfer key expired), or its upload was stopped:
    send a new manifest to upload it again.
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

    @ivar expected: the MD5 declared.
    @ivar actual: the MD5 of the bytes uploaded.
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


class PeerError(P2PBlobError):
    """
    A peer did not give us what we asked for: it broke the protocol, went
    quiet, or does not have the blob.

    @ivar peer: the peer concerned (printable as C{host:port}).
    """

    def __init__(self, peer: object, message: str) -> None:
        super().__init__(f"peer {peer}: {message}")
        self.peer = peer


class ProtocolViolationError(PeerError):
    """
    A peer sent something the blob-exchange protocol does not allow: a
    malformed or oversized message, a blob we did not ask for, more bytes
    than it announced.  The connection is closed and the peer is avoided.

    @ivar reason: what was wrong, in a few words.
    """

    def __init__(self, peer: object, reason: str) -> None:
        super().__init__(peer, f"broke the protocol: {reason}")
        self.reason = reason


class PeerTimeoutError(PeerError):
    """
    A peer stopped answering in the middle of an exchange.

    @ivar seconds: how long it was silent.
    """

    def __init__(self, peer: object, seconds: float) -> None:
        super().__init__(peer, f"sent nothing for {seconds:g} seconds")
        self.seconds = seconds


class BlobUnavailableError(PeerError):
    """
    A peer does not have the blob we asked it for (or will not send it).

    @ivar blob_hash: the blob asked for.
    """

    def __init__(self, peer: object, blob_hash: str, detail: str = "does not have it") -> None:
        super().__init__(peer, f"blob {blob_hash[:16]}…: {detail}")
        self.blob_hash = blob_hash


class NoResponseError(PeerError):
    """
    A peer answered a request but left out the part we asked for.

    @ivar key: the response key that was missing.
    """

    def __init__(self, peer: object, key: str) -> None:
        super().__init__(peer, f"its answer has no {key!r}")
        self.key = key


class NoPeersError(StreamError):
    """
    No peer could provide what a download needs: every known peer lacks a
    blob, failed, or could not be reached.

    @ivar missing: how many blobs were still missing.
    """

    def __init__(self, missing: int, detail: str) -> None:
        super().__init__(f"download stalled with {missing} blob(s) missing: {detail}")
        self.missing = missing


class DHTError(P2PBlobError):
    """
    Something went wrong in the distributed hash table that finds peers: a
    node sent us something we cannot read, or we were asked to send
    something LBRY nodes could not read.
    """


class BencodeError(DHTError):
    """
    Bytes are not valid bencode (the encoding of every DHT message), or a
    value cannot be bencoded.

    @ivar reason: what is wrong, in words (with the byte offset for bad
        input).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid bencoded data: {reason}")
        self.reason = reason


class DatagramError(DHTError):
    """
    A DHT datagram is not a well-formed LBRY DHT message (a request, a
    response or an error), or a message we were to send is malformed or too
    large for one datagram.  A received datagram like that is dropped.

    @ivar reason: what is wrong, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid DHT datagram: {reason}")
        self.reason = reason


class RPCTimeoutError(DHTError):
    """
    A DHT node did not answer our request in time.
    """


class RemoteDHTError(DHTError):
    """
    A DHT node answered our request with an error (for instance "Invalid
    token").

    @ivar kind: the error type the node named.
    @ivar text: its message.
    """

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(f"the DHT node refused: {text} ({kind})")
        self.kind = kind
        self.text = text


class NotAnnouncingError(DHTError):
    """
    This node does not tell the DHT which blobs it holds: it is configured
    as unreachable (peers could not connect to it: no port forwarded or
    mapped, no onion service, or the configuration says so), or announcing
    is stopped.

    @ivar reason: why, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"this node does not announce its blobs: {reason}")
        self.reason = reason



class PortMappingError(P2PBlobError):
    """
    The router in front of this node could not be asked to forward its
    ports, so peers on the internet cannot connect to it.  The node keeps
    running; it does not announce itself unless an external address is
    configured (for a port forwarded by hand).
    """


class UPnPUnavailableError(PortMappingError):
    """
    UPnP port mapping needs the C{miniupnpc} package, which is not
    installed: C{pip install 'p2pblob[upnp]'}.
    """

    def __init__(self) -> None:
        super().__init__(
            "UPnP port mapping needs the miniupnpc package, which is not"
            " installed: pip install 'p2pblob[upnp]'"
        )


class NoGatewayError(PortMappingError):
    """
    No UPnP Internet Gateway Device answered on the local network: the
    router does not speak UPnP, or has it switched off.

    @ivar reason: what the UPnP library said, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(
            "no UPnP gateway answered on the local network (is UPnP enabled on"
            f" the router?): {reason}"
        )
        self.reason = reason


class MappingRefusedError(PortMappingError):
    """
    The UPnP gateway refused to forward one of this node's ports (the port
    is taken by another machine, the router forbids it, or it failed).

    @ivar protocol: C{"TCP"} or C{"UDP"}.
    @ivar port: the port.
    @ivar reason: what the gateway said, in words.
    """

    def __init__(self, protocol: str, port: int, reason: str) -> None:
        super().__init__(
            f"the UPnP gateway refused to forward {protocol} port {port}: {reason}"
        )
        self.protocol = protocol
        self.port = port
        self.reason = reason


# ---------------------------------------------------------------------------
# Tor
# ---------------------------------------------------------------------------


def _said(last_words: str | None) -> str:
    """
    What tor last printed, as the end of a message.
    """
    return f" (tor said: {last_words})" if last_words else ""


class TorError(P2PBlobError):
    """
    Tor cannot be used: the node can neither publish its onion service nor
    reach peers through Tor until the problem is fixed and the node is
    restarted.
    """


class TorUnavailableError(TorError):
    """
    Tor is not installed: using it needs the C{txtorcon} package
    (C{pip install 'p2pblob[tor]'}) and, to run a tor of the node's own,
    the C{tor} program (C{apt-get install tor}).

    @ivar reason: what is missing, in words.
    """

    def __init__(self, reason: str | None = None) -> None:
        if reason is None:
            reason = (
                "using Tor needs the txtorcon package, which is not installed:"
                " pip install 'p2pblob[tor]'"
            )
        super().__init__(reason)
        self.reason = reason


class TorStartError(TorError):
    """
    tor did not start, exited while starting, or its control port could not
    be reached, within the time allowed.

    @ivar reason: what went wrong, in words.
    @ivar last_words: the last lines tor printed, when known.
    """

    def __init__(self, reason: str, last_words: str | None = None) -> None:
        super().__init__(f"Tor could not start: {reason}{_said(last_words)}")
        self.reason = reason
        self.last_words = last_words


class TorBootstrapError(TorError):
    """
    tor started but did not finish bootstrapping (joining the Tor network)
    within the time allowed: the network is unreachable, blocked, or slow.

    @ivar timeout: the time allowed, in seconds.
    @ivar progress: how far tor got, in percent, when known.
    @ivar summary: what tor was doing then, in its words, when known.
    @ivar last_words: the last lines tor printed, when known.
    """

    def __init__(
        self,
        timeout: float,
        progress: int | None = None,
        summary: str | None = None,
        last_words: str | None = None,
    ) -> None:
        where = ""
        if progress is not None:
            where = f": it got to {progress}%"
            if summary:
                where += f" ({summary})"
        super().__init__(
            f"Tor did not connect to the Tor network within {timeout:g} seconds{where}"
            f"{_said(last_words)}"
        )
        self.timeout = timeout
        self.progress = progress
        self.summary = summary
        self.last_words = last_words


class TorLostError(TorError):
    """
    tor was ready but went away: the node's own tor exited, or the
    connection to the configured tor's control port closed.

    @ivar reason: what happened, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"Tor stopped working: {reason}")
        self.reason = reason


class TorNotRunningError(TorError):
    """
    Tor was asked for something while the node's use of it is stopped (the
    node is shutting down).
    """

    def __init__(self, reason: str = "Tor is not running (the node is stopping)") -> None:
        super().__init__(reason)
        self.reason = reason


class OnionServiceError(TorError):
    """
    The node's onion service could not be published (or its key kept), so
    peers cannot reach the node through Tor.

    @ivar reason: what went wrong, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"could not publish the onion service: {reason}")
        self.reason = reason


class OnionKeyError(OnionServiceError):
    """
    The file holding the onion service's private key cannot be read or
    does not hold a key.  The node never replaces it on its own: the key
    I{is} the node's onion address, so a new key means a new address.

    @ivar path: the file.
    @ivar problem: what is wrong with it, in words.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"the onion service key file {path} is unusable ({problem}); restore it"
            " from a backup, or move it away to get a new onion address (peers"
            " then lose the old one)"
        )
        self.path = path
        self.problem = problem


def _points(micro: int) -> str:
    """
    Micro-points as an exact decimal number of points, for messages.
    """
    whole, fraction = divmod(abs(micro), 1_000_000)
    text = f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")
    return f"-{text}" if micro < 0 else text


class PaymentError(P2PBlobError):
    """
    A payment could not be made, accepted or accounted for.
    """


class InsufficientFundsError(PaymentError):
    """
    The wallet holds too few points, beyond those already set aside for
    payments in progress, to pay for what was asked.

    @ivar needed: the micro-points the payment needs.
    @ivar available: the micro-points not already set aside.
    """

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(
            f"not enough points: {_points(needed)} needed, {_points(available)} "
            "available; receive payments for the blobs you serve, or start "
            "with a larger --initial-grant"
        )
        self.needed = needed
        self.available = available


class ReservationError(PaymentError):
    """
    Points set aside for a payment cannot be used as asked: the reservation
    was already paid or cancelled, or the payment is larger than the
    points it set aside.

    @ivar reason: what was wrong, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot pay from this reservation: {reason}")
        self.reason = reason


class UnknownPayeeError(PaymentError):
    """
    We do not know where to pay a peer: it has not told us its payment key
    (it may not take payments at all, as LBRY peers do not).

    @ivar peer: the peer concerned.
    """

    def __init__(self, peer: object) -> None:
        super().__init__(f"peer {peer} has not told us its payment key; it cannot be paid")
        self.peer = peer


class BadChequeError(PaymentError):
    """
    A cheque (a peer's signed promise of payment) cannot be accepted; it is
    ignored and credits nothing.

    @ivar reason: what is wrong with it, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"cheque refused: {reason}")
        self.reason = reason


class MalformedChequeError(BadChequeError):
    """
    A cheque is not well formed: a field is missing, of the wrong kind or
    out of range.
    """


class ForgedChequeError(BadChequeError):
    """
    A cheque's signature does not match its payer's key: it was forged or
    altered on the way.
    """


class WrongPayeeError(BadChequeError):
    """
    A cheque pays some other node, not this one.
    """


class DebtLimitError(PaymentError):
    """
    A peer owes this node more than it lets peers owe (C{--debt-limit}): it
    is sent no more blobs until it pays.

    @ivar peer: the peer concerned.
    @ivar debt: what it owes, in micro-points.
    @ivar limit: the most it may owe, in micro-points.
    """

    def __init__(self, peer: object, debt: int, limit: int) -> None:
        super().__init__(
            f"peer {peer} owes {_points(debt)} points, more than the "
            f"{_points(limit)} allowed; it gets no more blobs until it pays"
        )
        self.peer = peer
        self.debt = debt
        self.limit = limit


class LedgerError(PaymentError, StorageError):
    """
    The wallet's ledger (its record of points, reservations and cheques)
    cannot be read or written, belongs to another wallet key, or is
    inconsistent.
    """


class WalletKeyError(PaymentError):
    """
    The wallet's key file cannot be read or created, or does not hold a
    key p2pblob can use.
    """


class NodeClientError(P2PBlobError):
    """
    The C{p2pblob} command could not get a running node to do something
    through its HTTP API.
    """


class NodeNotRunningError(NodeClientError):
    """
    No node is running with the data directory named, or its API cannot
    be reached.
    """


class APIRequestError(NodeClientError):
    """
    A running node refused a request of its API, saying why.

    @ivar status: the HTTP status.
    @ivar code: the API's error code.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
