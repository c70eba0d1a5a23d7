"""Build the C calibration client (loadgen/suite/cref/echo_client.c) with the system C compiler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("echo_client.c")
BUILD_DIR = Path(__file__).resolve().parents[3] / "build"
BINARY = BUILD_DIR / "echo_client"


def build() -> tuple[Path | None, str | None]:
    """(path to the binary, None) or (None, reason it cannot be built here)."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY, None
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler (cc, gcc or clang) on PATH"
    BUILD_DIR.mkdir(exist_ok=True)
    out = subprocess.run([cc, "-O2", "-Wall", "-o", str(BINARY), str(SOURCE)], capture_output=True, text=True)
    if out.returncode != 0:
        return None, f"{cc} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
    return BINARY, None
