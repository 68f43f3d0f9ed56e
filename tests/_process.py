"""
Running the installed-style entry points (C{p2pblob}, C{twistd p2pblob}) in
subprocesses, against the code of this checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"

# twistd finds dropins on twisted.plugins.__path__; add the checkout's, as an
# installed copy would have them in site-packages/twisted/plugins.
TWISTD = (
    "import sys, twisted.plugins; "
    f"twisted.plugins.__path__.insert(0, {str(PLUGINS)!r}); "
    "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)


def environment(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["P2PBLOB_DATA_DIR"] = str(data_dir)
    env.pop("P2PBLOB_DISK_LIMIT", None)
    return env


def p2pblob(data_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """
    Run C{p2pblob ARGS} and return its result (text output).
    """
    return subprocess.run(
        [sys.executable, "-m", "p2pblob", *args],
        cwd=cwd or data_dir.parent,
        env=environment(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
