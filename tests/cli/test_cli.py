"""
The C{p2pblob} command, run as a user runs it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pblob import __version__
from p2pblob.blob.hashing import blob_hash, is_blob_hash
from p2pblob.stream.descriptor import StreamDescriptor, parse_sd_blob
from tests._process import p2pblob
from tests._vectors import vector_path


class CommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = Path(self.mktemp()).absolute()
        self.top.mkdir()
        self.data = self.top / "data"
        self.source = self.top / "movie.mp4"
        self.content = os.urandom(5_000_000)
        self.source.write_bytes(self.content)

    def run_ok(self, *args: str) -> tuple[str, str]:
        result = p2pblob(self.data, *args, cwd=self.top)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout, result.stderr

    def run_error(self, *args: str, status: int = 1) -> str:
        result = p2pblob(self.data, *args, cwd=self.top)
        self.assertEqual(result.returncode, status, result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("p2pblob: error: "), lines[0])
        return lines[0]

    def test_version(self) -> None:
        out, _ = self.run_ok("--version")
        self.assertEqual(out.strip(), f"p2pblob {__version__}")

    def test_publish_verify_assemble(self) -> None:
        out, err = self.run_ok("publish", str(self.source))
        sd_hash = out.strip()
        self.assertTrue(is_blob_hash(sd_hash), out)
        sd_file = self.top / "movie.mp4.sd"
        self.assertEqual(blob_hash(sd_file.read_bytes()), sd_hash)
        self.assertIn("descriptor written to", err)
        self.assertEqual(len(parse_sd_blob(sd_file.read_bytes()).data_blobs), 3)

        out, _ = self.run_ok("verify", str(sd_file))
        self.assertIn("3 of 3 blob(s) present and intact, 0 missing, 0 corrupt", out)
        self.run_ok("verify", sd_hash)  # by hash, from the store

        target = self.top / "downloads"
        target.mkdir()
        out, _ = self.run_ok("assemble", sd_hash, "--output", str(target))
        self.assertEqual(Path(out.strip()), target / "movie.mp4")
        self.assertEqual((target / "movie.mp4").read_bytes(), self.content)
        out, _ = self.run_ok("assemble", str(sd_file), "--output", str(target))
        self.assertEqual(Path(out.strip()), target / "movie_1.mp4")
        self.assertEqual((target / "movie_1.mp4").read_bytes(), self.content)

    def test_sd_out(self) -> None:
        elsewhere = self.top / "descriptors"
        elsewhere.mkdir()
        first, _ = self.run_ok("publish", str(self.source), "--sd-out", str(elsewhere))
        second, _ = self.run_ok("publish", str(self.source), "--sd-out", str(elsewhere))
        self.assertEqual(blob_hash((elsewhere / "movie.mp4.sd").read_bytes()), first.strip())
        self.assertEqual(blob_hash((elsewhere / "movie.mp4_1.sd").read_bytes()), second.strip())
        self.run_ok("publish", str(self.source), "--sd-out", str(self.top / "named.sd"))
        self.assertTrue((self.top / "named.sd").exists())

    def test_verify_reports_missing_and_corrupt(self) -> None:
        out, _ = self.run_ok("publish", str(self.source))
        descriptor = parse_sd_blob((self.top / "movie.mp4.sd").read_bytes())
        first, second, _ = descriptor.blob_hashes
        (self.data / "blobfiles" / first).unlink()
        path = self.data / "blobfiles" / second
        damaged = bytearray(path.read_bytes())
        damaged[0] ^= 1
        path.write_bytes(bytes(damaged))
        result = p2pblob(self.data, "verify", "movie.mp4.sd", cwd=self.top)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"blob 0 missing  {first}", result.stdout)
        self.assertIn(f"blob 1 corrupt  {second}", result.stdout)
        self.assertIn("1 of 3 blob(s) present and intact, 1 missing, 1 corrupt", result.stdout)
        self.assertFalse(path.exists())  # a corrupt blob is never served again
        message = self.run_error("assemble", "movie.mp4.sd", "--output", str(self.top / "x"))
        self.assertIn("2 missing blob(s)", message)
        self.assertFalse((self.top / "x").exists())

    def test_hostile_file_name_stays_inside_output(self) -> None:
        out, _ = self.run_ok("publish", str(self.source))
        honest = parse_sd_blob((self.top / "movie.mp4.sd").read_bytes())
        hostile = StreamDescriptor.build(
            stream_name="x", key=honest.key, suggested_file_name="../../escaped.sh",
            blobs=honest.blobs,
        )
        (self.top / "hostile.sd").write_bytes(hostile.to_sd_blob())
        target = self.top / "inbox"
        target.mkdir()
        out, _ = self.run_ok("assemble", "hostile.sd", "--output", str(target))
        written = Path(out.strip())
        self.assertEqual(written.parent, target)
        self.assertEqual(written.read_bytes(), self.content)
        self.assertFalse((self.top / "escaped.sh").exists())

    def test_errors(self) -> None:
        message = self.run_error("publish", str(self.top / "nope.bin"))
        self.assertIn("no such file", message)
        message = self.run_error("verify", str(vector_path("invalid_sd", "01_bad_stream_hash.json")))
        self.assertIn("invalid stream descriptor", message)
        self.assertIn("stream_hash", message)
        message = self.run_error("verify", "f" * 96)
        self.assertIn("not in the local store", message)
        message = self.run_error("--disk-limit", "lots", "verify", "x")
        self.assertIn("disk-limit", message)
        self.run_ok("publish", str(self.source))
        message = self.run_error("assemble", "movie.mp4.sd", "--output", str(self.source))
        self.assertIn("already exists", message)
        self.assertEqual(self.source.read_bytes(), self.content)

    def test_download_with_nowhere_to_look(self) -> None:
        """
        A download with no peer and no DHT to join says how to give one;
        one whose bootstrap node does not answer says so (after the DHT's
        5-second timeout).
        """
        sd_hash = "ab" * 48
        line = self.run_error("download", sd_hash)
        self.assertIn("give --peer HOST:PORT, or --bootstrap HOST:PORT", line)
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        result = p2pblob(self.data, "download", sd_hash, "--bootstrap", address, cwd=self.top)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],
            f"p2pblob: error: no DHT node answered ({address}); cannot look for peers",
        )

    def test_download_bad_rate(self) -> None:
        """
        A C{--max-download} that is not a rate is one error line naming
        the option.
        """
        line = self.run_error("download", "ab" * 48, "--peer", "127.0.0.1:9", "--max-download", "fast")
        self.assertIn("max-download: 'fast' is not a rate", line)

    def test_disk_limit(self) -> None:
        message = self.run_error("--disk-limit", "4MB", "publish", str(self.source))
        self.assertIn("disk-use limit", message)
        self.assertEqual(
            [n for n in os.listdir(self.data / "blobfiles")], []
        )
        self.assertFalse((self.top / "movie.mp4.sd").exists())
