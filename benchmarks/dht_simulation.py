"""
The DHT at scale: lookups, their cost and the memory of a node, on an
in-memory network of 10,000 nodes.

    python benchmarks/dht_simulation.py [--nodes 10000] [--announces 100]
        [--lookups 1] [--removed 0.2] [--seed 4] [--memory objects,rss]

The simulation of C{tests/dht/test_simulation.py} (1,000 nodes there), from
the same helpers (C{tests/dht/_simnet.py}): every node is a real
C{KademliaProtocol} and C{DHTNode}; only the transport is simulated, each
datagram delivered 10 ms after it was sent by a deterministic clock, in one
process.  Every node joins through node 0, 50 at a time with 2 simulated
seconds between batches, and the network is left a simulated minute to
settle.  Then C{--announces} random nodes announce a random blob each, all
at once, and for every blob C{--lookups} random nodes look up its peers,
all at once (the test: one lookup per blob).  Then C{--removed} of the
nodes (a fraction) are taken off at random, without warning, and the blobs
whose announcer is still up are looked up again at once, as in the test:
the routing tables still name the nodes that left.

It prints the time the network took to build (wall, CPU and simulated
seconds), the datagrams sent, the lookups that found the announcing peer
(found/total and %), the RPCs and hops per lookup (median and 95th
percentile, nearest rank), the contacts per routing table and the memory
per node, measured in the ways C{--memory} lists:

  - objects: the bytes of the Python objects reachable from the simulated
    network after the build (C{sys.getsizeof} over the object graph from
    the L{SimNetwork}: the nodes, the clock's pending calls and anything in
    flight; classes, functions and modules not counted) divided by the node
    count.  It misses what C{getsizeof} does not see (on Python 3.11 the
    attribute arrays of plain instances): 7% less than tracemalloc at
    1,000 nodes;
  - rss: the growth of the process's resident set (psutil) over the build,
    divided by the node count.  It also counts the memory the allocator
    freed but kept, so it is the higher figure;
  - tracemalloc: the bytes held by the Python allocator for the objects
    made during the build (traced current size after a full collection)
    divided by the node count.  The most precise, but tracing makes the
    build about 4.5 times slower (nearly an hour at 10,000 nodes).  With
    rss as well, tracemalloc's own bookkeeping is subtracted from the
    growth.

The build dominates the run (11 minutes of CPU at 10,000 nodes, 25 seconds
at 1,000): the work per datagram grows with the routing tables and the
datagrams per node with the size of the network.  To spend less of it
in the garbage collector, which would otherwise traverse millions of
long-lived objects every few seconds, the collection thresholds are raised
(C{--gc-threshold}); that changes nothing in the simulation.

Benchmarks print numbers; this one never fails on timing or on the
success rate (C{tests/dht/test_simulation.py} checks that at 1,000 nodes).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import mean, median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dht._simnet import (
    LookupFigures,
    SimNetwork,
    announce,
    build_network,
    look_up,
    remove_fraction,
)

MB = 1e6
MEMORY_METHODS = ("objects", "rss", "tracemalloc")
# Objects shared by every node, or by the whole program: not counted.
_SHARED = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
)


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The nearest-rank percentile, as in L{LookupFigures.summary}.
    """
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))])


def reachable_bytes(root: object) -> int:
    """
    The sizes (C{sys.getsizeof}) of the objects reachable from C{root},
    each counted once, not going into classes, functions, code or modules
    (nor their globals).
    """
    seen = {id(vars(module)) for module in list(sys.modules.values()) if module is not None}
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def rss_reader() -> Callable[[], int] | None:
    try:
        import psutil
    except ImportError:
        return None
    process = psutil.Process()
    return lambda: int(process.memory_info().rss)


class Phase:
    """
    Wall, CPU and simulated time and datagrams of one step of the benchmark.
    """

    def __init__(self, network: SimNetwork | None = None) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.simulated = network.clock.seconds() if network else 0.0
        self.sent = network.sent if network else 0

    def done(self, network: SimNetwork) -> str:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        simulated = network.clock.seconds() - self.simulated
        sent = network.sent - self.sent
        return f"{wall:.1f} s wall ({cpu:.1f} s CPU), {simulated:g} s simulated, {sent:,} datagrams"


def show(label: str, text: str) -> None:
    print(f"{label + ':' if label else '':<11} {text}", flush=True)


def show_lookups(label: str, figures: LookupFigures, phase: str) -> None:
    show(
        label,
        f"{figures.found}/{figures.lookups} found the announcing peer ({figures.success:.1%})",
    )
    show(
        "",
        f"RPCs per lookup median {median(figures.rpcs):g}, 95th percentile "
        f"{percentile(figures.rpcs, 0.95):g}; hops per lookup median {median(figures.hops):g}, "
        f"95th percentile {percentile(figures.hops, 0.95):g}",
    )
    show("", phase)


def show_routing(label: str, network: SimNetwork) -> None:
    tables = [node.routing for node in network.nodes.values()]
    sizes = [len(table) for table in tables]
    buckets = [len(table.buckets()) for table in tables]
    show(
        label,
        f"contacts per node median {median(sizes):g}, mean {mean(sizes):.1f}, "
        f"5th percentile {percentile(sizes, 0.05):g}, 95th {percentile(sizes, 0.95):g}, "
        f"min {min(sizes)}, max {max(sizes)}; buckets per node median {median(buckets):g}",
    )


def show_live_contacts(network: SimNetwork) -> None:
    tables = [node.routing for node in network.nodes.values()]
    live = [sum(1 for c in table.contacts() if c.address in network.nodes) for table in tables]
    show(
        "",
        f"of which still up: median {median(live):g} per node "
        f"({sum(live) / max(sum(len(table) for table in tables), 1):.1%} of all contacts)",
    )


