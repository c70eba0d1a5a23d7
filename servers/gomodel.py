"""``go`` / ``go-1proc``: the Go reference server (``servers/go/echo.go``), built with the Go toolchain.

The Python side only finds (or builds) the binary and ``exec``s it, so the
process that prints the ready line and receives the signals is the Go
server itself. Without a Go toolchain or a built binary the model is listed
as unavailable with the reason and skipped, never a crash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .config import ServerConfig
from .net import ServerError, clear_stale_unix_path

SOURCE = Path(__file__).with_name("go") / "echo.go"
BINARY = Path(__file__).resolve().parents[1] / "build" / "echo-go"


def unavailable_reason() -> str | None:
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return None
    if shutil.which("go") is None:
        return "no Go toolchain (install Debian's golang-go; make builds build/echo-go)"
    return None  # buildable on first use


def build() -> Path:
    """Build ``build/echo-go`` if it is missing or older than its source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    go = shutil.which("go")
    if go is None:
        raise ServerError("the go model needs a Go toolchain (Debian's golang-go)")
    BINARY.parent.mkdir(exist_ok=True)
    env = {**os.environ, "GOCACHE": os.environ.get("GOCACHE", str(BINARY.parent / "go-cache")), "GO111MODULE": "off"}
    out = subprocess.run([go, "build", "-o", str(BINARY), str(SOURCE)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise ServerError(f"go build failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return BINARY


def serve(config: ServerConfig, on_ready, gomaxprocs: int | None = None) -> None:
    binary = build()
    env = dict(os.environ)
    if gomaxprocs is not None:
        env["GOMAXPROCS"] = str(gomaxprocs)
    argv = [str(binary), "--transport", config.transport]
    if config.transport == "unix":
        clear_stale_unix_path(config.path)  # Go's Listen would only say "address already in use"
        argv += ["--path", config.path]
    else:
        argv += ["--host", config.host, "--port", str(config.port)]
    if config.tls_cert:
        argv += ["--tls-cert", config.tls_cert, "--tls-key", config.tls_key]
    # exec: the Go process prints the ready line itself and takes SIGINT/SIGTERM directly
    os.execve(binary, argv, env)
