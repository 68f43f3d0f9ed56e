"""
The wallet's own work for one paid blob, timed alone on each side.

    python benchmarks/wallet_per_blob.py [--blobs 5000]

Downloader: for each 2 MiB blob, its share of a reservation
(L{DownloadPayments.reserve}), the payment requests beside its request
(L{DownloadPayments.add_requests}, with cheque pacing) and its cost owed
(L{DownloadPayments.pay}); every tenth blob the clock moves on by the
wallet's sync interval, so the owed costs are paid and the ledger written
(its fsync runs in the loop too, in this thread, as the sync worker would in
its own).  Seeder: the debt check before each blob (L{BlobCharges.check})
and the debt recorded after it (L{BlobCharges.served}), with the ledger
written every tenth blob.  Real ledgers in a temporary directory, a fake
clock, no sockets.

It prints microseconds per blob on each side, to set against the few
milliseconds a blob takes on the wire (L{payments_overhead}).  Benchmarks
print numbers; this one never fails on them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet.task import Clock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pblob.blob.hashing import MAX_BLOB_SIZE  # noqa: E402
from p2pblob.peer.peer import Peer  # noqa: E402
from p2pblob.wallet.keys import NodeKey  # noqa: E402
from p2pblob.wallet.paying import DownloadPayments  # noqa: E402
from p2pblob.wallet.rates import PaymentRateManager  # noqa: E402
from p2pblob.wallet.serving import BlobCharges  # noqa: E402
from p2pblob.wallet.units import to_micro  # noqa: E402
from p2pblob.wallet.wallet import SYNC_INTERVAL, Wallet  # noqa: E402
from tests.wallet._helpers import HeldWorker  # noqa: E402
from tests.wallet.test_exchange import FakeSender  # noqa: E402

RATE = 0.0625
SEEDER_KEY = NodeKey.from_seed(bytes(range(32)))
CLIENT_KEY = NodeKey.from_seed(bytes(range(32, 64)))


def downloader(directory: Path, blobs: int) -> float:
    clock, worker = Clock(), HeldWorker()
    wallet = Wallet(clock, CLIENT_KEY, directory / "client.sqlite",
                    initial_grant=to_micro(1e9), sync_worker=worker)  # type: ignore[arg-type]
    wallet.start()
    try:
        peer = Peer("127.0.0.1", 3333)
        wallet.learn_peer_key(peer, SEEDER_KEY.public_key)
        payments = DownloadPayments(wallet, RATE)
        connection = FakeSender()
        started = time.perf_counter()
        for n in range(blobs):
            share = payments.reserve(peer, MAX_BLOB_SIZE)
            payments.add_requests(peer, connection)
            payments.pay(share, MAX_BLOB_SIZE)
            if n % 10 == 9:
                clock.advance(SYNC_INTERVAL)
                worker.run_all()
                connection.requests.clear()
        return (time.perf_counter() - started) / blobs
    finally:
        wallet.stop()


def seeder(directory: Path, blobs: int) -> float:
    clock, worker = Clock(), HeldWorker()
    wallet = Wallet(clock, SEEDER_KEY, directory / "server.sqlite",
                    debt_limit=None, sync_worker=worker)  # type: ignore[arg-type]
    wallet.start()
    try:
        charges = BlobCharges(wallet, PaymentRateManager(RATE))
        client = Peer("127.0.0.1", 50000)
        wallet.learn_peer_key(client, CLIENT_KEY.public_key)
        started = time.perf_counter()
        for n in range(blobs):
            charges.check(client)
            charges.served(client, MAX_BLOB_SIZE, RATE)
            if n % 10 == 9:
                clock.advance(SYNC_INTERVAL)
                worker.run_all()
        return (time.perf_counter() - started) / blobs
    finally:
        wallet.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blobs", type=int, default=5000, help="blobs timed (default: 5000)")
    args, ignored = parser.parse_known_args()
    if ignored:
        print(f"ignoring options for other benchmarks: {' '.join(ignored)}")
    directory = Path(tempfile.mkdtemp(prefix="p2pblob-wallet-"))
    try:
        down = downloader(directory, args.blobs)
        up = seeder(directory, args.blobs)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"downloader: {down * 1e6:6.1f} µs per paid blob "
          "(reserve, payment requests, cost owed; paid and written every 10 blobs)")
    print(f"seeder:     {up * 1e6:6.1f} µs per paid blob "
          "(debt check, debt recorded; written every 10 blobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
