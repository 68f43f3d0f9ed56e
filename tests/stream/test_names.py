"""
Tests for L{p2pblob.stream.names}: LBRY's suggested names, and names that are
safe to create from untrusted descriptors without overwriting anything.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pblob.stream.names import (
    DEFAULT_FILE_NAME,
    MAX_NAME_BYTES,
    lbry_sanitize_file_name,
    open_new_file,
    safe_file_name,
    unique_path,
)
from tests._vectors import iter_cases

DEVICES = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(10)}

HOSTILE = [
    "../../etc/passwd",
    "/abs",
    "/",
    "a/b",
    "..",
    ".",
    "...",
    "CON.txt",
    "nul",
    "Com1.tar.gz",
    "lpt9",
    "aux .txt",
    "\x00x",
    "x\ny",
    "x\x7fy",
    "..\\..\\windows\\system32",
    "C:\\evil.exe",
    " . ",
    "",
    "\u202etxt.exe",
    "a" * 400,
    "é" * 200 + ".mp4",
]


class LbrySanitizeTests(SynchronousTestCase):
    """
    L{lbry_sanitize_file_name} gives the suggested names lbry-sdk gives.
    """

    def test_vectors(self) -> None:
        """
        For every stream case, the sanitized file name is the recorded
        C{suggested_file_name} (cases f and g in particular).
        """
        for _, case in iter_cases():
            self.assertEqual(
                lbry_sanitize_file_name(case["input"]["file_name"]),
                case["suggested_file_name"],
            )
        self.assertEqual(lbry_sanitize_file_name('what? "quotes" <x>.txt'), "what quotes x.txt")
        name = "été 2026 — vidéo.mp4"
        self.assertEqual(lbry_sanitize_file_name(name), name)

    def test_rules(self) -> None:
        """
        Forbidden and control characters go, blanks and dots at the ends
        go, exact upper-case device names become the default, and a lone
        dot is no extension.
        """
        for dirty, clean in [
            ("a:b|c*d.txt", "abcd.txt"),
            ("x\x01\x1fy.bin", "xy.bin"),
            ("  spaced  .txt", "spaced.txt"),
            ("\tname", "name"),
            ("trailing...", "trailing"),
            ("file.", "file"),
            ("a. ", "a"),
            (".bashrc", ".bashrc"),
            ("CON.txt", "lbry_download.txt"),
            ("con.txt", "con.txt"),
            ("COM1", "lbry_download"),
            ("???", "lbry_download"),
            ("", "lbry_download"),
            ("archive.tar.gz", "archive.tar.gz"),
        ]:
            self.assertEqual(lbry_sanitize_file_name(dirty), clean, repr(dirty))

    def test_default(self) -> None:
        """
        The default stem is the caller's to choose.
        """
        self.assertEqual(lbry_sanitize_file_name("<>.mp4", "video"), "video.mp4")


class SafeFileNameTests(SynchronousTestCase):
    """
    L{safe_file_name} makes one harmless path component of anything.
    """

    def assertSafe(self, name: str) -> None:
        """
        C{name} is a non-empty single component that no common file system
        treats specially.
        """
        self.assertTrue(name)
        self.assertNotIn("/", name)
        self.assertNotIn("\\", name)
        self.assertNotIn(name, (".", ".."))
        self.assertFalse(os.path.isabs(name))
        self.assertLessEqual(len(name.encode("utf-8")), MAX_NAME_BYTES)
        for c in name:
            self.assertNotIn(unicodedata.category(c), ("Cc", "Cs"), repr(name))
            self.assertNotIn(c, '<>:"|?*\u202e', repr(name))
        self.assertEqual(name, name.strip().strip("."), repr(name))
        self.assertNotIn(name.split(".")[0].strip().upper(), DEVICES)

    def test_hostile_names(self) -> None:
        """
        Traversal attempts, device names, control characters and overlong
        names all become safe single components.
        """
        for hostile in HOSTILE:
            self.assertSafe(safe_file_name(hostile))

    def test_examples(self) -> None:
        """
        What some hostile names become.
        """
        for hostile, safe in [
            ("../../etc/passwd", "etc_passwd"),
            ("/abs", "abs"),
            ("a/b", "a_b"),
            ("..", DEFAULT_FILE_NAME),
            ("", DEFAULT_FILE_NAME),
            ("CON.txt", "_CON.txt"),
            ("nul", "_nul"),
            ("\x00x", "x"),
            ("x\ny", "xy"),
            ("C:\\evil.exe", "C__evil.exe"),
            (".hidden", "hidden"),
            ("été 2026 — vidéo.mp4", "été 2026 — vidéo.mp4"),
        ]:
            self.assertEqual(safe_file_name(hostile), safe, repr(hostile))

    def test_long_names_keep_extension(self) -> None:
        """
        Overlong names are cut at a character boundary before the extension.
        """
        for stem in ("a" * 300, "é" * 300, "日本" * 100):
            name = safe_file_name(stem + ".mkv")
            self.assertTrue(name.endswith(".mkv"))
            self.assertLessEqual(len(name.encode("utf-8")), MAX_NAME_BYTES)
            self.assertGreater(len(name.encode("utf-8")), MAX_NAME_BYTES - 3)
            self.assertTrue(stem.startswith(name[: -len(".mkv")]))

    def test_default(self) -> None:
        """
        The default stands in for an empty result, and is cleaned too.
        """
        self.assertEqual(safe_file_name("..", default="movie.mp4"), "movie.mp4")
        self.assertEqual(safe_file_name("..", default="../.."), DEFAULT_FILE_NAME)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.text(max_size=300) | st.text(alphabet="./\\ \x00CONUL:é", max_size=30))
    def test_anything_is_safe(self, suggested: str) -> None:
        """
        Any text gives a safe name, and cleaning it again changes nothing.
        """
        name = safe_file_name(suggested)
        self.assertSafe(name)
        self.assertEqual(safe_file_name(name), name)


class UniquePathTests(SynchronousTestCase):
    """
    L{unique_path} and L{open_new_file} never pick an existing name.
    """

    def directory(self) -> Path:
        """
        A new empty directory.
        """
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return path

    def test_unique_path(self) -> None:
        """
        The name itself if free, else the first free C{stem_N.ext}.
        """
        directory = self.directory()
        self.assertEqual(unique_path(directory, "a.txt"), directory / "a.txt")
        (directory / "a.txt").write_bytes(b"")
        self.assertEqual(unique_path(directory, "a.txt"), directory / "a_1.txt")
        (directory / "a_1.txt").write_bytes(b"")
        self.assertEqual(unique_path(directory, "a.txt"), directory / "a_2.txt")
        (directory / "b.tar.gz").mkdir()
        self.assertEqual(unique_path(directory, "b.tar.gz"), directory / "b.tar_1.gz")
        (directory / "noext").write_bytes(b"")
        self.assertEqual(unique_path(directory, "noext"), directory / "noext_1")

    def test_dangling_symlink(self) -> None:
        """
        A symbolic link occupies its name even if it points nowhere.
        """
        directory = self.directory()
        (directory / "x.bin").symlink_to(directory / "missing")
        self.assertEqual(unique_path(directory, "x.bin"), directory / "x_1.bin")

    def test_long_name_variants_fit(self) -> None:
        """
        Numbered variants of a maximal name still fit.
        """
        directory = self.directory()
        name = "a" * (MAX_NAME_BYTES - 4) + ".txt"
        (directory / name).write_bytes(b"")
        path = unique_path(directory, name)
        self.assertEqual(len(path.name), MAX_NAME_BYTES)
        self.assertTrue(path.name.endswith("_1.txt"))

    def test_refuses_paths(self) -> None:
        """
        Only single components are accepted.
        """
        directory = self.directory()
        for bad in ("", ".", "..", "a/b", "../x", "/abs", "a\\b", "a\x00b"):
            self.assertRaises(ValueError, unique_path, directory, bad)
            self.assertRaises(ValueError, open_new_file, directory, bad)

    def test_open_new_file(self) -> None:
        """
        Existing files (and what a symbolic link points to) are left alone;
        a new numbered file is created and opened.
        """
        directory = self.directory()
        (directory / "v.mp4").write_bytes(b"original")
        (directory / "v_1.mp4").write_bytes(b"other")
        target = directory / "target"
        target.write_bytes(b"target")
        (directory / "v_2.mp4").symlink_to(target)
        path, f = open_new_file(directory, "v.mp4")
        with f:
            f.write(b"new")
        self.assertEqual(path, directory / "v_3.mp4")
        self.assertEqual(path.read_bytes(), b"new")
        self.assertEqual((directory / "v.mp4").read_bytes(), b"original")
        self.assertEqual((directory / "v_1.mp4").read_bytes(), b"other")
        self.assertEqual(target.read_bytes(), b"target")

    def test_open_free_name(self) -> None:
        """
        A free name is used as is.
        """
        directory = self.directory()
        path, f = open_new_file(directory, "fresh.bin")
        f.close()
        self.assertEqual(path, directory / "fresh.bin")
        self.assertTrue(path.is_file())

    @settings(max_examples=50, deadline=None, database=None)
    @given(
        existing=st.sets(st.integers(0, 6), max_size=7),
        name=st.sampled_from(["f.txt", "f", ".f", "f.tar.gz"]),
    )
    def test_never_overwrites(self, existing: set[int], name: str) -> None:
        """
        Whichever variants exist, the file opened is new and the others
        keep their contents.
        """
        directory = self.directory()
        stem, ext = os.path.splitext(name)
        taken = {}
        for number in existing:
            variant = name if number == 0 else f"{stem}_{number}{ext}"
            (directory / variant).write_bytes(variant.encode())
            taken[variant] = variant.encode()
        predicted = unique_path(directory, name)
        path, f = open_new_file(directory, name)
        with f:
            f.write(b"mine")
        self.assertEqual(path, predicted)
        self.assertNotIn(path.name, taken)
        for variant, content in taken.items():
            self.assertEqual((directory / variant).read_bytes(), content)
