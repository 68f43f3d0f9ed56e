"""
A private Tor network on 127.0.0.1 for the tests: directory authorities,
relays and clients, each a C{tor} process that this module starts, watches
and stops by the pid it recorded.

L{TorNetwork.start} makes the keys (C{tor-gencert} for each authority,
C{tor --list-fingerprint} for each relay identity), writes one torrc per
node, starts the authorities and relays and waits until every one of them
holds a consensus listing all of them, and only then starts the clients and
waits for C{Bootstrapped 100%}.  Three authorities, one relay and one client
come up in 11-28 s.

Facts found by trying (tor 0.4.9.11), in short:

  - An onion service needs at least four relays (authorities count);
    with three, publication works but connecting to it fails.
  - tor refuses C{V3AuthVoteDelay} or C{V3AuthDistDelay} below 2 s, and
    wants their sum under half the voting interval: the regular interval
    is therefore 10 s; only the I{initial} one may be 5 s.
  - A client started before the relays hold a full consensus may fetch an
    empty one and wait 15-20 s for the next; hence the two phases.

Everything stays on 127.0.0.1: every ORPort, DirPort, ControlPort and
SocksPort is bound there (on ports chosen free at start, so parallel runs
do not collide), outgoing connections are bound there too
(C{OutboundBindAddress}), and the C{DirAuthority} lines replace tor's
public authorities and fallbacks, so no tor of ours ever dials another
address.  Each torrc names this Python process in
C{__OwningControllerProcess}: the tors exit if the test runner dies.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = ["TorClient", "TorNetwork", "TorNetworkError", "TorNode", "cannot_run"]

LOOPBACK = "127.0.0.1"

POLL_SECONDS = 0.2
STOP_SECONDS = 10.0
TAIL_LINES = 25

# tor's first consensus comes after the initial voting interval; later ones
# every regular interval (the smallest tor accepts, see the module docstring).
VOTING = {
    "TestingV3AuthInitialVotingInterval": "5",
    "TestingV3AuthInitialVoteDelay": "2",
    "TestingV3AuthInitialDistDelay": "2",
    "V3AuthVotingInterval": "10",
    "V3AuthVoteDelay": "2",
    "V3AuthDistDelay": "2",
}

_FINGERPRINT_LINE = re.compile(r"^\S+ ((?:[0-9A-F]{4} ?){10})$")

Options = list[tuple[str, str]]


class TorNetworkError(Exception):
    """
    The private Tor network could not be built: a tool failed, a tor exited,
    or a node did not come up in time.  The message says which, with the
    end of the relevant logs.
    """


def _find_program(name: str) -> str | None:
    """
    The path of program C{name}, looking in C{PATH} and in the C{sbin}
    directories (Debian puts C{tor} in C{/usr/sbin}).
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name, path=search)


def cannot_run() -> str | None:
    """
    Why the network cannot be built here, in words.

    @return: C{None} when C{tor}, C{tor-gencert} and the C{txtorcon} module
        are present and 127.0.0.1 can be bound; otherwise the reason.
    """
    missing = [name for name in ("tor", "tor-gencert") if _find_program(name) is None]
    if importlib.util.find_spec("txtorcon") is None:
        missing.append("the txtorcon Python module")
    if missing:
        return "missing: " + ", ".join(missing)
    try:
        _free_ports(1)
    except OSError as error:
        return f"cannot listen on {LOOPBACK}: {error}"
    return None


