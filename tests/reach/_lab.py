"""
A UPnP laboratory in network namespaces: a router running Debian's
C{miniupnpd}, a LAN host behind it and a host on the "internet" side.

     LAN 10.77.0.0/24                         WAN 10.78.0.0/24
  [lan] lan0 10.77.0.2 --veth-- gwl0 10.77.0.1 [router] gww0 10.78.0.1 --veth-- inet0 10.78.0.2 [inet]
                                                   + 100.128.0.1/32 on gww0

miniupnpd 2.3 forwards nothing while its WAN address is private or reserved,
so the router's WAN interface also carries 100.128.0.1, an address outside
miniupnpd's reserved list.  It exists only inside these namespaces, which
have no link to the host's network (and the router no default route): only
processes in the C{inet} namespace ever dial it, never the host.

The LAN host also has a second interface (C{lanx0}, 10.99.0.2, on a veth
whose other end stays in the same namespace and leads nowhere), added before
the routed one, so that "the first address found" and "the address on the
interface that routes to the gateway" differ.

Everything is removed by L{Lab.close}: processes by their pid, then the
namespaces (which takes the veths and nftables rules with them).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

LAN_ADDRESS = "10.77.0.2"
ROUTER_LAN_ADDRESS = "10.77.0.1"
ROUTER_WAN_ADDRESS = "10.78.0.1"
INET_ADDRESS = "10.78.0.2"
PUBLIC_ADDRESS = "100.128.0.1"
OTHER_LAN_ADDRESS = "10.99.0.2"
HTTP_PORT = 5555

# miniupnpd's default chain names (nftables backend); it only adds rules to
# them, and refuses every mapping (501) until they exist.
CHAINS = """\
table inet filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept;
    iifname "gwl0" accept;
    jump miniupnpd;
  }
  chain miniupnpd { }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd;
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd;
  }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
