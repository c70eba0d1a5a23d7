"""TLS echo (``--tls-cert``/``--tls-key``) for every model whose library serves TLS, and the load generator's
``--tls``: byte-exact over TLS 1.3 with the certificate verified, backpressure still bounded (a TLS transport has
buffers of its own), a plaintext or failed handshake costs only its own connection, clean stop, an outside client
(``openssl s_client``) nobody here wrote.

The test clients use one asyncio loop per test: an SSL connection must not be read and written from two threads
at once, as the plain-socket helpers do."""

from __future__ import annotations

import asyncio
import random
import select
import signal
import socket
import ssl
import subprocess
import time

import pytest
from test_loadgen import RUN, assert_one_line_error, loadgen

from servers import registry, tls

from conftest import ROOT_DIR, assert_clean_exit, model_params, require_tool

MiB = 1024 * 1024
TLS_MODELS = [m.name for m in registry.MODELS.values() if m.tls]
IO_TIMEOUT_S = 30.0

pytestmark = pytest.mark.skipif(tls.unavailable_reason() is not None, reason=str(tls.unavailable_reason()))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return tls.make_session_certs(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(params=model_params(TLS_MODELS))
def tls_model(request) -> str:
    return request.param


def _tls_args(certs) -> tuple[str, ...]:
    return ("--tls-cert", certs.cert, "--tls-key", certs.key)


def _client_ctx(certs) -> ssl.SSLContext:
    return tls.client_context(certs.ca)


async def _open(addr, ctx, rcvbuf: int | None = None):
    """(reader, writer) over TLS to (host, port) or (path, None), the certificate verified."""
    if addr[1] is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target, name = addr[0], "localhost"
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target, name = addr, addr[0]
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(IO_TIMEOUT_S)
    sock.connect(target)
    sock.setblocking(False)
    opener = asyncio.open_unix_connection if addr[1] is None else asyncio.open_connection
    return await asyncio.wait_for(opener(sock=sock, ssl=ctx, server_hostname=name), IO_TIMEOUT_S)


async def _close(writer) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        pass  # the server may close first; nothing more to read


async def _echo(addr, ctx, payload: bytes, chunks: list[int]) -> bytes:
    reader, writer = await _open(addr, ctx)

    async def send() -> None:
        pos = 0
        for n in chunks:
            writer.write(payload[pos:pos + n])
            pos += n
            await writer.drain()
        writer.write(payload[pos:])
        await writer.drain()

    sender = asyncio.create_task(send())
    try:
        got = await asyncio.wait_for(reader.readexactly(len(payload)), IO_TIMEOUT_S)
        await asyncio.wait_for(sender, IO_TIMEOUT_S)
    finally:
        sender.cancel()
        await _close(writer)
    return got


def _chunks(rng: random.Random, size: int) -> list[int]:
    out, left = [], size
    while left > 0 and len(out) < 40:
        n = min(left, rng.randint(1, max(1, size // 8)))
        out.append(n)
        left -= n
    return out


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_tls_echo_is_byte_exact(tls_model, start_server, certs, tmp_path, transport):
    m = registry.get(tls_model)
    if transport not in m.transports:
        pytest.skip(f"{tls_model} does not serve {transport}")
    extra = ("--transport", "unix", "--path", str(tmp_path / "s.sock")) if transport == "unix" else ()
    server = start_server(tls_model, *extra, *_tls_args(certs))
    addr = (str(tmp_path / "s.sock"), None) if transport == "unix" else server.addr
    ctx = _client_ctx(certs)
    rng = random.Random(7)

    async def main() -> None:
        for size in (1, 100_000, 4 * MiB):
            payload = rng.randbytes(size)
            assert await _echo(addr, ctx, payload, _chunks(rng, size)) == payload, f"{size} B echo differs"
        payloads = [rng.randbytes(16384) for _ in range(50)]  # 50 connections at once
        got = await asyncio.gather(*(_echo(addr, ctx, p, [4000, 5000]) for p in payloads))
        assert got == payloads

    asyncio.run(main())
    server.assert_alive()


TLS_CONCURRENT = 500


def test_500_concurrent_tls_connections_each_echo(tls_model, start_server, certs):
    """Many handshakes at once (none may block the others: the accept loop never does one itself), every echo
    byte-exact on every connection."""
    server = start_server(tls_model, *_tls_args(certs))
    ctx = _client_ctx(certs)
    sem = asyncio.Semaphore(100)  # handshakes in flight at once, as a client pool would

    async def one(i: int) -> bool:
        async with sem:
            payload = f"{i:06d}".encode() * 170
            return await _echo(server.addr, ctx, payload, [len(payload) // 2]) == payload

    async def main() -> list[bool]:
        return await asyncio.gather(*(one(i) for i in range(TLS_CONCURRENT)))

    assert all(asyncio.run(main()))
    server.assert_alive()


def test_a_tls_connection_reset_mid_stream_does_not_disturb_others(tls_model, start_server, certs):
    import struct

    server = start_server(tls_model, *_tls_args(certs))
    ctx = _client_ctx(certs)

    async def main() -> None:
        _r, victim = await _open(server.addr, ctx)
        victim.write(b"\x01" * (4 * MiB))  # mid-stream: the server is reading and echoing this one
        await asyncio.sleep(0)
        sock = victim.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.transport.abort()  # RST, no close_notify
        for n in (10, 100_000):
            assert await _echo(server.addr, ctx, b"y" * n, [n // 2 or 1]) == b"y" * n

    asyncio.run(main())
    server.assert_alive()


RSS_GROWTH_LIMIT = 64 * MiB
SLOW_CLIENTS = 20
SLOW_WRITE = 32 * MiB


def test_tls_slow_readers_get_backpressure_not_buffering(tls_model, start_server, certs):
    """Clients that write without reading: each TLS connection must stall (TCP backpressure through the TLS layer's
    own buffers) with the server's memory bounded, while it goes on serving others."""
    server = start_server(tls_model, *_tls_args(certs))
    ctx = _client_ctx(certs)
    block = b"\xa5" * 65536

    async def main() -> tuple[int, int]:
        assert await _echo(server.addr, ctx, b"warm", [4]) == b"warm"
        base = server.rss()
        conns = [await _open(server.addr, ctx, rcvbuf=64 * 1024) for _ in range(SLOW_CLIENTS)]

        async def push(writer) -> int:
            sent = 0
            while sent < SLOW_WRITE:
                writer.write(block)
                try:  # (a stall detector, not a timed assertion: the RSS bound below is what must hold)
                    await asyncio.wait_for(writer.drain(), 2.0)
                except asyncio.TimeoutError:
                    break  # stalled: the server stopped reading this connection
                sent += len(block)
            return sent

        pushed = sum(await asyncio.gather(*(push(w) for _r, w in conns)))
        grown = server.rss() - base
        for _ in range(3):
            assert await _echo(server.addr, ctx, b"still here" * 100, [500]) == b"still here" * 100
        for _r, w in conns:
            w.transport.abort()
        return pushed, grown

    pushed, grown = asyncio.run(main())
    assert pushed < SLOW_CLIENTS * SLOW_WRITE, "the server swallowed everything: no backpressure"
    assert grown <= RSS_GROWTH_LIMIT, (f"{tls_model}: resident memory grew {grown / MiB:.0f} MiB with {SLOW_CLIENTS} "
                                       f"slow TLS readers ({pushed / MiB:.0f} MiB pushed)")
    server.assert_alive()


def test_a_plaintext_client_and_a_failed_handshake_cost_only_their_own_connection(tls_model, start_server, certs,
                                                                                   tmp_path_factory):
    server = start_server(tls_model, *_tls_args(certs))
    ctx = _client_ctx(certs)
    other = tls.make_session_certs(str(tmp_path_factory.mktemp("other-ca")))  # an authority the server's cert is not from
    plain = socket.create_connection(server.addr, timeout=IO_TIMEOUT_S)
    try:
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)  # not a TLS record

        async def main() -> None:
            with pytest.raises(ssl.SSLCertVerificationError):
                await _open(server.addr, tls.client_context(other.ca))
            assert await _echo(server.addr, ctx, b"x" * 5000, [1000]) == b"x" * 5000

        asyncio.run(main())
        plain.settimeout(IO_TIMEOUT_S)
        try:  # the server ends the plaintext connection: an alert, EOF or a reset, never an echo of it
            data = plain.recv(65536)
            assert not data.startswith(b"GET"), "the server echoed plaintext on a TLS port"
        except ConnectionResetError:
            pass
    finally:
        plain.close()
    server.assert_alive()


def test_tls_signal_stops_with_connections_open(tls_model, start_server, certs):
    server = start_server(tls_model, *_tls_args(certs))
    ctx = _client_ctx(certs)

    async def main():
        idle = await _open(server.addr, ctx)
        busy = await _open(server.addr, ctx, rcvbuf=64 * 1024)
        busy[1].write(b"\x00" * (8 * MiB))  # more than the kernel buffers: the server blocks writing to it
        try:
            await asyncio.wait_for(busy[1].drain(), 1.0)
        except asyncio.TimeoutError:
            pass
        return idle, busy

    loop = asyncio.new_event_loop()
    try:
        idle, busy = loop.run_until_complete(main())
        rc, elapsed, leftover = server.stop(signal.SIGTERM)
        for _r, w in (idle, busy):
            w.transport.abort()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert_clean_exit(server, rc, elapsed, leftover)


def test_openssl_s_client_gets_a_byte_exact_echo(tls_model, start_server, certs):
    """An outside TLS client (OpenSSL's), TLS 1.3 only, verifying the certificate against the session authority."""
    openssl = require_tool("openssl")
    server = start_server(tls_model, *_tls_args(certs))
    payload = random.Random(3).randbytes(50_000).replace(b"\n", b"x") + b"\n"
    p = subprocess.Popen([openssl, "s_client", "-connect", f"{server.addr[0]}:{server.addr[1]}", "-CAfile", certs.ca,
                          "-tls1_3", "-verify_return_error", "-quiet"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(payload)
        p.stdin.flush()
        got = b""
        end = time.monotonic() + IO_TIMEOUT_S
        while len(got) < len(payload) and time.monotonic() < end:
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            chunk = p.stdout.read1(65536)
            if not chunk:
                break
            got += chunk
    finally:
        p.kill()
        _out, err = p.communicate(timeout=10)
    assert got == payload, f"s_client got {len(got)} of {len(payload)} bytes; stderr: {err.decode(errors='replace')[-300:]}"


def test_the_load_generator_over_tls_against_every_tls_model(tmp_path, tls_model):
    out, doc = loadgen(tmp_path, "--server", tls_model, "--tls", "--conns", "20", "--duration", "0.5", "--warmup",
                       "0.2", "--size", "1k", "--quiet", timeout=120)
    assert out.returncode == 0, out.stderr
    r = doc["result"]
    assert r["complete"] and r["integrity_failures"] == 0 and r["messages"] > 0
    assert doc["config"]["tls"] is True and r["engine"]["name"] == "python"
    assert "does not speak TLS" in doc["config"]["engine_note"]


def test_the_load_generator_refuses_a_server_it_cannot_verify(tmp_path, start_server, certs, tmp_path_factory):
    other = tls.make_session_certs(str(tmp_path_factory.mktemp("wrong-ca")))
    server = start_server("uvloop-protocol" if "uvloop-protocol" in TLS_MODELS else TLS_MODELS[0], *_tls_args(certs))
    out, doc = loadgen(tmp_path, "--port", str(server.addr[1]), "--tls", "--tls-ca", other.ca, "--conns", "3",
                       "--duration", "0.3", "--warmup", "0.1", "--quiet")
    assert out.returncode == 3, out.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in out.stderr or "certificate verify failed" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    out, doc = loadgen(tmp_path, "--port", str(server.addr[1]), "--tls", "--tls-ca", certs.ca, "--conns", "3",
                       "--duration", "0.3", "--warmup", "0.1", "--quiet")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--tls-ca", "x.pem"], "applies to --tls"),
    (["--tls", "--tls-ca", __file__], "cannot load it"),
    (["--tls", "--transport", "udp"], "stream transports"),
    (["--tls", "--idle", "10"], "plain TCP"),
    (["--tls", "--engine", "native"], "does not speak TLS"),
    (["--tls", "--tls-ca", "/nonexistent.pem"], "no such file"),
    (["--tls", "--server", "selectors"], "does not serve TLS"),
])
def test_bad_tls_arguments_to_the_load_generator(args, fragment):
    out = subprocess.run([*RUN, *args], cwd=ROOT_DIR, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert_one_line_error(out)
    assert fragment in out.stderr, out.stderr


@pytest.mark.parametrize("args, fragment", [
    (["uvloop-protocol", "--tls-cert", "a.pem"], "go together"),
    (["selectors", "--tls-cert", "{cert}", "--tls-key", "{key}"], "does not serve TLS"),
    (["threads", "--transport", "udp", "--tls-cert", "{cert}", "--tls-key", "{key}"], "stream transports"),
    (["threads", "--tls-cert", "{key}", "--tls-key", "{key}"], "cannot load them"),
    (["reuseport", "--inner", "selectors", "--tls-cert", "{cert}", "--tls-key", "{key}"], "does not serve TLS"),
])
def test_bad_tls_arguments_to_a_server(args, fragment, certs):
    import sys

    argv = [a.format(cert=certs.cert, key=certs.key) for a in args]
    out = subprocess.run([sys.executable, "-m", "servers", *argv, "--port", "0"], cwd=ROOT_DIR, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert fragment in out.stderr, out.stderr
