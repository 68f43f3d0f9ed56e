"""
The contracts between p2pblob's subsystems.

Every interface here is a boundary that more than one part of the node relies
on: finding peers, the client and server halves of the peer protocol,
downloading streams, rate limiting, payments, the blob store and the
storage plugins behind it.  The catalogue restates the one LBRY drew up in
2015 (same names, same methods and arguments, with its mistakes fixed) and
adds the blob-store and storage-plugin contracts p2pblob needs.  Every real class and every fake in C{p2pblob.testing}
declares what it provides with C{@implementer} and is checked with
L{zope.interface.verify.verifyObject} or L{zope.interface.verify.verifyClass};
so that those checks accept correct implementations, the methods below are
declared without C{self}, as zope.interface requires.  A blob hash is a
C{str} of 96 lowercase hexadecimal characters (a sha384 digest) and blob data
is C{bytes}; whenever a method returns a L{Deferred}, its docstring says what
the Deferred fires with and which failures it may carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BufferedIOBase
from typing import TYPE_CHECKING, Any

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import (
        IConsumer,
        IReactorTime,
        IStreamClientEndpoint,
        IStreamServerEndpoint,
    )
    from twisted.python.failure import Failure
    from twisted.web.server import Request

__all__ = [
    "IBlob",
    "IBlobHandler",
    "IBlobSender",
    "IBlobStore",
    "IBlobWriter",
    "IBodyReceiver",
    "IConnectionManager",
    "IConnectionRateLimiter",
    "IDownloadManager",
    "IHashAnnouncer",
    "IMetadataHandler",
    "IPaymentRateManager",
    "IPeerFinder",
    "IPortMapper",
    "IProgressManager",
    "IQueryHandler",
    "IQueryHandlerFactory",
    "IRateLimited",
    "IRateLimiter",
    "IRequestCreator",
    "IRequestHandler",
    "IRequestSender",
    "IStreamDescriptorValidator",
    "IStreamDownloader",
    "IStorageBackend",
    "IStoragePlugin",
    "IStreamDownloaderFactory",
    "ITorProvider",
    "IWallet",
]


# ---------------------------------------------------------------------------
# Finding peers and talking to them (client side)
# ---------------------------------------------------------------------------


class IPeerFinder(Interface):
    """
    Finds the peers that say they hold a given blob (the DHT, or a fixed list
    of peers given on the command line).
    """

    def find_peers_for_blob(blob_hash: str) -> Deferred[list[Any]]:
        """
        Look up the peers that claim to hold the blob named C{blob_hash}.

        Finding nobody is not an error: the Deferred then fires with an empty
        list.

        @param blob_hash: the name of the blob (a data blob or an sd blob).
        @type blob_hash: C{str}, 96 lowercase hex characters

        @return: a Deferred that fires with a C{list} of C{Peer}s, in no
            particular order.  It fails with
            L{p2pblob.errors.InvalidBlobHashError} if C{blob_hash} is not a
            blob hash.
        @rtype: L{Deferred}
        """


class IRequestSender(Interface):
    """
    One connection to one peer: sends the requests it is given to that peer
    and hands back the peer's responses.

    Requests added before the next message goes out are sent together in
    that message, as one JSON object.
    """

    def add_request(request: Any) -> Deferred[dict[str, Any]]:
        """
        Queue C{request} so that it goes out in the next message to the peer.

        @param request: a request for the peer: the query fields to send and
            the response keys that answer it.
        @type request: C{ClientRequest}

        @return: a Deferred that fires with the peer's answer to this request,
            a C{dict} taken from the response JSON.  It fails if the peer's
            response is malformed or does not answer the request (with a
            L{p2pblob.errors.P2PBlobError}), or with the reason the
            connection was lost (for instance
            L{twisted.internet.error.ConnectionLost}) if it closes first.
        @rtype: L{Deferred}
        """

    def add_blob_request(blob_request: Any) -> Deferred[dict[str, Any]]:
        """
        Queue a request that asks the peer to send a blob.

        Once the response JSON has been parsed, every following byte from the
        peer is handed to C{blob_request.write(data)}, until
        C{blob_request.finished_deferred} fires; the request in turn feeds
        those bytes to an L{IBlobWriter}, which verifies them.

        @param blob_request: the request for the blob; its C{write} receives
            the blob's bytes.
        @type blob_request: C{ClientBlobRequest}

        @return: a Deferred that fires with the peer's answer to the request,
            a C{dict} taken from the response JSON that precedes the blob's
            bytes.  It fails as the Deferred of L{add_request} does.  Whether
            the blob itself arrived intact is reported by the writer's
            C{finished}, not here.
        @rtype: L{Deferred}
        """


class IRequestCreator(Interface):
    """
    Decides what to ask of peers (which blobs are available, which blob to
    send, what price to pay) and gives those requests to an
    L{IRequestSender}.
    """

    def send_next_request(peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        """
        Build the next request this creator wants to send to C{peer}, if it
        wants one, and give it to C{protocol}.

        @param peer: the peer the request would be sent to.
        @type peer: C{Peer}
        @param protocol: the connection to C{peer} that sends the request.
        @type protocol: L{IRequestSender} provider

        @return: a Deferred that fires with C{True} if a request was given to
            C{protocol}, or C{False} if this creator has nothing to ask of
            C{peer} now.
        @rtype: L{Deferred}
        """

    def get_new_peers() -> Deferred[list[Any]]:
        """
        Find more peers this creator would like to send requests to, usually
        with an L{IPeerFinder}.

        @return: a Deferred that fires with a C{list} of C{Peer}s, possibly
            empty.  A failure to find peers is reported as an empty list,
            not as a failure.
        @rtype: L{Deferred}
        """


# ---------------------------------------------------------------------------
# Downloading a stream
# ---------------------------------------------------------------------------


class IMetadataHandler(Interface):
    """
    Tells an L{IDownloadManager} which blobs make up its stream.
    """

    def get_initial_blobs() -> Deferred[list[Any]]:
        """
        Describe the blobs known to belong to the stream when the download is
        set up; for a stream read from a stream descriptor, that is all of
        them.

        @return: a Deferred that fires with a C{list} of C{BlobInfo}s (each
            gives a blob's position C{blob_num}, hash, length and IV), in
            stream order.  It fails with
            L{p2pblob.errors.InvalidDescriptorError} if the stream's metadata
            cannot be used.
        @rtype: L{Deferred}
        """

    def final_blob_num() -> int | None:
        """
        Give the position of the stream's last blob, if it is known.

        @return: the C{blob_num} of the last blob of the stream, or C{None}
            if that is not known yet.
        @rtype: C{int} or C{None}
        """


class IDownloadManager(Interface):
    """
    Runs the download of one stream, a group of blobs that belong together.

    It keeps the stream's metadata, starts and stops the other parts of the
    download (metadata handler, progress manager, connection manager, blob
    handler) and passes information between them.
    """

    def start_downloading() -> Deferred[bool]:
        """
        Load the stream's initial metadata, then start the other parts of the
        download.

        @return: a Deferred that fires with C{True} once the other parts have
            been started.  It fails with
            L{p2pblob.errors.InvalidDescriptorError} if the metadata cannot be
            loaded, or with L{p2pblob.errors.StreamError} if the download
            cannot start.
        @rtype: L{Deferred}
        """

    def resume_downloading() -> Deferred[bool]:
        """
        Start the other parts of the download again after
        L{pause_downloading} stopped them.

        @return: a Deferred that fires with C{True} once they have been
            started again.
        @rtype: L{Deferred}
        """

    def pause_downloading() -> Deferred[bool]:
        """
        Stop the other parts of the download.  Blobs already verified are
        kept, so a later L{resume_downloading} does not fetch them again.

        @return: a Deferred that fires with C{True} once they have stopped.
        @rtype: L{Deferred}
        """

    def add_blobs_to_download(blobs: list[Any]) -> Deferred[list[tuple[bool, Any]]]:
        """
        Add blobs to those the download should fetch.  Blobs the manager
        already knows about are ignored.

        @param blobs: descriptions of blobs that belong to the stream.
        @type blobs: C{list} of C{BlobInfo}

        @return: a Deferred that fires once each previously unknown blob has
            been added, with a C{list} of C{(success, result)} pairs, one per
            added blob, as a L{twisted.internet.defer.DeferredList} does.
        @rtype: L{Deferred}
        """

    def stream_position() -> int:
        """
        Give the position of the next blob the stream needs.

        @return: the C{blob_num} of the first blob still needed, or, when the
            stream has every blob it needs, the C{blob_num} of its last blob
            plus one.
        @rtype: C{int}
        """

    def needed_blobs() -> list[Any]:
        """
        List the blobs the stream still has to download.

        @return: descriptions of the blobs still needed.
        @rtype: C{list} of C{BlobInfo}
        """

    def final_blob_num() -> int | None:
        """
        Give the position of the stream's last blob, if it is known.

        @return: the C{blob_num} of the last blob of the stream, or C{None}
            if that is not known yet.
        @rtype: C{int} or C{None}
        """

    def handle_blob(blob_num: int) -> Deferred[Any]:
        """
        Deal with the blob at position C{blob_num}, now that it is the next
        blob of the stream and has been downloaded: hand it to the stream's
        L{IBlobHandler}.

        @param blob_num: the position in the stream of the blob to handle.
        @type blob_num: C{int}

        @return: a Deferred that fires, with a result callers must not rely
            on, once the blob has been handled.  It fails as the handler's
            L{IBlobHandler.blob_downloaded} does, for instance with
            L{p2pblob.errors.StreamError}.
        @rtype: L{Deferred}
        """


class IConnectionManager(Interface):
    """
    Keeps connections open to peers so that the download's
    L{IRequestCreator}s can send them requests.
    """

    def get_next_request(peer: Any, protocol: IRequestSender) -> Deferred[bool]:
        """
        Ask each of this manager's request creators to build a request for
        C{peer} and give it to C{protocol}.

        @param peer: the peer the requests would be sent to.
        @type peer: C{Peer}
        @param protocol: the connection to C{peer} that sends the requests.
        @type protocol: L{IRequestSender} provider

        @return: a Deferred that fires with C{True} if at least one request
            was given to C{protocol}, which should then send its message, or
            with C{False} if none was, and C{protocol} should hang up.
        @rtype: L{Deferred}
        """

    def protocol_disconnected(peer: Any, protocol: IRequestSender) -> None:
        """
        Tell the manager that the connection to C{peer} has been lost, so that
        it forgets C{protocol} and may connect to another peer.

        @param peer: the peer the connection was to.
        @type peer: C{Peer}
        @param protocol: the connection that was lost.
        @type protocol: L{IRequestSender} provider

        @return: C{None}
        """


class IProgressManager(Interface):
    """
    Tracks the progress of a download: decides which blobs still need to be
    fetched, and hands downloaded blobs on in stream order.
    """

    def stream_position() -> int:
        """
        Give the position of the next blob the stream needs.

        @return: the C{blob_num} of the first blob still needed, or, when the
            stream has every blob it needs, the C{blob_num} of its last blob
            plus one.
        @rtype: C{int}
        """

    def needed_blobs() -> list[Any]:
        """
        List the blobs the stream still has to download.

        @return: descriptions of the blobs still needed.
        @rtype: C{list} of C{BlobInfo}
        """

    def blob_downloaded(blob: IBlob, blob_info: Any) -> None:
        """
        Record that a blob has been downloaded and verified, so that it is
        not fetched again.

        @param blob: the blob that was downloaded.
        @type blob: L{IBlob} provider
        @param blob_info: the description of that blob in the stream.
        @type blob_info: C{BlobInfo}

        @return: C{None}
        """


class IBlobHandler(Interface):
    """
    Does whatever the download is for with each blob it fetches: decrypts
    it into a file, feeds it to an HTTP response, copies it to a storage
    backend.

    The blobs of a stream are given in stream order, and the next may be
    given before the Deferred of the one before it has fired (a few at a
    time, so that a handler working in a thread always has the next blob at
    hand).  A handler deals with them in the order given, and once one
    fails, deals with none given after it.
    """

    def blob_downloaded(blob: IBlob, blob_info: Any) -> Deferred[Any]:
        """
        Deal with a blob that has been downloaded and verified.

        @param blob: the downloaded blob.
        @type blob: L{IBlob} provider
        @param blob_info: the description of that blob in the stream.
        @type blob_info: C{BlobInfo}

        @return: a Deferred that fires, with a result callers must not rely
            on, once the blob has been dealt with.  It may fail with
            L{p2pblob.errors.StreamError} (for instance
            L{p2pblob.errors.DecryptionError} if the blob does not decrypt),
            with L{p2pblob.errors.BlobNotFoundError} if the blob disappeared
            from the store, or with L{p2pblob.errors.StorageError} if the
            result cannot be written.
        @rtype: L{Deferred}
        """


# ---------------------------------------------------------------------------
# Rate limiting
# ---------------------------------------------------------------------------


class IRateLimited(Interface):
    """
    A connection that can be throttled: told to stop moving data for a
    while, then to go on.
    """

    def throttle_upload() -> None:
        """
        Stop sending data until L{unthrottle_upload} is called.

        @return: C{None}
        """

    def throttle_download() -> None:
        """
        Stop receiving data until L{unthrottle_download} is called.

        @return: C{None}
        """

    def unthrottle_upload() -> None:
        """
        Send data freely again, until L{throttle_upload} is next called.

        @return: C{None}
        """

    def unthrottle_download() -> None:
        """
        Receive data freely again, until L{throttle_download} is next called.

        @return: C{None}
        """


class IRateLimiter(Interface):
    """
    Counts the bytes the node uploads and downloads, and throttles the
    registered L{IRateLimited} connections to keep within the configured
    rates.

    A limiter calls a registered connection's C{throttle_upload} and
    C{unthrottle_upload} alternately, the first call being
    C{throttle_upload} (and likewise for downloads), and calls none of them
    once the connection is unregistered.  The bytes reported here are not
    attributed to any connection: a connection that can name itself reports
    through L{IConnectionRateLimiter} when the limiter provides it.
    """

    def report_dl_bytes(num_bytes: int) -> None:
        """
        Tell the rate limiter that C{num_bytes} bytes have been received.

        @param num_bytes: the number of bytes received.
        @type num_bytes: C{int}

        @return: C{None}
        """

    def report_ul_bytes(num_bytes: int) -> None:
        """
        Tell the rate limiter that C{num_bytes} bytes have been sent.

        @param num_bytes: the number of bytes sent.
        @type num_bytes: C{int}

        @return: C{None}
        """

    def register_protocol(protocol: IRateLimited) -> None:
        """
        Start throttling C{protocol} along with the other registered
        connections.  If the limiter is throttling at the moment, C{protocol}
        is throttled at once.

        @param protocol: the connection to throttle.
        @type protocol: L{IRateLimited} provider

        @return: C{None}
        """

    def unregister_protocol(protocol: IRateLimited) -> None:
        """
        Stop throttling C{protocol}, which was given to L{register_protocol}
        before (typically because its connection was lost).

        @param protocol: the connection to forget.
        @type protocol: L{IRateLimited} provider

        @return: C{None}
        """


class IConnectionRateLimiter(IRateLimiter):
    """
    A rate limiter told which connection moved each byte.  Knowing that, it
    can share the node's rates fairly among the connections, hold each
    connection to a rate of its own, and count bytes per peer and per
    stream.

    A connection registered with L{register_connection} reports its bytes
    with L{report_dl_bytes_from} and L{report_ul_bytes_to} (instead of
    C{report_dl_bytes} and C{report_ul_bytes}), and is unregistered with
    C{unregister_protocol}.
    """

    def register_connection(protocol: IRateLimited, peer: str) -> None:
        """
        Like C{register_protocol}: start throttling C{protocol}, at once if
        the limiter is throttling at the moment; and count its bytes
        against C{peer}.

        @param protocol: the connection to throttle.
        @type protocol: L{IRateLimited} provider
        @param peer: the remote end, as the per-peer figures name it (the
            remote host).
        @type peer: C{str}

        @return: C{None}
        """

    def report_dl_bytes_from(protocol: IRateLimited, num_bytes: int) -> None:
        """
        C{num_bytes} bytes have been received on C{protocol}.  Bytes from a
        connection that is not (or no longer) registered count against the
        node's download rate only.

        @param protocol: the connection that received them.
        @type protocol: L{IRateLimited} provider
        @param num_bytes: the number of bytes received.
        @type num_bytes: C{int}

        @return: C{None}
        """

    def report_ul_bytes_to(protocol: IRateLimited, num_bytes: int) -> None:
        """
        C{num_bytes} bytes have been sent on C{protocol}.  Bytes from a
        connection that is not (or no longer) registered count against the
        node's upload rate only.

        @param protocol: the connection that sent them.
        @type protocol: L{IRateLimited} provider
        @param num_bytes: the number of bytes sent.
        @type num_bytes: C{int}

        @return: C{None}
        """

    def report_blob_bytes(
        protocol: IRateLimited, blob_hash: str, sent: int, received: int
    ) -> None:
        """
        A blob transfer on C{protocol} has ended (complete or cut short)
        after C{sent} or C{received} bytes of the blob's body moved.  Those
        bytes have already been reported with L{report_ul_bytes_to} or
        L{report_dl_bytes_from}; this only says which blob (and so which
        stream) they belonged to, for the per-stream figures.

        @param protocol: the connection they moved on.
        @type protocol: L{IRateLimited} provider
        @param blob_hash: the blob.
        @type blob_hash: C{str}
        @param sent: body bytes of the blob sent on C{protocol}.
        @type sent: C{int}
        @param received: body bytes of the blob received on C{protocol}.
        @type received: C{int}

        @return: C{None}
        """


# ---------------------------------------------------------------------------
# Answering peers (server side)
# ---------------------------------------------------------------------------


class IRequestHandler(Interface):
    """
    The server side of one connection: hands each query a peer sends to the
    L{IQueryHandler} registered for it, and sends a blob afterwards if one
    was asked for.
    """

    def register_query_handler(
        query_handler: IQueryHandler, query_identifiers: list[str]
    ) -> None:
        """
        Have C{query_handler} answer every query whose identifier is one of
        C{query_identifiers}.

        @param query_handler: the object that answers those queries.
        @type query_handler: L{IQueryHandler} provider
        @param query_identifiers: the request keys of the queries to pass to
            C{query_handler} (for instance C{"requested_blobs"}).
        @type query_identifiers: C{list} of C{str}

        @return: C{None}
        """

    def register_blob_sender(blob_sender: IBlobSender) -> None:
        """
        Have C{blob_sender} asked, after each response has been written,
        whether it wants to send a blob.

        @param blob_sender: the object that uploads blobs to the peer.
        @type blob_sender: L{IBlobSender} provider

        @return: C{None}
        """


class IBlobSender(Interface):
    """
    Uploads blobs to the peer at the other end of a connection.
    """

    def send_blob_if_requested(consumer: IConsumer) -> Deferred[Any]:
        """
        If the request just answered asked for a blob, write the blob's bytes
        to C{consumer} (through a producer, so that memory use does not grow
        with the blob's size).

        @param consumer: where the blob's bytes go, normally the connection's
            transport.
        @type consumer: L{twisted.internet.interfaces.IConsumer} provider

        @return: a Deferred that fires, with a result callers must not rely
            on, once the sender is done: at once if no blob is to be sent,
            otherwise when the whole blob has been written.  It fails with
            L{p2pblob.errors.BlobNotFoundError} if the blob left the store
            after it was offered, or with the reason the connection was lost
            if it closes during the upload.
        @rtype: L{Deferred}
        """


class IQueryHandler(Interface):
    """
    Answers one kind of query from the peer of one connection (blob
    availability, blob requests, price, payment details).
    """

    def register_with_request_handler(
        request_handler: IRequestHandler, peer: Any
    ) -> None:
        """
        Register with C{request_handler} to be given the queries this
        handler answers.

        @param request_handler: the request handler of the connection.
        @type request_handler: L{IRequestHandler} provider
        @param peer: the peer whose queries this handler will answer.
        @type peer: C{Peer}

        @return: C{None}
        """

    def handle_queries(queries: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """
        Answer the peer's queries that were routed to this handler.

        @param queries: the queries to answer, each request key mapped to
            the value the peer sent with it.
        @type queries: C{dict} mapping C{str} to the decoded JSON value

        @return: a Deferred that fires with a C{dict} of response keys and
            values, to be merged into the response JSON.  It fails, with a
            L{p2pblob.errors.P2PBlobError} for instance, only if no answer
            can be given at all; the request handler then drops the
            connection.
        @rtype: L{Deferred}
        """


class IQueryHandlerFactory(Interface):
    """
    Makes a fresh L{IQueryHandler} for each peer that connects.
    """

    def build_query_handler() -> IQueryHandler:
        """
        Make a query handler for a new connection.

        @return: a new query handler.
        @rtype: L{IQueryHandler} provider
        """


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------


class IStreamDownloaderFactory(Interface):
    """
    Makes L{IStreamDownloader}s of one kind (save to a file, serve over
    HTTP, ...) and says which options they take.
    """

    def get_downloader_options(
        sd_validator: IStreamDescriptorValidator, payment_rate_manager: Any
    ) -> list[tuple[str, str]]:
        """
        List the options the downloaders this factory makes accept.

        @param sd_validator: the stream's metadata, which the options may
            depend on.
        @type sd_validator: L{IStreamDescriptorValidator} provider
        @param payment_rate_manager: the prices the downloader would pay.
        @type payment_rate_manager: C{PaymentRateManager}

        @return: the options, as C{(description, default)} pairs.
        @rtype: C{list} of C{(str, str)} tuples
        """

    def make_downloader(
        sd_validator: IStreamDescriptorValidator,
        options: list[str],
        payment_rate_manager: Any,
    ) -> Deferred[IStreamDownloader]:
        """
        Make a downloader for the stream C{sd_validator} describes.

        @param sd_validator: the stream's metadata, given to the downloader.
        @type sd_validator: L{IStreamDescriptorValidator} provider
        @param options: the chosen option values, in the order
            L{get_downloader_options} listed the options.
        @type options: C{list} of C{str}
        @param payment_rate_manager: the prices the downloader should pay.
        @type payment_rate_manager: C{PaymentRateManager}

        @return: a Deferred that fires with the new L{IStreamDownloader}
            provider.  It fails with L{p2pblob.errors.InvalidDescriptorError}
            if the stream's metadata cannot be used, or with
            L{p2pblob.errors.StreamError} if a downloader cannot be made
            (for instance because the output cannot be created).
        @rtype: L{Deferred}
        """

    def get_description() -> str:
        """
        Say in a few words what the downloaders made by this factory do with
        a stream.

        @return: a short description, for the user.
        @rtype: C{str}
        """


class IStreamDownloader(Interface):
    """
    Puts a stream fetched from the network to some use.
    """

    def start() -> Deferred[Any]:
        """
        Start downloading the stream.

        @return: a Deferred that fires, with a result callers must not rely
            on, once the whole stream has been downloaded and handled.  It
            fails with L{twisted.internet.defer.CancelledError} if the
            download is stopped first, with
            L{p2pblob.errors.StreamError} (for instance
            L{p2pblob.errors.DecryptionError}) if the stream cannot be
            assembled, or with L{p2pblob.errors.StorageError} if its blobs or
            output cannot be stored.
        @rtype: L{Deferred}
        """

    def insufficient_funds() -> None:
        """
        Tell the downloader that the wallet holds too few points to finish
        the download.

        @return: C{None}
        """


class IStreamDescriptorValidator(Interface):
    """
    Reads the metadata out of a stream descriptor (sd blob) and checks it.
    """

    def validate() -> bool:
        """
        Check the stream descriptor: its fields, its blob list and its
        stream hash.

        @return: C{True} if every check passes.
        @rtype: C{bool}
        @raise p2pblob.errors.InvalidDescriptorError: a check failed; the
            error's C{reason} says which, in words.
        """

    def info_to_show() -> list[tuple[str, str]]:
        """
        Give the stream's metadata the user should see before the download
        starts (for instance the file name and size).

        @return: C{(label, value)} pairs, in the order to show them.
        @rtype: C{list} of C{(str, str)} tuples
        """


# ---------------------------------------------------------------------------
# Payments
# ---------------------------------------------------------------------------


class IWallet(Interface):
    """
    Sends and receives payments in points.

    Before a service is asked for, the points to pay for it are reserved, so
    that the node never promises a payment it cannot make.  Once the service
    has been rendered, the reservation is handed back to the wallet with the
    final price, which is then paid; if the service is not rendered, the
    reservation is cancelled instead.
    """

    def stop() -> None:
        """
        Send any payments not yet sent, close any connections, and stop
        watching for incoming payments.

        @return: C{None}
        """

    def start() -> None:
        """
        Open any connections the wallet needs and start watching for incoming
        payments.

        @return: C{None}
        """

    def get_info_exchanger() -> IRequestCreator:
        """
        Give the request creator that asks peers for their payment details
        (public key or address).

        @return: the object that finds out where to pay peers.
        @rtype: L{IRequestCreator} provider
        """

    def get_wallet_info_query_handler_factory() -> IQueryHandlerFactory:
        """
        Give the factory of the query handlers that tell peers this node's
        payment details.  The handlers it makes are registered with each
        connection's L{IRequestHandler}.

        @return: the object that tells peers where to pay this node.
        @rtype: L{IQueryHandlerFactory} provider
        """

    def reserve_points(peer: Any, amount: float) -> Any:
        """
        Set aside C{amount} points to pay C{peer} once it has rendered a
        service.

        @param peer: the peer the points will be paid to.
        @type peer: C{Peer}
        @param amount: how many points to set aside.
        @type amount: C{float}

        @return: the reservation, to give to L{send_points} once the service
            has been rendered or to L{cancel_point_reservation} otherwise; or
            C{None} if the balance not already reserved is smaller than
            C{amount}.
        @rtype: C{ReservedPoints} or C{None}
        """

    def cancel_point_reservation(reserved_points: Any) -> None:
        """
        Release all the points set aside by a reservation.

        @param reserved_points: a reservation returned by L{reserve_points}
            and not yet used.
        @type reserved_points: C{ReservedPoints}

        @return: C{None}
        """

    def send_points(reserved_points: Any, amount: float) -> Deferred[Any]:
        """
        Schedule the payment of C{amount} points, taken from a reservation, to
        the reservation's peer.  Any reserved points beyond C{amount} are
        released.

        @param reserved_points: a reservation returned by L{reserve_points}
            and not yet used.
        @type reserved_points: C{ReservedPoints}
        @param amount: how many points to pay; no more than the reservation
            holds.
        @type amount: C{float}

        @return: a Deferred that fires, with a result callers must not rely
            on, once the payment has been scheduled.  It fails with
            L{p2pblob.errors.P2PBlobError} if the payment cannot be scheduled
            (for instance if C{amount} exceeds the reservation).
        @rtype: L{Deferred}
        """

    def get_balance() -> Deferred[float]:
        """
        Give the wallet's balance.

        @return: a Deferred that fires with the number of points the wallet
            holds, as a C{float}.  It fails with
            L{p2pblob.errors.StorageError} if the ledger cannot be read.
        @rtype: L{Deferred}
        """

    def add_expected_payment(peer: Any, amount: float) -> None:
        """
        Record that C{peer} owes this node C{amount} more points (for blob
        data sent to it).

        @param peer: the peer that is expected to pay.
        @type peer: C{Peer}
        @param amount: how many more points it owes.
        @type amount: C{float}

        @return: C{None}
        """


class IPaymentRateManager(Interface):
    """
    Holds this node's prices for blob data, in points per MiB (added by
    p2pblob, after LBRY's 2015 C{PaymentRateManager}): the rate it offers
    for the blobs it downloads, and the lowest rate it accepts for the blobs
    it serves.

    In free mode (the default) both are 0 and every offer is accepted, as
    LBRY peers, which always offer 0 and never pay, expect.  An offer below
    the lowest accepted rate is answered C{RATE_TOO_LOW}, and the client
    moves on to another peer: there is no counter-offer.
    """

    price = Attribute(
        "The rate this node offers for the blob data it downloads, in points"
        " per MiB: a C{float}, 0 in free mode."
    )
    min_price = Attribute(
        "The lowest rate this node accepts for the blob data it serves, in"
        " points per MiB: a C{float}, 0 in free mode."
    )

    def get_rate_blob_data(peer: Any) -> float:
        """
        Say what rate to offer C{peer} for its blob data.

        @param peer: the peer to download from.
        @type peer: C{Peer}

        @return: the rate to offer, in points per MiB.
        @rtype: C{float}
        """

    def accept_rate_blob_data(peer: Any, payment_rate: object) -> bool:
        """
        Say whether C{peer} may have blob data at the rate it offered.

        @param peer: the peer that offered.
        @type peer: C{Peer}
        @param payment_rate: the rate it offered, as decoded from JSON (a
            number for a well-behaved peer, but anything may arrive).
        @type payment_rate: C{float}, or any decoded JSON value

        @return: C{True} if the offer is acceptable.
        @rtype: C{bool}
        """

    def judge_offer(offer: object) -> str:
        """
        Give the answer to a C{blob_data_payment_rate} offer.

        @param offer: the value the peer sent, as decoded from JSON.
        @type offer: any decoded JSON value

        @return: C{"RATE_ACCEPTED"} or C{"RATE_TOO_LOW"} (the values of
            L{p2pblob.peer.wire.RATE_ACCEPTED} and
            L{p2pblob.peer.wire.RATE_TOO_LOW}).
        @rtype: C{str}
        """


# ---------------------------------------------------------------------------
# The blob store (added by p2pblob)
# ---------------------------------------------------------------------------


class IBlob(Interface):
    """
    A verified blob held by an L{IBlobStore}: its bytes are known to hash to
    its name.
    """

    blob_hash = Attribute(
        "The blob's name: C{str}, the 96 lowercase hex characters of the"
        " sha384 of its bytes."
    )
    length = Attribute("The blob's size in bytes, an C{int}.")

    def open_for_reading() -> BufferedIOBase:
        """
        Open the blob's bytes for reading, blocking the calling thread.

        This touches the disk on the calling thread, or, for a blob kept by
        a storage backend (S3, SFTP), fetches it: that is only allowed off
        the reactor thread.  From the reactor thread use L{open} or L{read}.

        @return: a binary file object positioned at the start of the blob;
            the caller closes it.
        @rtype: L{io.BufferedIOBase}
        @raise p2pblob.errors.BlobNotFoundError: the blob has been deleted
            from the store.
        @raise p2pblob.errors.StorageError: the blob is kept by a storage
            backend and this is the reactor thread, or the backend failed.
        """

    def open() -> Deferred[BufferedIOBase]:
        """
        Open the blob's bytes for reading without blocking the reactor: a
        blob on the local disk is opened at once, one kept by a storage
        backend is fetched first.

        @return: a Deferred that fires with a binary file object positioned
            at the start of the blob (the caller closes it).  It fails with
            L{p2pblob.errors.BlobNotFoundError} if the blob has been deleted
            from the store, or L{p2pblob.errors.StorageError} if its backend
            failed.
        @rtype: L{Deferred}
        """

    def read() -> Deferred[bytes]:
        """
        Read the whole blob, off the reactor thread.

        @return: a Deferred that fires with the blob's C{bytes}.  It fails
            with L{p2pblob.errors.BlobNotFoundError} if the blob has been
            deleted from the store.
        @rtype: L{Deferred}
        """


class IBlobWriter(Interface):
    """
    Receives one blob's bytes from one source (a peer or a local file),
    hashing them as they arrive, and makes the blob part of the store once
    they prove to be the right bytes.

    A writer ends in exactly one way, reported by L{finished}: the blob was
    verified and stored, or the write failed or was cancelled and nothing
    was kept.
    """

    blob_hash = Attribute(
        "The name of the blob being written: C{str}, 96 lowercase hex characters."
    )
    length = Attribute("The number of bytes the blob must have, an C{int}.")
    received = Attribute(
        "The number of bytes received so far, an C{int}; never more than L{length}."
    )
    finished = Attribute(
        "A L{Deferred} that fires with the stored L{IBlob} once the bytes"
        " have been verified and are durable on disk.  It fails with"
        " L{p2pblob.errors.BlobHashMismatchError} (the bytes do not hash to"
        " the blob's name), L{p2pblob.errors.BlobTooLargeError} (more than"
        " L{length} bytes arrived), L{p2pblob.errors.BlobIncompleteError}"
        " (the source stopped short), L{p2pblob.errors.BlobWriteCancelledError}"
        " (the write was cancelled, perhaps because another copy of the blob"
        " was verified first) or L{p2pblob.errors.StorageError} (the bytes"
        " could not be stored)."
    )

    def write(data: bytes) -> None:
        """
        Hash and store the next chunk of the blob.

        When exactly L{length} bytes have arrived, the writer verifies the
        blob and commits it to the store by itself; L{finished} then tells
        how that went.  Once the write has been cancelled or has failed,
        further data is silently discarded, so that a protocol can drain the
        rest of its stream without special cases.

        @param data: the next bytes of the blob.
        @type data: C{bytes}

        @return: C{None}
        @raise p2pblob.errors.BlobTooLargeError: C{data} takes the blob past
            L{length} bytes; L{finished} fails with the same error and
            nothing is kept.
        """

    def close() -> None:
        """
        Tell the writer that its source has no more data.

        If fewer than L{length} bytes arrived, L{finished} fails with
        L{p2pblob.errors.BlobIncompleteError} and nothing is kept.  After a
        complete blob, or once the write has ended, this does nothing.

        @return: C{None}
        """

    def cancel() -> None:
        """
        Abandon the write: the data received so far is removed and
        L{finished} fails with L{p2pblob.errors.BlobWriteCancelledError}.
        Once L{finished} has fired, this does nothing.

        @return: C{None}
        """


class IBlobStore(Interface):
    """
    Where a node keeps its blobs.

    Only verified blobs are ever visible: a blob is present once its bytes
    have been checked against its name and written to disk, and not before.
    A blob is listed in a durable index only once it is durable itself
    (blobs written at about the same time are synced together), so after a
    power failure a blob that was not yet durable is checked again before
    it is served.  The store also records which streams its blobs belong to, so
    that, when a disk-use limit is set, it can evict the blobs of finished
    downloads to make room, and never those of streams this node published
    or pinned.
    """

    disk_limit = Attribute(
        "The number of bytes the store may use, an C{int}, or C{None} for no limit."
    )

    def has_blob(blob_hash: str) -> bool:
        """
        Say whether a blob is present (verified and stored).

        @param blob_hash: the name of the blob.
        @type blob_hash: C{str}, 96 lowercase hex characters

        @return: C{True} if the store holds the verified blob.
        @rtype: C{bool}
        """

    def get_blob(blob_hash: str) -> IBlob:
        """
        Give a verified blob the store holds.

        @param blob_hash: the name of the blob.
        @type blob_hash: C{str}, 96 lowercase hex characters

        @return: the blob.
        @rtype: L{IBlob} provider
        @raise p2pblob.errors.BlobNotFoundError: the store does not hold it.
        """

    def open_writer(blob_hash: str, length: int) -> IBlobWriter:
        """
        Start receiving a blob's bytes, reserving C{length} bytes of the
        disk-use limit until the write ends.

        Several writers for the same blob may run at once, when several
        peers race to deliver it: the first copy verified is kept, and the
        other writers are cancelled (their C{finished} fails with
        L{p2pblob.errors.BlobWriteCancelledError}).  If the blob is already
        present, the writer returned has already been cancelled.

        @param blob_hash: the name of the blob to receive.
        @type blob_hash: C{str}, 96 lowercase hex characters
        @param length: the number of bytes the blob must have.
        @type length: C{int}

        @return: a writer for the blob's bytes.
        @rtype: L{IBlobWriter} provider
        @raise p2pblob.errors.InvalidBlobHashError: C{blob_hash} is not a
            blob hash.
        @raise p2pblob.errors.BlobTooLargeError: C{length} is over the 2 MiB
            blob size limit.
        @raise p2pblob.errors.DiskLimitError: C{length} more bytes would
            pass the disk-use limit and evicting blobs cannot make room.
        """

    def put_blob(
        data: bytes | bytearray | memoryview, expected_hash: str | None = None
    ) -> Deferred[IBlob]:
        """
        Store a whole blob given in memory (for instance one just created by
        publishing a stream); hashing and disk I/O happen off the reactor
        thread.  Storing a blob already present is not an error.

        @param data: the blob's bytes; their sha384 is the blob's name.
        @type data: C{bytes}
        @param expected_hash: if given, the name the bytes must hash to (a
            blob received from a peer); other bytes are not stored.
        @type expected_hash: C{str} or C{None}

        @return: a Deferred that fires with the stored L{IBlob}.  It fails
            with L{p2pblob.errors.BlobHashMismatchError} if the bytes do not
            hash to C{expected_hash}, with L{p2pblob.errors.BlobTooLargeError} if C{data} is over the
            2 MiB blob size limit, or with L{p2pblob.errors.DiskLimitError}
            if storing it would pass the disk-use limit and evicting blobs
            cannot make room.
        @rtype: L{Deferred}
        """

    def read_blob(blob_hash: str) -> Deferred[bytes]:
        """
        Read the whole of a stored blob, off the reactor thread.

        @param blob_hash: the name of the blob.
        @type blob_hash: C{str}, 96 lowercase hex characters

        @return: a Deferred that fires with the blob's C{bytes}.  It fails
            with L{p2pblob.errors.BlobNotFoundError} if the store does not
            hold the blob.
        @rtype: L{Deferred}
        """

    def check_blob(blob_hash: str) -> Deferred[str]:
        """
        Hash a stored blob's bytes again and compare them with its name.

        A blob found corrupt is removed from the store, so that it is never
        served.

        @param blob_hash: the name of the blob.
        @type blob_hash: C{str}, 96 lowercase hex characters

        @return: a Deferred that fires with C{"ok"} if the stored bytes match
            the name, C{"missing"} if the store does not hold the blob, or
            C{"corrupt"} if the bytes were damaged (the blob has then been
            removed).  It fails with L{p2pblob.errors.StorageError} if the
            store cannot be read at all.
        @rtype: L{Deferred}
        """

    def delete_blobs(blob_hashes: list[str]) -> Deferred[None]:
        """
        Delete blobs from the store.  Names of blobs the store does not hold
        are ignored.

        @param blob_hashes: the names of the blobs to delete.
        @type blob_hashes: C{list} of C{str}

        @return: a Deferred that fires with C{None} once the blobs are gone.
            It fails with L{p2pblob.errors.StorageError} if they cannot be
            removed.
        @rtype: L{Deferred}
        """

    def verified_blobs() -> Deferred[list[str]]:
        """
        List every blob the store holds.

        @return: a Deferred that fires with a C{list} of the names of every
            verified blob in the store, in no particular order.
        @rtype: L{Deferred}
        """

    def used_bytes() -> int:
        """
        Give the number of bytes counted against the disk-use limit.

        @return: the size of all verified blobs plus the bytes reserved by
            writers still running.
        @rtype: C{int}
        """

    def add_stream(sd_hash: str, blob_hashes: list[str], role: str) -> Deferred[None]:
        """
        Record that the stream named C{sd_hash} is made of the blobs
        C{blob_hashes}.

        @param sd_hash: the name of the stream's sd blob.
        @type sd_hash: C{str}, 96 lowercase hex characters
        @param blob_hashes: the names of all of the stream's blobs, the sd
            blob included.
        @type blob_hashes: C{list} of C{str}
        @param role: C{"published"} if this node made the stream (its blobs
            are never evicted), or C{"downloaded"} if it is being fetched
            (its blobs may be evicted once the download has finished, unless
            the stream is pinned).
        @type role: C{str}

        @return: a Deferred that fires with C{None} once the stream is
            recorded.  It fails with L{p2pblob.errors.InvalidBlobHashError}
            if a name is not a blob hash, or with
            L{p2pblob.errors.StorageError} if the record cannot be written.
        @rtype: L{Deferred}
        """

    def set_stream_finished(sd_hash: str) -> Deferred[None]:
        """
        Record that the download of the stream named C{sd_hash} has finished.

        From then on, when the disk-use limit needs room, the stream's blobs
        may be evicted, oldest first, unless the stream is pinned or a blob
        also belongs to a published stream or to a download not yet
        finished.

        @param sd_hash: the name of the stream's sd blob.
        @type sd_hash: C{str}, 96 lowercase hex characters

        @return: a Deferred that fires with C{None} once this is recorded.
            It fails with L{p2pblob.errors.StorageError} if the record cannot
            be written.
        @rtype: L{Deferred}
        """

    def pin_stream(sd_hash: str, pinned: bool) -> Deferred[None]:
        """
        Keep a stream's blobs whatever the disk-use limit, or stop keeping
        them.

        @param sd_hash: the name of the stream's sd blob.
        @type sd_hash: C{str}, 96 lowercase hex characters
        @param pinned: C{True} to keep the stream's blobs, C{False} to let
            them be evicted again.
        @type pinned: C{bool}

        @return: a Deferred that fires with C{None} once this is recorded.
            It fails with L{p2pblob.errors.StorageError} if the record cannot
            be written.
        @rtype: L{Deferred}
        """

    def remove_stream(sd_hash: str, delete_blobs: bool) -> Deferred[None]:
        """
        Forget the stream named C{sd_hash}.

        @param sd_hash: the name of the stream's sd blob.
        @type sd_hash: C{str}, 96 lowercase hex characters
        @param delete_blobs: if C{True}, also delete those of the stream's
            blobs that no other recorded stream uses.
        @type delete_blobs: C{bool}

        @return: a Deferred that fires with C{None} once the stream is
            forgotten (and its blobs deleted, if asked).  It fails with
            L{p2pblob.errors.StorageError} if the store cannot be updated.
        @rtype: L{Deferred}
        """


# ---------------------------------------------------------------------------
# Announcing (added by p2pblob)
# ---------------------------------------------------------------------------


class IHashAnnouncer(Interface):
    """
    Tells the DHT, blob by blob, that this node holds the blobs of its
    streams, so that downloaders find it, and says so again before the DHT
    forgets (a stored announcement expires after 24 hours).

    Announcements are spread over time: only a few are in flight at once and
    only so many start each second, however many blobs the node holds, so
    that announcing never floods the network or starves downloads.  A node
    that cannot be reached by peers announces nothing.
    """

    def hash_queue_size() -> int:
        """
        Count the announcements that are due and not yet sent.

        @return: how many blobs are waiting to be announced or announced
            again now; announcements in flight are not counted.
        @rtype: C{int}
        """

    def announce_soon(blob_hashes: Sequence[str]) -> None:
        """
        Move blobs to the front of the schedule, ahead of every announcement
        already due, for instance because a download just finished or a file
        was just published.  They are announced as soon as the limits on
        announcements in flight and per second allow, and announced again
        before they expire, even if no stream this node holds lists them.

        @param blob_hashes: the names of the blobs.
        @type blob_hashes: a sequence of C{str}, 96 lowercase hex characters

        @return: C{None}
        @raise p2pblob.errors.InvalidBlobHashError: a name is not a blob
            hash (then none of them is scheduled).
        """

    def immediate_announce(blob_hashes: Sequence[str]) -> Deferred[dict[str, int]]:
        """
        Announce blobs now, ahead of everything else (still within the limits
        on announcements in flight and per second), and report how each
        announcement went.  While the node has not joined the DHT or is not
        yet listening for peers, the announcements wait.

        @param blob_hashes: the names of the blobs.
        @type blob_hashes: a sequence of C{str}, 96 lowercase hex characters

        @return: a Deferred that fires, once every blob has been announced,
            with a C{dict} mapping each blob hash to the number of DHT nodes
            that stored this node as its peer (C{0} if the announcement
            failed; it is then retried later, as every failed announcement
            is).  It fails with L{p2pblob.errors.NotAnnouncingError} if this
            node does not announce (it is unreachable and has no onion
            service, or announcing is stopped) or stops announcing before
            the blobs are announced, and
            with L{p2pblob.errors.InvalidBlobHashError} if a name is not a
            blob hash.
        @rtype: L{Deferred}
        """

    def status() -> dict[str, Any]:
        """
        Describe what the announcer is doing, for the API and the dashboard.

        @return: a JSON-serialisable C{dict} with at least C{"policy"}
            (C{"all"} or C{"head"}), C{"announcing"} (C{bool}: whether
            announcements can be sent now), C{"blocked"} (why not, in words,
            or C{None}), C{"onion"} (the onion endpoint announced with the
            blobs, or C{None}), C{"onion_only"} (why only the onion endpoint
            is announced, to p2pblob nodes only, in words, or C{None}),
            C{"scheduled"} (blobs on the schedule), C{"due"}
            (as L{hash_queue_size}), C{"in_flight"}, C{"announced"} and
            C{"failed"} (announcements that succeeded and failed since the
            start) and C{"last_announce"} (the time of the last successful
            announcement, in seconds since the epoch, or C{None}).
        @rtype: C{dict}
        """


# ---------------------------------------------------------------------------
# Being reachable from the internet (added by p2pblob)
# ---------------------------------------------------------------------------


class IPortMapper(Interface):
    """
    Asks the router in front of this node to forward the peer TCP port and
    the DHT UDP port to it (UPnP, for instance), keeps those mappings alive
    while the node runs and removes them when it stops cleanly, and learns
    the address peers on the internet reach this node at.

    It is a service (L{twisted.application.service.IService}): mapping
    starts with C{startService} and ends with C{stopService}.  Failing to
    map is not an error of the service: it says so once in the log, keeps
    running (and retrying), and reports itself unreachable, so that the
    node does not announce an address nobody can connect to.
    """

    mappings = Attribute(
        "The mappings the router holds for this node now, a C{tuple} of"
        " L{p2pblob.reach.PortMapping} (protocol C{'TCP'} or C{'UDP'},"
        " external port, internal address, internal port, lease in seconds);"
        " empty until mapped, while unreachable and once stopped."
    )

    external_address = Attribute(
        "The IPv4 address peers on the internet reach this node at, a C{str}"
        " (the one the user configured, if any, else the one the router"
        " reports), or C{None} while it is not known."
    )

    reachable = Attribute(
        "A C{bool}: whether peers on the internet can connect to this node"
        " (every port is mapped, or the user configured an external address);"
        " an unreachable node must not announce itself."
    )

    def startService() -> None:
        """
        Start mapping: find the gateway and map the ports in the background
        (the result shows in L{mappings}, L{reachable} and L{status}), then
        renew the mappings before their lease ends.

        @return: C{None}
        """

    def stopService() -> Deferred[None]:
        """
        Stop renewing and remove the mappings this node made.

        @return: a Deferred that fires with C{None} once the router has been
            asked to remove every mapping (whether or not it could); it does
            not fail.
        @rtype: L{Deferred}
        """

    def status() -> dict[str, Any]:
        """
        Describe the mappings, for C{p2pblob status} and the API.

        @return: a JSON-serialisable C{dict} with at least C{"method"} (how
            ports are mapped, such as C{"upnp"}), C{"state"} (C{"stopped"},
            C{"mapping"}, C{"mapped"} or C{"unreachable"}), C{"reachable"}
            (as L{reachable}), C{"external_address"} (as
            L{external_address}), C{"mappings"} (a C{list} of C{dict}s with
            C{"protocol"}, C{"external_port"}, C{"internal_address"},
            C{"internal_port"} and C{"lease"}) and C{"problem"} (why the
            ports are not mapped, in words, or C{None}).
        @rtype: C{dict}
        """


class ITorProvider(Interface):
    """
    Gives the node Tor: a tor of its own (launched, with its state kept
    between runs) or an existing tor reached through its control port.
    Through it the node publishes an onion service (a C{.onion} address
    that stays the same across restarts) and connects to peers through
    tor's SOCKS port.

    It is a service (L{twisted.application.service.IService}): tor is
    started or connected to in the background by C{startService}, and left
    by C{stopService}.  Failing is not an error of the service: it says
    why once in the log and in L{status}, and every Deferred that waits for
    tor then fails with a L{p2pblob.errors.TorError} saying why.
    """

    onion_address = Attribute(
        "The onion service's address, a C{str} such as C{'xyz...xyz.onion'}"
        " (56 letters and digits, then C{.onion}), or C{None} while no onion"
        " service is published."
    )

    onion_port = Attribute(
        "The onion service's virtual port (the port peers connect to at"
        " L{onion_address}), an C{int}, or C{None} while none is published."
    )

    def startService() -> None:
        """
        Start tor, or connect to the configured one, in the background; the
        progress shows in L{status} and L{when_ready}.

        @return: C{None}
        """

    def stopService() -> Deferred[None]:
        """
        Remove the onion service, leave tor (a tor the node launched is
        asked to exit, and waited for) and fail whatever still waits for
        tor with L{p2pblob.errors.TorNotRunningError}.

        @return: a Deferred that fires with C{None} once done; it does not
            fail.
        @rtype: L{Deferred}
        """

    def when_ready() -> Deferred[None]:
        """
        Wait until tor is connected and has joined the Tor network
        (bootstrapped to 100%).  Asked before the service starts, it waits
        for the start.

        @return: a Deferred that fires with C{None} when tor is ready (at
            once if it is).  It fails with L{p2pblob.errors.TorUnavailableError}
            (C{txtorcon} or the C{tor} program is missing),
            L{p2pblob.errors.TorStartError} (tor did not start, or its
            control port could not be reached),
            L{p2pblob.errors.TorBootstrapError} (tor did not join the
            network in time), L{p2pblob.errors.TorLostError} (tor went
            away) or L{p2pblob.errors.TorNotRunningError} (the service
            stopped).  Cancelling it stops only this wait.
        @rtype: L{Deferred}
        """

    def onion_endpoint(port: int) -> IStreamServerEndpoint:
        """
        An endpoint that serves a protocol as this node's onion service.

        Its C{listen(factory)} waits for tor (as L{when_ready}), listens for
        tor's connections on a free port of 127.0.0.1 (never on another
        address), publishes a version 3 onion service whose virtual port is
        C{port} and whose key is kept in the state directory (made the
        first time, so that the address stays the same), and waits until
        tor has uploaded the service's descriptor.

        @param port: the onion service's virtual port.
        @type port: C{int}

        @return: an L{IStreamServerEndpoint}.  Its C{listen} fires with an
            L{twisted.internet.interfaces.IListeningPort} (whose C{getHost}
            is the local address tor forwards to, and whose
            C{stopListening} removes the onion service), after setting
            L{onion_address} and L{onion_port}; it fails with a
            L{p2pblob.errors.TorError}: as L{when_ready}, or
            L{p2pblob.errors.OnionKeyError} (the key file is unusable; it
            is left untouched) or L{p2pblob.errors.OnionServiceError}.
        """

    def client_endpoint(host: str, port: int) -> IStreamClientEndpoint:
        """
        An endpoint that connects to C{host} (a C{.onion} address or a host
        name) through tor's SOCKS port.  It may be made before tor is
        ready: its C{connect} waits for tor first.

        @param host: where to connect.
        @type host: C{str}
        @param port: the port there.
        @type port: C{int}

        @return: an L{IStreamClientEndpoint}.  Its C{connect} fails with a
            L{p2pblob.errors.TorError} as L{when_ready} does, or with the
            reason tor could not make the connection.
        """

    def status() -> dict[str, Any]:
        """
        Describe the use of Tor, for C{p2pblob status} and the API.

        @return: a JSON-serialisable C{dict} with at least C{"method"}
            (C{"launched"}: a tor of the node's own; C{"control"}: an
            existing tor), C{"state"} (C{"stopped"}, C{"starting"},
            C{"ready"} or C{"failed"}), C{"onion_address"} and
            C{"onion_port"} (as the attributes), C{"socks"} (tor's SOCKS
            listener, such as C{"127.0.0.1:9050"} or C{"unix:/path"}, or
            C{None}), C{"version"} (tor's version, or C{None} while
            unknown) and C{"problem"} (why Tor cannot be used, in words,
            or C{None}).
        @rtype: C{dict}
        """


# ---------------------------------------------------------------------------
# Storage plugins (added by p2pblob, after Onitu's drivers)
# ---------------------------------------------------------------------------


class IStorageBackend(Interface):
    """
    Moves files to and from one place where p2pblob keeps or mirrors them: a
    local folder, an object store, an SFTP server.

    A file is named by a key: names separated by C{"/"}, relative to the
    backend's root, never empty, absolute, or containing C{"."} or C{".."}
    (see L{p2pblob.storage.keys.split_key}).  A blob store's keys are blob
    hashes; a mirror's are file paths, which may be nested and contain
    spaces and non-ASCII letters.

    Every method may return its result directly or a L{Deferred} that fires
    with it; the L{p2pblob.storage.host.StorageHost} wraps each call, runs
    the calls of a blocking backend in threads, and retries those that fail
    with L{p2pblob.errors.ServiceError}.  Any method may fail with
    L{p2pblob.errors.ServiceError} when the service itself fails (it is
    retried) or L{p2pblob.errors.DriverError} when it is asked something it
    cannot do (it is not).  A backend that does not support an optional
    method (L{get_chunk} or L{get_file}, L{upload_file}, L{move_file},
    L{set_chunk_size}) raises C{NotImplementedError} and the host does the
    same with the other methods.

    An upload is written to a hidden staging place: nothing of it is visible
    under its key before L{end_upload}, which replaces any earlier file of
    that name all at once.
    """

    def set_chunk_size(size: int) -> int | Deferred[int]:
        """
        Agree on the size of the chunks uploaded and read.

        @param size: the chunk size the node would like, in bytes.
        @type size: C{int}

        @return: the chunk size to use: C{size}, or a larger one the service
            needs (an S3 multipart part is at least 5 MiB).
        @rtype: C{int}
        """

    def get_chunk(key: str, offset: int, size: int) -> bytes | Deferred[bytes]:
        """
        Read part of a file.

        @param key: the file's name.
        @type key: C{str}
        @param offset: where to start, in bytes from the beginning.
        @type offset: C{int}
        @param size: how many bytes to read at most.
        @type size: C{int}

        @return: up to C{size} bytes from C{offset}: fewer only at the end of
            the file, none at or past its end.
        @rtype: C{bytes}
        @raise p2pblob.errors.StorageKeyNotFoundError: there is no such file.
        """

    def get_file(key: str) -> bytes | Deferred[bytes]:
        """
        Read a whole file.

        @param key: the file's name.
        @type key: C{str}

        @return: the file's content.
        @rtype: C{bytes}
        @raise p2pblob.errors.StorageKeyNotFoundError: there is no such file.
        """

    def start_upload(key: str, size: int | None) -> str | None | Deferred[str | None]:
        """
        Begin an upload of a file, throwing away any unfinished upload of the
        same key.

        @param key: the file's name.
        @type key: C{str}
        @param size: the file's size in bytes if known, else C{None}; a
            backend may check it at L{end_upload}.
        @type size: C{int} or C{None}

        @return: the service's name for this upload, if it has one (an S3
            multipart upload id), which the node's transfer journal records
            and gives back to L{restart_upload}; else C{None}.
        @rtype: C{str} or C{None}
        """

    def upload_chunk(key: str, offset: int, data: bytes) -> None | Deferred[None]:
        """
        Write a chunk of an upload begun with L{start_upload} or resumed with
        L{restart_upload}.  Writing a chunk again at the same offset (a retry)
        is harmless.

        @param key: the file's name.
        @type key: C{str}
        @param offset: where the chunk goes; at most the number of bytes
            written so far (no holes).
        @type offset: C{int}
        @param data: the chunk.
        @type data: C{bytes}

        @return: C{None}
        @raise p2pblob.errors.DriverError: no upload of C{key} is in
            progress, or C{offset} would leave a hole.
        """

    def upload_file(key: str, data: bytes) -> None | Deferred[None]:
        """
        Store a whole file at once, replacing any file of the same name all
        at once.

        @param key: the file's name.
        @type key: C{str}
        @param data: its content.
        @type data: C{bytes}

        @return: C{None}
        """

    def end_upload(key: str) -> None | Deferred[None]:
        """
        Commit an upload: make the bytes written visible under C{key} all at
        once, replacing any earlier file of that name.

        @param key: the file's name.
        @type key: C{str}

        @return: C{None}
        @raise p2pblob.errors.DriverError: no upload of C{key} is in
            progress, or its size differs from the size given to
            L{start_upload}.
        """

    def abort_upload(key: str) -> None | Deferred[None]:
        """
        Give up an upload: what was written is thrown away and nothing of it
        is visible; a file already stored under C{key} is left alone.
        Aborting when no upload is in progress does nothing.

        @param key: the file's name.
        @type key: C{str}

        @return: C{None}
        """

    def restart_upload(
        key: str, offset: int, upload_id: str | None = None
    ) -> int | Deferred[int]:
        """
        Resume an upload after the node stopped or crashed in the middle of
        it.  The backend checks what the service really holds (the size of a
        staged file, the parts of a multipart upload), never a counter of its
        own, and says where to continue.  If nothing of the upload is left,
        a new one is begun and the answer is C{0}.

        @param key: the file's name.
        @type key: C{str}
        @param offset: how far the node's journal says the upload got.
        @type offset: C{int}
        @param upload_id: what L{start_upload} answered, as the journal
            recorded it, or C{None} if it answered nothing or the journal
            does not know (the backend then looks for the upload by C{key}).
        @type upload_id: C{str} or C{None}

        @return: the offset to continue from: every byte before it is stored.
        @rtype: C{int}
        """

    def delete_file(key: str) -> None | Deferred[None]:
        """
        Remove a file.  Removing a file that is not there does nothing.

        @param key: the file's name.
        @type key: C{str}

        @return: C{None}
        """

    def move_file(old_key: str, new_key: str) -> None | Deferred[None]:
        """
        Rename a file, replacing any file named C{new_key}.

        @param old_key: the file's name now.
        @type old_key: C{str}
        @param new_key: its new name.
        @type new_key: C{str}

        @return: C{None}
        @raise p2pblob.errors.StorageKeyNotFoundError: there is no file named
            C{old_key}.
        """

    def exists(key: str) -> bool | Deferred[bool]:
        """
        Say whether a file is stored (an upload in progress does not count).

        @param key: the file's name.
        @type key: C{str}

        @return: C{True} if a file named C{key} is stored.
        @rtype: C{bool}
        """

    def size(key: str) -> int | None | Deferred[int | None]:
        """
        Give the size of a file.

        @param key: the file's name.
        @type key: C{str}

        @return: the size in bytes, or C{None} if there is no such file.
        @rtype: C{int} or C{None}
        """

    def close() -> None | Deferred[None]:
        """
        Let go of what the backend holds open (connections, sessions): the
        host calls it, on the reactor thread, when it stops.  The backend
        may be used again afterwards (it connects again).

        @return: C{None}, or a Deferred that fires once it is done.
        """


class IStoragePlugin(IPlugin):
    """
    A kind of storage backend, found with L{twisted.plugin.getPlugins} among
    the dropins of C{twisted.plugins} (see L{p2pblob.storage.discovery}).
    """

    name = Attribute(
        "The name by which the configuration chooses it, a C{str} such as"
        " C{'local'}; unique among storage plugins."
    )

    options = Attribute(
        "The options it takes, a C{tuple} of L{p2pblob.storage.options.Option};"
        " the options every plugin takes (C{chunk_size}, C{retries}) are"
        " added by the host and must not be repeated."
    )

    blocking = Attribute(
        "A C{bool}: C{True} if its backend's methods block (then they run in a"
        " pool of threads of their own, must be thread-safe, and return values,"
        " never Deferreds)."
    )

    def backend(options: dict[str, Any], clock: IReactorTime) -> IStorageBackend:
        """
        Make a backend.

        @param options: every option's value, checked and converted by
            L{p2pblob.storage.options.parse_options}.
        @type options: C{dict} of C{str} to values
        @param clock: the time source the backend may use for timeouts.
        @type clock: L{twisted.internet.interfaces.IReactorTime} provider

        @return: the backend.
        @rtype: L{IStorageBackend} provider
        @raise p2pblob.errors.ConfigError: the options cannot work together.
        @raise p2pblob.errors.DriverError: the backend cannot be made.
        """


# ---------------------------------------------------------------------------
# HTTP request bodies (added by p2pblob)
# ---------------------------------------------------------------------------


class IBodyReceiver(Interface):
    """
    Takes the body of one HTTP request as it arrives, instead of the body
    being buffered before the request is rendered (see
    L{p2pblob.http._body}): an upload streamed into a stream creator, for
    instance.

    The calls come in this order, on the reactor thread: L{body_started};
    then L{body_chunk} any number of times, each only once the Deferred it
    answered before (if any) has fired; then L{body_finished} or
    L{body_lost}, unless the receiver refused the body or failed.
    """

    def body_started(request: Request) -> None:
        """
        The request's headers are in and no byte of its body has been read.

        The receiver may refuse the body here by setting an error status on
        the request (C{request.setResponseCode} with 400 or more): it then
        gets nothing more, the body is thrown away (a client that asked
        for C{Expect: 100-continue} is answered at once instead), and the
        resource renders the refusal.

        @param request: the request, its method and target not yet set
            (they are given to the route that chose this receiver).
        @type request: L{p2pblob.http._body.StreamingRequest}

        @return: C{None}
        """

    def body_chunk(data: bytes) -> Deferred[None] | None:
        """
        Take the next piece of the body (any size; chunked transfer coding
        already removed).

        @param data: the bytes.
        @type data: C{bytes}

        @return: a Deferred that fires with C{None} when the receiver is
            ready for more (the connection is not read from meanwhile, so
            that a slow receiver makes the client wait), or C{None} if it
            is ready at once.  If the Deferred fails (or the call raises),
            the receiver is given nothing more, the rest of the body is
            thrown away, the failure is kept in the request's
            C{body_failure} and the request is rendered once the body
            ends.
        """

    def body_finished() -> None:
        """
        The whole body has arrived and been taken; the request is rendered
        next.

        @return: C{None}
        """

    def body_lost(reason: Failure) -> None:
        """
        The connection closed before the body was complete (it was shorter
        than its C{Content-Length}, its chunked coding was malformed, the
        client went away or timed out).  The request is never rendered.
        Called even while a Deferred of L{body_chunk} is pending.

        @param reason: why the connection closed.
        @type reason: L{twisted.python.failure.Failure}

        @return: C{None}
        """