def build(nodes: int, seed: int, methods: set[str]) -> tuple[SimNetwork, list[str]]:
    """
    Build the network, showing how far it got; return it and what its
    memory per node came to.
    """
    rss = rss_reader() if "rss" in methods else None
    gc.collect()
    rss_before = rss() if rss else 0
    if "tracemalloc" in methods:
        tracemalloc.start()
    phase = Phase()
    step = max(nodes // 10, 1)
    shown = [0]

    def progress(network: SimNetwork) -> None:
        if len(network.nodes) - shown[0] >= step:
            shown[0] = len(network.nodes)
            print(
                f"{'':11} ... {len(network.nodes):,} nodes up, "
                f"{time.perf_counter() - phase.wall:.0f} s",
                flush=True,
            )

    network = build_network(nodes, seed=seed, progress=progress)
    report = phase.done(network)
    gc.collect()
    joined = sum(1 for node in network.nodes.values() if node.joined)
    show("build", f"{report}; {joined:,}/{nodes:,} nodes joined")
    show("", f"{network.sent / nodes:.1f} datagrams sent per node")

    # the process's size first: the object walk makes garbage of its own
    rss_after = rss() if rss else 0
    traced = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else None
    overhead = tracemalloc.get_tracemalloc_memory() if traced else 0
    tracemalloc.stop()
    lines = []
    if "objects" in methods:
        size = reachable_bytes(network)
        lines.append(
            f"objects: {size / nodes:,.0f} bytes per node ({size / MB:.1f} MB of Python objects "
            f"reachable from the network after the build (sys.getsizeof), / {nodes:,} nodes)"
        )
    if traced is not None:
        current, peak = traced
        lines.append(
            f"tracemalloc: {current / nodes:,.0f} bytes per node ({current / MB:.1f} MB traced "
            f"after the build and a full collection, / {nodes:,} nodes; peak {peak / MB:.1f} MB)"
        )
    if "rss" in methods:
        if rss is None:
            lines.append("rss: psutil is not installed (pip install psutil)")
        else:
            growth = rss_after - rss_before - overhead
            less = f", less tracemalloc's own {overhead / MB:.1f} MB" if overhead else ""
            lines.append(
                f"RSS growth (psutil): {growth / nodes:,.0f} bytes per node ({growth / MB:.1f} MB "
                f"over the build{less}, / {nodes:,} nodes)"
            )
    return network, lines


def benchmark(args: Any) -> None:
    started = Phase()
    print(
        f"DHT simulation: {args.nodes:,} nodes, {args.announces} announces, "
        f"{args.lookups} lookup(s) per announce, {args.removed:.0%} removed, seed {args.seed}; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"gc thresholds {gc.get_threshold()}",
        flush=True,
    )
    network, memory = build(args.nodes, args.seed, args.memory)
    show_routing("routing", network)
    for number, line in enumerate(memory):
        show("memory" if number == 0 else "", line)

    phase = Phase(network)
    announced = announce(network, args.announces)
    stored = sum(len(node.protocol.peers) for node in network.nodes.values())
    show(
        "announce",
        f"{len(announced)} blobs by random nodes, stored at {stored / len(announced):.1f} "
        f"nodes per blob (mean)",
    )
    show("", phase.done(network))

    phase = Phase(network)
    figures = look_up(network, announced * args.lookups)
    show_lookups("lookups", figures, phase.done(network))

    removed = remove_fraction(network, args.removed)
    show("removed", f"{removed:,} nodes at random, {len(network.nodes):,} left")
    phase = Phase(network)
    figures = look_up(network, announced * args.lookups)
    show_lookups("lookups", figures, phase.done(network))
    show_routing("routing", network)
    show_live_contacts(network)
    show("total", started.done(network))


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def memory_methods(text: str) -> set[str]:
    methods = {name.strip() for name in text.split(",") if name.strip()}
    unknown = methods - set(MEMORY_METHODS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(sorted(unknown))}; choose among {', '.join(MEMORY_METHODS)}"
        )
    return methods


def thresholds(text: str) -> tuple[int, ...]:
    values = tuple(int(value) for value in text.split(","))
    if not 1 <= len(values) <= 3 or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError("give one to three numbers, as gc.set_threshold takes")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes in the network (default: 10000)")
    parser.add_argument("--announces", type=int, default=100, help="blobs announced (default: 100)")
    parser.add_argument(
        "--lookups", type=int, default=1, help="lookups of each blob, from random nodes (default: 1)"
    )
    parser.add_argument(
        "--removed", type=fraction, default=0.2, help="fraction of the nodes removed (default: 0.2)"
    )
    parser.add_argument("--seed", type=int, default=4, help="random seed (default: 4, the test's)")
    parser.add_argument(
        "--memory", type=memory_methods, default="objects,rss",
        help=f"how to measure the memory per node, among {', '.join(MEMORY_METHODS)} "
        "(default: objects,rss)",
    )
    parser.add_argument(
        "--gc-threshold", type=thresholds, default="50000,20,100",
        help="gc.set_threshold for the run (default: 50000,20,100; Python's: 700,10,10)",
    )
    # scripts/run_benchmarks.py passes the same options to every benchmark
    args, ignored = parser.parse_known_args()
    if ignored:
        print(f"ignoring options for other benchmarks: {' '.join(ignored)}")
    if args.nodes < 2 or args.announces < 1 or args.lookups < 1:
        parser.error("--nodes must be at least 2, --announces and --lookups at least 1")
    gc.set_threshold(*args.gc_threshold)
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