def _free_ports(count: int) -> list[int]:
    """
    C{count} distinct TCP ports that are free on 127.0.0.1 right now: the
    kernel picks them (bind to port 0) and we release them at once.  Some
    other socket may take one before tor binds it; tor then exits, and
    L{TorNetwork.start} says so.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(probe)
            probe.bind((LOOPBACK, 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    """
    The last C{lines} lines of the file at C{path}, or a note that it is
    missing.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class TorNode:
    """
    One tor process of the network and its directory.

    @ivar name: short name (C{a0}, C{r0}, C{c0}), also in its nickname.
    @ivar data_dir: its C{DataDirectory}, holding its torrc and logs.
    @ivar control_port: its ControlPort on 127.0.0.1 (cookie
        authentication, C{control_auth_cookie} in C{data_dir}).
    @ivar process: the running tor, once started.
    """

    def __init__(self, name: str, data_dir: Path, control_port: int) -> None:
        self.name = name
        self.data_dir = data_dir
        self.control_port = control_port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def nickname(self) -> str:
        return f"test{self.name}"

    @property
    def torrc(self) -> Path:
        return self.data_dir / "torrc"

    @property
    def notice_log(self) -> Path:
        return self.data_dir / "notice.log"

    @property
    def stdout_log(self) -> Path:
        return self.data_dir / "stdout.log"

    def options(self, network: Options) -> Options:
        """
        This node's torrc options: C{network} (what every node of the
        network shares) and its own.
        """
        return [
            *network,
            ("DataDirectory", str(self.data_dir)),
            ("Nickname", self.nickname),
            ("PidFile", str(self.data_dir / "pid")),
            ("Log", f"notice file {self.notice_log}"),
            ("SafeLogging", "0"),
            ("LogTimeGranularity", "1"),
            ("ControlPort", f"{LOOPBACK}:{self.control_port}"),
            ("CookieAuthentication", "1"),
            ("ShutdownWaitLength", "0"),
            ("OutboundBindAddress", LOOPBACK),
            ("__OwningControllerProcess", str(os.getpid())),
        ]

    def start(self, tor: str, network: Options) -> None:
        """
        Write the torrc and start tor, its output going to C{stdout.log}.
        """
        self.torrc.write_text(
            "".join(f"{key} {value}\n" for key, value in self.options(network))
        )
        with self.stdout_log.open("wb") as output:
            # An empty defaults file: nothing from /etc/tor/torrc-defaults.
            self.process = subprocess.Popen(
                [tor, "-f", str(self.torrc), "--defaults-torrc", os.devnull],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                cwd=self.data_dir,
            )

    def exited(self) -> int | None:
        """
        The exit status if this node's tor was started and has exited,
        else C{None}.
        """
        return None if self.process is None else self.process.poll()

    def report(self) -> str:
        """
        The end of this node's logs, for error messages.
        """
        text = f"--- {self.name}: {self.notice_log} (end)\n{_tail(self.notice_log)}"
        if self.exited() is not None:
            text += f"\n--- {self.name}: {self.stdout_log} (end)\n{_tail(self.stdout_log)}"
        return text


class TorRelay(TorNode):
    """
    A relay: a node with an ORPort and an identity fingerprint.

    @ivar or_port: its ORPort on 127.0.0.1.
    @ivar fingerprint: its RSA identity fingerprint (40 hex digits), known
        once the keys are made.
    """

    def __init__(self, name: str, data_dir: Path, control_port: int, or_port: int) -> None:
        super().__init__(name, data_dir, control_port)
        self.or_port = or_port
        self.fingerprint = ""

    def options(self, network: Options) -> Options:
        return [
            *super().options(network),
            ("SocksPort", "0"),
            ("ORPort", f"{LOOPBACK}:{self.or_port}"),
            ("Address", LOOPBACK),
            ("AssumeReachable", "1"),
            ("ExitRelay", "0"),
            ("ExitPolicy", "reject *:*"),
            ("ContactInfo", f"{self.name}@test.invalid"),
        ]

    def consensus_size(self) -> int:
        """
        How many relays this node's current microdescriptor consensus
        lists (0 before it has one).
        """
        try:
            text = (self.data_dir / "cached-microdesc-consensus").read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if line.startswith("r "))


