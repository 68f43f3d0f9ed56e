"""
Programs the UPnP lab (L{tests.reach._lab}) runs inside its namespaces;
each prints JSON on standard output.

  mapper TCP UDP LEASE [DISCOVER_DELAY_MS]
      in the LAN namespace: p2pblob's UPnPPortMapper, with its blocking calls
      in a ThreadWorker, plus a TCP and a UDP echo server on the mapped
      ports.  Prints its status once the first attempt is over; then reads
      commands, one a line: "status" (prints the status), "stop" (stops the
      mapper, prints the status and exits).
  list
      in the LAN namespace: the gateway's mapping table, read with miniupnpc
      (another client than the mapper's).
  add PORT LEASE [INTERNAL_ADDRESS [PROTOCOL]]
      in the LAN namespace: one mapping (TCP unless told) to this host, or to
      INTERNAL_ADDRESS (which needs a router not in secure mode), never
      renewed.
  probe HOST TCP UDP
      in the internet namespace: whether a TCP connection and a UDP datagram
      to HOST come back echoed.
  ask HOST PORT REQUEST
      in the internet namespace: sends REQUEST (a JSON object) to an LBRY
      blob exchange server at HOST:PORT and prints its answer, the first
      JSON object it sends back ({"answer": ...} or {"error": ...}).
  dhtping HOST PORT
      in the internet namespace: a DHT ping to HOST:PORT (UDP); prints
      {"result": "pong"} or {"error": ...}.
  dhtfind HOST PORT BLOB_HASH
      in the internet namespace: a DHT findValue for BLOB_HASH (hex) to
      HOST:PORT (UDP); prints {"peers": [[host, tcp_port], ...]} or
      {"error": ...}.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from twisted.internet import protocol, stdio, task
from twisted.internet.defer import Deferred
from twisted.protocols.basic import LineReceiver

from p2pblob._threads import ThreadWorker
from p2pblob.reach import UPnPPortMapper


def _print(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


class _Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _EchoDatagram(protocol.DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)


class _Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, mapper: UPnPPortMapper, done: Deferred[None]) -> None:
        self.mapper = mapper
        self.done = done

    def lineReceived(self, line: bytes) -> None:
        command = line.decode().strip()
        if command == "status":
            _print(self.mapper.status())
        elif command == "stop":
            stopped = self.mapper.stopService()
            stopped.addCallback(lambda _: _print(self.mapper.status()))
            stopped.chainDeferred(self.done)


async def _mapper(reactor: Any, tcp: int, udp: int, lease: int, delay: int | None) -> None:
    reactor.listenTCP(tcp, protocol.Factory.forProtocol(_Echo))
    reactor.listenUDP(udp, _EchoDatagram())
    worker = ThreadWorker(reactor, "upnp", max_threads=1)
    worker.start()
    mapper = UPnPPortMapper(reactor, worker, tcp, udp, lease=lease, discover_delay=delay)
    mapper.startService()
    await mapper.settled()
    _print(mapper.status())
    done: Deferred[None] = Deferred()
    stdio.StandardIO(_Commands(mapper, done), reactor=reactor)
    await done
    worker.stop()


def _client() -> Any:
    import miniupnpc

    from tests.reach._lab import HTTP_PORT, ROUTER_LAN_ADDRESS

    # straight to the lab's gateway, without a second of SSDP discovery
    upnp = miniupnpc.UPnP()
    upnp.selectigd(f"http://{ROUTER_LAN_ADDRESS}:{HTTP_PORT}/rootDesc.xml")
    return upnp


def _list() -> None:
    upnp = _client()
    entries = []
    index = 0
    while True:
        entry = upnp.getgenericportmapping(index)
        if entry is None:
            break
        port, proto, (address, internal_port), description, enabled, remote, lease = entry
        entries.append({
            "protocol": proto, "external_port": port, "internal_address": address,
            "internal_port": internal_port, "description": description, "lease": lease,
        })
        index += 1
    _print(entries)


def _add(port: int, lease: int, internal: str | None, proto: str) -> None:
    upnp = _client()
    upnp.addportmapping(
        port, proto, internal or upnp.lanaddr, port, "never renewed", "", lease
    )
    _print({"added": port})


def _probe(host: str, tcp: int, udp: int) -> None:
    result: dict[str, Any] = {}
    try:
        with socket.create_connection((host, tcp), timeout=3) as connection:
            connection.sendall(b"ping over tcp")
            result["tcp"] = connection.recv(100).decode()
    except OSError as e:
        result["tcp"] = f"error: {e}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
            datagram.settimeout(3)
            datagram.sendto(b"ping over udp", (host, udp))
            data, source = datagram.recvfrom(100)
            result["udp"] = data.decode()
            result["udp_source"] = list(source)
    except OSError as e:
        result["udp"] = f"error: {e}"
    _print(result)


def _ask(host: str, port: int, request: str) -> None:
    result: dict[str, Any]
    buffer = b""
    try:
        with socket.create_connection((host, port), timeout=3) as connection:
            connection.sendall(request.encode())
            while True:
                data = connection.recv(65536)
                if not data:
                    result = {"error": f"closed after {buffer!r}"}
                    break
                buffer += data
                try:
                    result = {"answer": json.loads(buffer)}
                    break
                except ValueError:
                    continue
    except OSError as e:
        result = {"error": f"{e} after {buffer!r}"}
    _print(result)


def _dht_ping(host: str, port: int) -> None:
    from p2pblob.dht.messages import Response, decode_datagram, encode_datagram, ping

    rpc_id = os.urandom(20)
    result: dict[str, Any]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
        datagram.settimeout(3)
        try:
            datagram.sendto(encode_datagram(ping(rpc_id, os.urandom(48))), (host, port))
            data, source = datagram.recvfrom(2048)
        except OSError as e:
            result = {"error": str(e)}
        else:
            answer = decode_datagram(data)
            if isinstance(answer, Response) and answer.rpc_id == rpc_id:
                text = answer.result
                if isinstance(text, bytes):
                    text = text.decode("ascii", "replace")
                result = {"result": text, "source": list(source)}
            else:
                result = {"error": f"unexpected answer {answer!r}"}
    _print(result)


def _dht_find(host: str, port: int, blob_hash: str) -> None:
    from p2pblob.dht.messages import Response, decode_datagram, encode_datagram, find_value
    from p2pblob.dht.peers import decode_compact_peer
    from p2pblob.dht.results import FindValueResult

    rpc_id = os.urandom(20)
    key = bytes.fromhex(blob_hash)
    result: dict[str, Any]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
        datagram.settimeout(3)
        try:
            datagram.sendto(encode_datagram(find_value(rpc_id, os.urandom(48), key)),
                            (host, port))
            data, _ = datagram.recvfrom(8192)
        except OSError as e:
            result = {"error": str(e)}
        else:
            answer = decode_datagram(data)
            if isinstance(answer, Response) and answer.rpc_id == rpc_id:
                found = FindValueResult.decode(answer.result, key)
                result = {"peers": [list(decode_compact_peer(p)[:2]) for p in found.peers]}
            else:
                result = {"error": f"unexpected answer {answer!r}"}
    _print(result)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "mapper":
        tcp, udp, lease = (int(a) for a in args[:3])
        delay = int(args[3]) if len(args) > 3 else None
        task.react(
            lambda r: Deferred.fromCoroutine(_mapper(r, tcp, udp, lease, delay))
        )
    elif command == "list":
        _list()
    elif command == "add":
        internal = args[2] if len(args) > 2 else None
        _add(int(args[0]), int(args[1]), internal, args[3] if len(args) > 3 else "TCP")
    elif command == "probe":
        _probe(args[0], int(args[1]), int(args[2]))
    elif command == "ask":
        _ask(args[0], int(args[1]), args[2])
    elif command == "dhtping":
        _dht_ping(args[0], int(args[1]))
    elif command == "dhtfind":
        _dht_find(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