"""

TOOLS = ("ip", "nft", "miniupnpd")


def missing_tools() -> list[str]:
    """
    What the lab needs and this machine lacks (programs and the miniupnpc
    module), in words; empty when the lab can run.
    """
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    try:
        import miniupnpc  # noqa: F401
    except ImportError:
        missing.append("the miniupnpc Python module")
    return missing


def cannot_run() -> str | None:
    """
    Why the lab cannot run here (not root, no network namespaces), or
    C{None}.
    """
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    probe = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10
    )
    if probe.returncode != 0:
        return f"ip netns does not work: {probe.stderr.strip()}"
    return None


class Lab:
    """
    The three namespaces, and the processes started in them.
    """

    def __init__(self, scratch: Path) -> None:
        tag = f"p2pu{os.getpid() % 100000}"
        self.router = f"{tag}gw"
        self.lan = f"{tag}lan"
        self.inet = f"{tag}inet"
        self.scratch = scratch
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[Any]] = []
        self.miniupnpd: subprocess.Popen[str] | None = None

    # -- building ----------------------------------------------------------

    def _ip(self, *args: str) -> None:
        _run(["ip", *args])

    def build(self) -> None:
        for ns in (self.router, self.lan, self.inet):
            self._ip("netns", "add", ns)
            self.namespaces.append(ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
        # a dead-end interface on the LAN host, configured first
        self._ip("link", "add", "lanx0", "netns", self.lan, "type", "veth",
                 "peer", "name", "lanx1", "netns", self.lan)
        self._ip("-n", self.lan, "addr", "add", f"{OTHER_LAN_ADDRESS}/24", "dev", "lanx0")
        self._ip("-n", self.lan, "link", "set", "lanx0", "up")
        self._ip("-n", self.lan, "link", "set", "lanx1", "up")
        # LAN side
        self._ip("link", "add", "gwl0", "netns", self.router, "type", "veth",
                 "peer", "name", "lan0", "netns", self.lan)
        self._ip("-n", self.router, "addr", "add", f"{ROUTER_LAN_ADDRESS}/24", "dev", "gwl0")
        self._ip("-n", self.lan, "addr", "add", f"{LAN_ADDRESS}/24", "dev", "lan0")
        self._ip("-n", self.router, "link", "set", "gwl0", "up")
        self._ip("-n", self.lan, "link", "set", "lan0", "up")
        self._ip("-n", self.lan, "route", "add", "default", "via", ROUTER_LAN_ADDRESS)
        # WAN side
        self._ip("link", "add", "gww0", "netns", self.router, "type", "veth",
                 "peer", "name", "inet0", "netns", self.inet)
        self._ip("-n", self.router, "addr", "add", f"{ROUTER_WAN_ADDRESS}/24", "dev", "gww0")
        self._ip("-n", self.inet, "addr", "add", f"{INET_ADDRESS}/24", "dev", "inet0")
        self._ip("-n", self.router, "link", "set", "gww0", "up")
        self._ip("-n", self.inet, "link", "set", "inet0", "up")
        self._ip("-n", self.router, "addr", "add", f"{PUBLIC_ADDRESS}/32", "dev", "gww0")
        self._ip("-n", self.inet, "route", "add", f"{PUBLIC_ADDRESS}/32", "via", ROUTER_WAN_ADDRESS)
        _run(["ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        _run(["ip", "netns", "exec", self.router, "nft", "-f", "-"], stdin=CHAINS)

    def start_miniupnpd(
        self, ext_ip: str | None = PUBLIC_ADDRESS, secure_mode: bool = True
    ) -> None:
        """
        Start miniupnpd in the router namespace and wait until its HTTP
        port answers.

        @param ext_ip: the internet address the router reports; L{None} for
            none configured, so that it uses its WAN interface's first
            address, 10.78.0.1, a private one: then it reports no external
            address and refuses every mapping (501), as a router behind
            another NAT does.
        @param secure_mode: whether LAN hosts may map ports only to
            themselves; without it, one host may map a port to another
            (how the tests make a conflicting mapping).
        """
        conf = self.scratch / "miniupnpd.conf"
        conf.write_text(
            "ext_ifname=gww0\n"
            + (f"ext_ip={ext_ip}\n" if ext_ip is not None else "")
            + "listening_ip=gwl0\n"
            f"http_port={HTTP_PORT}\n"
            "enable_upnp=yes\n"
            "enable_natpmp=no\n"
            "ipv6_disable=yes\n"
            f"secure_mode={'yes' if secure_mode else 'no'}\n"
            "uuid=3b1e5d6a-9c1f-4e0e-8f1a-5c0d2b7e4a11\n"
            f"lease_file={self.scratch / 'upnp.leases'}\n"
            "allow 1024-65535 10.77.0.0/24 1024-65535\n"
            "deny 0-65535 0.0.0.0/0 0-65535\n"
        )
        log = (self.scratch / "miniupnpd.log").open("w")
        self.miniupnpd = subprocess.Popen(
            ["ip", "netns", "exec", self.router, "miniupnpd", "-d", "-f", str(conf),
             "-P", str(self.scratch / "miniupnpd.pid")],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        self.processes.append(self.miniupnpd)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.miniupnpd.poll() is not None:
                raise RuntimeError(f"miniupnpd exited: {self.miniupnpd_log()}")
            probe = subprocess.run(
                ["ip", "netns", "exec", self.lan, sys.executable, "-c",
                 "import socket; socket.create_connection("
                 f"({ROUTER_LAN_ADDRESS!r}, {HTTP_PORT}), 1).close()"],
                capture_output=True, timeout=10,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"miniupnpd did not listen: {self.miniupnpd_log()}")

    def miniupnpd_log(self) -> str:
        path = self.scratch / "miniupnpd.log"
        return path.read_text() if path.exists() else ""

    # -- running things in the namespaces ----------------------------------

    def python(self, ns: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """
        Run a module of this checkout's C{tests.reach} tools in namespace
        C{ns} and wait for it.
        """
        return subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.reach._lab_tools", *args],
            cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=timeout,
        )

    def spawn_python(self, ns: str, *args: str) -> subprocess.Popen[str]:
        """
        Start a C{tests.reach._lab_tools} command in namespace C{ns}, with
        pipes to talk to it; it is killed by L{close} if still running.
        """
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.reach._lab_tools", *args],
            cwd=ROOT, env=_environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=(self.scratch / f"child-{len(self.processes)}.log").open("w"), text=True,
        )
        self.processes.append(process)
        return process

    def spawn(self, ns: str, argv: list[str], env: dict[str, str], log: Path,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """
        Start C{argv} in namespace C{ns}, its output (both streams) into the
        file C{log}; it is stopped by L{close} if still running.
        """
        with log.open("wb") as output:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv], cwd=cwd or self.scratch, env=env,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def nft_rules(self) -> str:
        return _run(["ip", "netns", "exec", self.router, "nft", "list", "ruleset"]).stdout

    # -- tearing down ------------------------------------------------------

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                # ip netns exec execs the command: the pid is the program's
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.namespaces.clear()


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result