class TorAuthority(TorRelay):
    """
    A directory authority (and relay).

    @ivar dir_port: its DirPort on 127.0.0.1.
    @ivar v3ident: the fingerprint of its authority identity key, known
        once the keys are made.
    """

    def __init__(
        self, name: str, data_dir: Path, control_port: int, or_port: int, dir_port: int
    ) -> None:
        super().__init__(name, data_dir, control_port, or_port)
        self.dir_port = dir_port
        self.v3ident = ""

    @property
    def dir_authority(self) -> str:
        """
        What follows C{DirAuthority} in a torrc to name this authority.
        """
        return (
            f"{self.nickname} orport={self.or_port} no-v2 v3ident={self.v3ident} "
            f"{LOOPBACK}:{self.dir_port} {self.fingerprint}"
        )

    def options(self, network: Options) -> Options:
        return [
            *super().options(network),
            ("DirPort", f"{LOOPBACK}:{self.dir_port}"),
            ("AuthoritativeDirectory", "1"),
            ("V3AuthoritativeDirectory", "1"),
            *VOTING.items(),
        ]


class TorClient(TorNode):
    """
    A client, for tests to use through its SocksPort and ControlPort (as a
    client and as an onion service host).

    @ivar socks_port: its SocksPort on 127.0.0.1.
    """

    def __init__(self, name: str, data_dir: Path, control_port: int, socks_port: int) -> None:
        super().__init__(name, data_dir, control_port)
        self.socks_port = socks_port

    def options(self, network: Options) -> Options:
        return [*super().options(network), ("SocksPort", f"{LOOPBACK}:{self.socks_port}")]

    def bootstrapped(self) -> bool:
        """
        Whether this client has logged C{Bootstrapped 100%}.
        """
        try:
            return "Bootstrapped 100%" in self.notice_log.read_text(errors="replace")
        except OSError:
            return False


