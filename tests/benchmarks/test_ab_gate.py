"""make bench-ab's wall-clock verdicts end to end on this machine: A/A runs are quiet, a known extra cost is caught.

Not part of ``make test``: it asserts what timings conclude. ``make bench-ab-check`` runs it, on a quiet machine,
one benchmark at a time (~40 min with the defaults). Both sides are HEAD (``--base HEAD --head HEAD``: the working
tree's edits cannot make an A/A run into an A/B one); the extra cost is a server argument on the head side only.

    AB_CHECK_AA_RUNS=20 AB_CHECK_BURN_RUNS=10 AB_CHECK_MODELS=uvloop-protocol,asyncio-protocol,threads
    AB_CHECK_BURN=--burn-ns=50 AB_CHECK_BURN_MODEL=uvloop-protocol
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT_DIR

AA_RUNS = int(os.environ.get("AB_CHECK_AA_RUNS", "20"))
BURN_RUNS = int(os.environ.get("AB_CHECK_BURN_RUNS", "10"))
MODELS = os.environ.get("AB_CHECK_MODELS", "uvloop-protocol,asyncio-protocol,threads")
BURN = os.environ.get("AB_CHECK_BURN", "--burn-ns=50")  # ~5% of uvloop-protocol's server CPU per message here
BURN_MODEL = os.environ.get("AB_CHECK_BURN_MODEL", "uvloop-protocol")
pytestmark = pytest.mark.timeout(4 * 3600)


def run_ab(results, *args) -> dict:
    out = subprocess.run([sys.executable, "-m", "loadgen", "ab", "--base", "HEAD", "--head", "HEAD", "--only", "wall",
                          "--results", str(results), "--quiet", *args], cwd=ROOT_DIR, capture_output=True, text=True,
                         timeout=3600)
    assert out.returncode in (0, 1), out.stderr
    return json.loads((results / "latest-ab" / "ab.json").read_text())


def verdicts(doc) -> dict[tuple[str, str], str]:
    return {(m, k): w[k]["verdict"] for m, w in doc["wall"]["models"].items()
            for k in ("server_ns_per_msg", "msgs_per_s", "p99_us")}


def test_a_against_a_is_quiet(tmp_path):
    loud = []
    for i in range(AA_RUNS):
        doc = run_ab(tmp_path, "--models", MODELS)
        called = {k: v for k, v in verdicts(doc).items() if v in ("slower", "faster")}
        if called:
            loud.append(called)
        widths = {m: round(w["server_ns_per_msg"]["ci"][1] - w["server_ns_per_msg"]["ci"][0], 4)
                  for m, w in doc["wall"]["models"].items()}
        print(f"A/A {i + 1}/{AA_RUNS}: {called or 'quiet'}; server CPU interval widths {widths}", file=sys.stderr)
    print(f"A/A: {len(loud)} of {AA_RUNS} runs with any slower/faster verdict: {loud}")
    assert len(loud) <= max(1, AA_RUNS // 20), loud


def test_a_known_extra_cost_on_one_side_is_caught(tmp_path):
    caught, medians = 0, []
    for i in range(BURN_RUNS):
        doc = run_ab(tmp_path, "--models", BURN_MODEL, f"--head-arg={BURN}")
        r = doc["wall"]["models"][BURN_MODEL]["server_ns_per_msg"]
        caught += r["verdict"] == "slower"
        medians.append((round(r["median"], 4), [round(x, 4) for x in r["ci"]], r["verdict"]))
        print(f"{BURN} {i + 1}/{BURN_RUNS}: {medians[-1]}", file=sys.stderr)
    print(f"{BURN} on {BURN_MODEL}'s head side: slower in {caught} of {BURN_RUNS} runs: {medians}")
    assert caught >= math.ceil(0.9 * BURN_RUNS), medians
