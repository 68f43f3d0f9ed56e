"""
Tests for L{p2pblob.interfaces}: the catalogue is complete, faithful to the
2015 seed, declared without C{self}, and documented.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer
from zope.interface.exceptions import BrokenMethodImplementation
from zope.interface.interface import InterfaceClass
from zope.interface.interfaces import IAttribute, IInterface, IMethod
from zope.interface.verify import verifyObject

from p2pblob import interfaces

# Every method of every interface in the seed catalogue (LBRY's 2015
# interfaces.py), as the seed spells it: interface -> method -> (the
# arguments after self, whether the seed documents a Deferred result).
SEED_CATALOGUE: dict[str, dict[str, tuple[tuple[str, ...], bool]]] = {
    "IPeerFinder": {
        "find_peers_for_blob": (("blob_hash",), True),
    },
    "IRequestSender": {
        "add_request": (("request",), True),
        "add_blob_request": (("blob_request",), True),
    },
    "IRequestCreator": {
        "send_next_request": (("peer", "protocol"), True),
        "get_new_peers": ((), True),
    },
    "IMetadataHandler": {
        "get_initial_blobs": ((), True),
        "final_blob_num": ((), False),
    },
    "IDownloadManager": {
        "start_downloading": ((), True),
        "resume_downloading": ((), True),
        "pause_downloading": ((), True),
        "add_blobs_to_download": (("blobs",), True),
        "stream_position": ((), False),
        "needed_blobs": ((), False),
        "final_blob_num": ((), False),
        "handle_blob": (("blob_num",), True),
    },
    "IConnectionManager": {
        "get_next_request": (("peer", "protocol"), True),
        "protocol_disconnected": (("peer", "protocol"), False),
    },
    "IProgressManager": {
        "stream_position": ((), False),
        "needed_blobs": ((), False),
        "blob_downloaded": (("blob", "blob_info"), False),
    },
    "IBlobHandler": {
        "blob_downloaded": (("blob", "blob_info"), True),
    },
    "IRateLimited": {
        "throttle_upload": ((), False),
        "throttle_download": ((), False),
        "unthrottle_upload": ((), False),
        "unthrottle_downlad": ((), False),
    },
    "IRateLimiter": {
        "report_dl_bytes": (("num_bytes",), False),
        "report_ul_bytes": (("num_bytes",), False),
        "register_protocol": (("protocol",), False),
        "unregister_protocol": (("protocol",), False),
    },
    "IRequestHandler": {
        "register_query_handler": (
            ("query_handler", "query_identifiers"),
            False,
        ),
        "register_blob_sender": (("blob_sender",), False),
    },
    "IBlobSender": {
        "send_blob_if_requested": (("consumer",), True),
    },
    "IQueryHandler": {
        "register_with_request_handler": (
            ("request_handler", "peer"),
            False,
        ),
        "handle_queries": (("queries",), True),
    },
    "IQueryHandlerFactory": {
        "build_query_handler": ((), False),
    },
    "IStreamDownloaderFactory": {
        "get_downloader_options": (
            ("sd_validator", "payment_rate_manager"),
            False,
        ),
        "make_downloader": (
            ("sd_validator", "options", "payment_rate_manager"),
            True,
        ),
        "get_description": ((), False),
    },
    "IStreamDownloader": {
        "start": ((), True),
        "insufficient_funds": ((), False),
    },
    "IStreamDescriptorValidator": {
        "validate": ((), False),
        "info_to_show": ((), False),
    },
    "ILBRYWallet": {
        "stop": ((), False),
        "start": ((), False),
        "get_info_exchanger": ((), False),
        "get_wallet_info_query_handler_factory": ((), False),
        "reserve_points": (("peer", "amount"), False),
        "cancel_point_reservation": (("reserved_points",), False),
        "send_points": (("reserved_points", "amount"), True),
        "get_balance": ((), True),
        "add_expected_payment": (("peer", "amount"), False),
    },
}

# Where p2pblob deliberately departs from the seed's spelling.
RENAMED_INTERFACES = {"ILBRYWallet": "IWallet"}
RENAMED_METHODS = {("IRateLimited", "unthrottle_downlad"): "unthrottle_download"}

# The interfaces p2pblob adds: interface -> (attributes, method -> (arguments,
# whether it returns a Deferred)).
ADDED: dict[str, tuple[set[str], dict[str, tuple[tuple[str, ...], bool]]]] = {
    "IBlob": (
        {"blob_hash", "length"},
        {
            "open_for_reading": ((), False),
            "open": ((), True),
            "read": ((), True),
        },
    ),
    "IBlobWriter": (
        {"blob_hash", "length", "received", "finished"},
        {
            "write": (("data",), False),
            "close": ((), False),
            "cancel": ((), False),
        },
    ),
    "IBlobStore": (
        {"disk_limit"},
        {
            "has_blob": (("blob_hash",), False),
            "get_blob": (("blob_hash",), False),
            "open_writer": (("blob_hash", "length"), False),
            "put_blob": (("data", "expected_hash"), True),
            "read_blob": (("blob_hash",), True),
            "check_blob": (("blob_hash",), True),
            "delete_blobs": (("blob_hashes",), True),
            "verified_blobs": ((), True),
            "used_bytes": ((), False),
            "add_stream": (("sd_hash", "blob_hashes", "role"), True),
            "set_stream_finished": (("sd_hash",), True),
            "pin_stream": (("sd_hash", "pinned"), True),
            "remove_stream": (("sd_hash", "delete_blobs"), True),
        },
    ),
    "IHashAnnouncer": (
        set(),
        {
            "hash_queue_size": ((), False),
            "announce_soon": (("blob_hashes",), False),
            "immediate_announce": (("blob_hashes",), True),
            "status": ((), False),
        },
    ),
    "IPaymentRateManager": (
        {"price", "min_price"},
        {
            "get_rate_blob_data": (("peer",), False),
            "accept_rate_blob_data": (("peer", "payment_rate"), False),
            "judge_offer": (("offer",), False),
        },
    ),
    # Methods may answer directly or with a Deferred; the host's always defer.
    "IStorageBackend": (
        set(),
        {
            "set_chunk_size": (("size",), False),
            "get_chunk": (("key", "offset", "size"), False),
            "get_file": (("key",), False),
            "start_upload": (("key", "size"), False),
            "upload_chunk": (("key", "offset", "data"), False),
            "upload_file": (("key", "data"), False),
            "end_upload": (("key",), False),
            "abort_upload": (("key",), False),
            "restart_upload": (("key", "offset", "upload_id"), False),
            "delete_file": (("key",), False),
            "move_file": (("old_key", "new_key"), False),
            "exists": (("key",), False),
            "size": (("key",), False),
            "close": ((), False),
        },
    ),
    "IStoragePlugin": (
        {"name", "options", "blocking"},
        {
            "backend": (("options", "clock"), False),
        },
    ),
    # a request body taken as it arrives (p2pblob.http._body)
    "IBodyReceiver": (
        set(),
        {
            "body_started": (("request",), False),
            "body_chunk": (("data",), True),
            "body_finished": ((), False),
            "body_lost": (("reason",), False),
        },
    ),
    # being reachable: UPnP port mapping (p2pblob.reach)
    "IPortMapper": (
        {"mappings", "external_address", "reachable"},
        {
            "startService": ((), False),
            "stopService": ((), True),
            "status": ((), False),
        },
    ),
    # Tor: an onion service and connections through tor (p2pblob.reach.tor)
    "ITorProvider": (
        {"onion_address", "onion_port"},
        {
            "startService": ((), False),
            "stopService": ((), True),
            "when_ready": ((), True),
            "onion_endpoint": (("port",), False),
            "client_endpoint": (("host", "port"), False),
            "status": ((), False),
        },
    ),
    # IRateLimiter's methods, and those of per-connection accounting
    "IConnectionRateLimiter": (
        set(),
        {
            "report_dl_bytes": (("num_bytes",), False),
            "report_ul_bytes": (("num_bytes",), False),
            "register_protocol": (("protocol",), False),
            "unregister_protocol": (("protocol",), False),
            "register_connection": (("protocol", "peer"), False),
            "report_dl_bytes_from": (("protocol", "num_bytes"), False),
            "report_ul_bytes_to": (("protocol", "num_bytes"), False),
            "report_blob_bytes": (("protocol", "blob_hash", "sent", "received"), False),
        },
    ),
}


def _our_name(seed_interface: str) -> str:
    return RENAMED_INTERFACES.get(seed_interface, seed_interface)


def _expected() -> dict[str, dict[str, tuple[tuple[str, ...], bool]]]:
    """
    Every method p2pblob must declare, under p2pblob's names.
    """
    expected: dict[str, dict[str, tuple[tuple[str, ...], bool]]] = {}
    for seed_interface, methods in SEED_CATALOGUE.items():
        ours = expected.setdefault(_our_name(seed_interface), {})
        for method, contract in methods.items():
            name = RENAMED_METHODS.get((seed_interface, method), method)
            ours[name] = contract
    for interface_name, (_, methods) in ADDED.items():
        expected[interface_name] = dict(methods)
    return expected


def _interfaces() -> list[InterfaceClass]:
    return [getattr(interfaces, name) for name in interfaces.__all__]


def _methods(iface: InterfaceClass) -> list[tuple[str, Any]]:
    return [
        (name, description)
        for name, description in iface.namesAndDescriptions(all=True)
        if IMethod.providedBy(description)
    ]


# Arguments with a default value.
OPTIONAL = {
    "IBlobStore.put_blob": ("expected_hash",),
    "IStorageBackend.restart_upload": ("upload_id",),
}


def _implementation(iface: InterfaceClass) -> object:
    """
    Make an object that provides C{iface} the way a real implementation
    would: an instance of a class whose methods take C{self} followed by the
    interface's declared arguments (minus any C{self} the interface itself
    declares), and which has every declared attribute.
    """
    namespace: dict[str, Any] = {}
    for name, description in iface.namesAndDescriptions(all=True):
        if IMethod.providedBy(description):
            info = cast(Any, description).getSignatureInfo()
            optional = info["optional"]
            arguments = ["self"] + [
                f"{a}={optional[a]!r}" if a in optional else a
                for a in info["positional"]
                if a != "self"
            ]
            source = f"def {name}({', '.join(arguments)}):\n    pass\n"
            # The source is built from our own interface declarations.
            exec(source, namespace)
        else:
            namespace[name] = None
    namespace.pop("__builtins__", None)
    cls = implementer(iface)(type(f"Fake{iface.__name__}", (), namespace))
    return cls()


class CatalogueTests(SynchronousTestCase):
    """
    The module declares every contract, and nothing in C{__all__} is
    anything else.
    """

    def test_all_names(self) -> None:
        """
        C{__all__} lists exactly the 18 seed interfaces (under p2pblob's
        names) and the added ones.
        """
        expected = {_our_name(name) for name in SEED_CATALOGUE} | set(ADDED)
        self.assertEqual(len(SEED_CATALOGUE), 18)
        self.assertEqual(len(expected), len(SEED_CATALOGUE) + len(ADDED))
        self.assertEqual(set(interfaces.__all__), expected)
        self.assertEqual(len(interfaces.__all__), len(expected))

    def test_all_are_interfaces(self) -> None:
        """
        Every name in C{__all__} is a zope.interface interface.
        """
        for iface in _interfaces():
            self.assertTrue(IInterface.providedBy(iface), iface)
            self.assertTrue(iface.extends(Interface), iface)

    def test_typo_fixed(self) -> None:
        """
        The seed's misspelled C{unthrottle_downlad} is declared as
        C{unthrottle_download}, and the misspelling is gone.
        """
        names = set(interfaces.IRateLimited.names(all=True))
        self.assertIn("unthrottle_download", names)
        self.assertNotIn("unthrottle_downlad", names)


class SignatureTests(SynchronousTestCase):
    """
    Methods are declared without C{self} and with the seed's arguments.
    """

    def test_no_self(self) -> None:
        """
        No declared method takes an argument named C{self}.
        """
        for iface in _interfaces():
            for name, description in _methods(iface):
                positional = description.getSignatureInfo()["positional"]
                self.assertNotIn(
                    "self",
                    positional[:1],
                    f"{iface.__name__}.{name} declares self",
                )
                self.assertNotIn("self", positional)

    def test_methods_and_arguments(self) -> None:
        """
        Every method of the seed and of the added interfaces is declared
        on the matching interface, with the same arguments in the same
        order.
        """
        for interface_name, methods in _expected().items():
            iface = getattr(interfaces, interface_name)
            for method, (arguments, _) in methods.items():
                where = f"{interface_name}.{method}"
                self.assertIn(method, iface.names(all=True), where)
                description = iface[method]
                self.assertTrue(IMethod.providedBy(description), where)
                info = description.getSignatureInfo()
                self.assertEqual(tuple(info["positional"]), arguments, where)
                required = tuple(a for a in arguments if a not in OPTIONAL.get(where, ()))
                self.assertEqual(tuple(info["required"]), required, where)
                self.assertIsNone(info["varargs"], where)
                self.assertIsNone(info["kwargs"], where)

    def test_added_attributes(self) -> None:
        """
        The added interfaces declare exactly their documented attributes and
        methods.
        """
        for interface_name, (attributes, methods) in ADDED.items():
            iface = getattr(interfaces, interface_name)
            declared_attributes = {
                name
                for name, description in iface.namesAndDescriptions(all=True)
                if IAttribute.providedBy(description)
                and not IMethod.providedBy(description)
            }
            self.assertEqual(declared_attributes, attributes, interface_name)
            self.assertEqual(
                {name for name, _ in _methods(iface)},
                set(methods),
                interface_name,
            )

    def test_verify_accepts_implementations(self) -> None:
        """
        L{verifyObject} accepts an ordinary implementation of each
        interface, whose methods take C{self} and then the declared
        arguments.
        """
        for iface in _interfaces():
            self.assertTrue(verifyObject(iface, _implementation(iface)))

    def test_self_would_be_rejected(self) -> None:
        """
        The check above is meaningful: had an interface declared C{self},
        L{verifyObject} would reject that same kind of implementation.
        """

        class IWithSelf(Interface):
            def method(self: Any, argument: Any) -> None:  # type: ignore[misc]
                """
                Declared the way the seed did.
                """

        with self.assertRaises(BrokenMethodImplementation):
            verifyObject(IWithSelf, _implementation(IWithSelf))


class DocumentationTests(SynchronousTestCase):
    """
    Every contract explains itself.
    """

    def test_interfaces_documented(self) -> None:
        """
        Every interface has a docstring.
        """
        for iface in _interfaces():
            self.assertTrue((iface.__doc__ or "").strip(), iface.__name__)

    def test_members_documented(self) -> None:
        """
        Every declared method and attribute has a non-empty docstring.
        """
        for iface in _interfaces():
            for name, description in iface.namesAndDescriptions(all=True):
                self.assertTrue(
                    description.getDoc().strip(),
                    f"{iface.__name__}.{name} is undocumented",
                )

    def test_deferred_results_documented(self) -> None:
        """
        Every method that returns a Deferred (as the seed documents it, or
        as p2pblob adds it) says what the Deferred fires with.
        """
        for interface_name, methods in _expected().items():
            iface = getattr(interfaces, interface_name)
            for method, (_, returns_deferred) in methods.items():
                if not returns_deferred:
                    continue
                doc = iface[method].getDoc()
                where = f"{interface_name}.{method}"
                self.assertIn("Deferred", doc, where)
                self.assertIn("@return: a Deferred that fires", doc, where)

    def test_parameters_documented(self) -> None:
        """
        Every argument of every method has an C{@param} and a C{@type}.
        """
        for iface in _interfaces():
            for name, description in _methods(iface):
                doc = description.getDoc()
                for argument in description.getSignatureInfo()["positional"]:
                    where = f"{iface.__name__}.{name}({argument})"
                    self.assertIn(f"@param {argument}:", doc, where)
                    self.assertIn(f"@type {argument}:", doc, where)