class TorNetwork:
    """
    A private Tor network of tor processes on 127.0.0.1, in C{directory}
    (one sub-directory per node: C{a0}.. authorities, C{r0}.. relays,
    C{c0}.. clients, each with its torrc, C{notice.log} and
    C{stdout.log}).  C{directory} must not hold an earlier network.

    @ivar authorities: the directory authorities, once L{start} made them.
    @ivar relays: the other relays, once L{start} made them.
    @ivar clients: the clients, once L{start} started them.
    @ivar dir_authorities: what follows C{DirAuthority} for each
        authority, once L{start} made the keys.
    @ivar timings: seconds taken by each step of L{start} done so far
        (C{keys}, C{relays}, C{clients}).
    """

    def __init__(
        self, directory: Path, authorities: int = 3, relays: int = 1, clients: int = 1
    ) -> None:
        if authorities < 1 or relays < 0 or clients < 0:
            raise ValueError("need at least one authority, and no negative counts")
        if any(character.isspace() for character in str(directory.resolve())):
            raise ValueError(f"tor's Log option cannot take a path with spaces: {directory}")
        self.directory = directory.resolve()
        self.authority_count = authorities
        self.relay_count = relays
        self.client_count = clients
        self.authorities: list[TorAuthority] = []
        self.relays: list[TorRelay] = []
        self.clients: list[TorClient] = []
        self.dir_authorities: list[str] = []
        self.timings: dict[str, float] = {}
        self._tor = _find_program("tor") or "tor"
        self._gencert = _find_program("tor-gencert") or "tor-gencert"

    @property
    def routers(self) -> list[TorRelay]:
        """
        Every relay of the network, authorities first.
        """
        return [*self.authorities, *self.relays]

    @property
    def nodes(self) -> list[TorNode]:
        """
        Every node of the network.
        """
        return [*self.routers, *self.clients]

    def client_options(self) -> list[tuple[str, str]]:
        """
        The torrc options another tor needs to join this network as a client
        or onion service host, in order (C{DirAuthority} repeats).  Valid
        once L{start} has made the keys.

        C{OutboundBindAddress} is not needed to join; it keeps that tor's
        connections on 127.0.0.1 too.
        """
        if not self.dir_authorities:
            raise TorNetworkError("the network has no keys yet: call start() first")
        return [
            ("TestingTorNetwork", "1"),
            *(("DirAuthority", line) for line in self.dir_authorities),
            ("PathsNeededToBuildCircuits", "0.67"),
            ("Sandbox", "0"),
            ("OutboundBindAddress", LOOPBACK),
        ]

    def _network_options(self) -> Options:
        """
        The torrc options every node of the network shares.
        """
        return [
            ("TestingTorNetwork", "1"),
            ("Sandbox", "0"),
            ("PathsNeededToBuildCircuits", "0.67"),
            ("TestingDirAuthVoteExit", "*"),
            ("TestingDirAuthVoteHSDir", "*"),
            ("TestingDirAuthVoteGuard", "*"),
            ("TestingMinExitFlagThreshold", "0"),
            ("V3AuthNIntervalsValid", "2"),
            *(("DirAuthority", line) for line in self.dir_authorities),
        ]

    # -- starting ----------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        """
        Make the keys and torrcs, start the authorities and relays and wait
        until each holds a consensus listing all of them, then start the
        clients and wait until each has bootstrapped.

        On failure every tor started is stopped (its files stay) and
        L{TorNetworkError} is raised: at once when a tool fails or a tor
        exits, otherwise when C{timeout} seconds have passed.
        """
        if self.authorities:
            raise TorNetworkError(f"the network in {self.directory} was already started")
        began = time.monotonic()
        deadline = began + timeout

        def lap(step: str) -> None:
            nonlocal began
            now = time.monotonic()
            self.timings[step] = now - began
            began = now

        try:
            self._make_routers()
            self._make_keys(deadline)
            lap("keys")
            network = self._network_options()
            for router in self.routers:
                router.start(self._tor, network)
            self._wait(deadline, self.routers, self._routers_ready, self._routers_late)
            lap("relays")
            self._make_clients()
            for client in self.clients:
                client.start(self._tor, network)
            self._wait(deadline, self.nodes, self._clients_ready, self._clients_late)
            lap("clients")
        except BaseException:
            self.stop()
            raise

    def _node_directory(self, name: str) -> Path:
        path = self.directory / name
        (path / "keys").mkdir(mode=0o700, parents=True)
        path.chmod(0o700)
        return path

    def _make_routers(self) -> None:
        ports = iter(_free_ports(3 * self.authority_count + 2 * self.relay_count))
        for index in range(self.authority_count):
            name = f"a{index}"
            self.authorities.append(
                TorAuthority(name, self._node_directory(name), next(ports), next(ports), next(ports))
            )
        for index in range(self.relay_count):
            name = f"r{index}"
            self.relays.append(TorRelay(name, self._node_directory(name), next(ports), next(ports)))

    def _make_clients(self) -> None:
        # Chosen only now: while the relays ran, their outgoing connections
        # took ephemeral ports, possibly the ones we would have picked before.
        ports = iter(_free_ports(2 * self.client_count))
        for index in range(self.client_count):
            name = f"c{index}"
            self.clients.append(TorClient(name, self._node_directory(name), next(ports), next(ports)))

    def _make_keys(self, deadline: float) -> None:
        """
        Make every authority's keys and certificate and every relay's
        identity, all at once (it is CPU-bound), and learn their
        fingerprints.
        """
        jobs: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        for authority in self.authorities:
            keys = authority.data_dir / "keys"
            log = authority.data_dir / "gencert.log"
            jobs.append((f"tor-gencert for {authority.name}", log, self._spawn(
                [self._gencert, "--create-identity-key", "--passphrase-fd", "0", "-m", "12",
                 "-a", f"{LOOPBACK}:{authority.dir_port}",
                 "-i", str(keys / "authority_identity_key"),
                 "-s", str(keys / "authority_signing_key"),
                 "-c", str(keys / "authority_certificate")],
                log, stdin=b"\n",  # an empty passphrase
            )))
        for router in self.routers:
            log = router.data_dir / "fingerprint.log"
            jobs.append((f"tor --list-fingerprint for {router.name}", log, self._spawn(
                [self._tor, "--ignore-missing-torrc", "-f", os.devnull,
                 "--defaults-torrc", os.devnull, "--DisableNetwork", "1",
                 "--orport", "1", "--datadirectory", str(router.data_dir),
                 "--list-fingerprint"],
                log,
            )))
        try:
            for what, log, process in jobs:
                try:
                    status = process.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    raise TorNetworkError(f"{what} took too long:\n{_tail(log)}") from None
                if status != 0:
                    raise TorNetworkError(f"{what} failed ({status}):\n{_tail(log)}")
        finally:
            for _, _, process in jobs:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        for router in self.routers:
            router.fingerprint = self._read_fingerprint(router)
        for authority in self.authorities:
            authority.v3ident = self._read_v3ident(authority)
        self.dir_authorities = [authority.dir_authority for authority in self.authorities]

    @staticmethod
    def _spawn(argv: Sequence[str], log: Path, stdin: bytes = b"") -> subprocess.Popen[bytes]:
        """
        Start C{argv} with C{stdin} as its whole standard input (through a
        pipe holding it already, so nothing waits on us) and its output in
        C{log}.
        """
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, stdin)
            os.close(write_end)
            with log.open("wb") as output:
                return subprocess.Popen(
                    argv, stdin=read_end, stdout=output, stderr=subprocess.STDOUT
                )
        finally:
            os.close(read_end)

    @staticmethod
    def _read_fingerprint(router: TorRelay) -> str:
        log = router.data_dir / "fingerprint.log"
        for line in reversed(log.read_text(errors="replace").splitlines()):
            match = _FINGERPRINT_LINE.match(line.strip())
            if match:
                return match.group(1).replace(" ", "")
        raise TorNetworkError(f"no fingerprint from tor for {router.name}:\n{_tail(log)}")

    @staticmethod
    def _read_v3ident(authority: TorAuthority) -> str:
        certificate = authority.data_dir / "keys" / "authority_certificate"
        for line in certificate.read_text(errors="replace").splitlines():
            if line.startswith("fingerprint "):
                return line.split()[1]
        raise TorNetworkError(f"no fingerprint in {certificate}")

    # -- waiting -----------------------------------------------------------

    def _routers_ready(self) -> bool:
        return all(router.consensus_size() >= len(self.routers) for router in self.routers)

    def _routers_late(self) -> str:
        late = [router for router in self.routers if router.consensus_size() < len(self.routers)]
        return (
            f"the relays did not all get a consensus listing all {len(self.routers)} relays: "
            + ", ".join(f"{router.name} has {router.consensus_size()}" for router in late)
            + "\n" + "\n".join(router.report() for router in late)
        )

    def _clients_ready(self) -> bool:
        return all(client.bootstrapped() for client in self.clients)

    def _clients_late(self) -> str:
        late = [client for client in self.clients if not client.bootstrapped()]
        return (
            "clients did not bootstrap: " + ", ".join(client.name for client in late)
            + "\n" + "\n".join(client.report() for client in late)
        )

    def _wait(
        self,
        deadline: float,
        watched: Iterable[TorNode],
        ready: Callable[[], bool],
        late: Callable[[], str],
    ) -> None:
        """
        Poll until C{ready()} is true.

        @raise TorNetworkError: at once if a C{watched} tor exits; with
            C{late()} as the message if C{deadline} passes first.
        """
        watched = list(watched)
        while True:
            for node in watched:
                status = node.exited()
                if status is not None:
                    raise TorNetworkError(
                        f"tor {node.name} exited ({status}) while the network was starting\n"
                        + node.report()
                    )
            if ready():
                return
            if time.monotonic() >= deadline:
                raise TorNetworkError(late())
            time.sleep(POLL_SECONDS)

    # -- stopping ----------------------------------------------------------

    def stop(self, remove_files: bool = False) -> None:
        """
        Stop every tor started, by the pid recorded: SIGTERM, then SIGKILL
        for any still running after a while.  Safe to call more than once.

        @param remove_files: also remove the nodes' directories; by default
            they stay, for post-mortems.
        """
        running = [node.process for node in self.nodes if node.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if remove_files:
            for node in self.nodes:
                shutil.rmtree(node.data_dir, ignore_errors=True)
