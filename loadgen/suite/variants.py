"""Variants of the server side (issue 25's first step): an interpreter, optional package pins, optional git ref.

    3.13                       CPython 3.13, found on PATH (python3.13) or under pyenv
    3.13+uvloop==0.19.0        the same with uvloop 0.19.0 (any PEP 508 requirement; ``==`` pins a release)
    /opt/py/bin/python3+trio==0.25.0@origin/main
                               an interpreter by path, a pin, and echobench's servers at a git ref
    current                    the interpreter running this

Each variant gets its own virtual environment under ``.variants/`` (git-ignored), built from the package
registry with the ordinary installer (``pip``) and reused while its spec is unchanged: the folder's name carries
a hash of what defines it (the interpreter's real path and version, the packages, the pins), and a marker file
written *last* says the build finished, so a killed install is found and rebuilt, never used. The load generator
is always this process's own; only the servers run in the variant.

A spec that cannot be used (no such interpreter, a malformed pin) is a one-line ``VariantError``; a variant
whose environment cannot be built (no wheel for that interpreter, no network) is reported by :func:`ensure`
with pip's last line, so a caller lists it with the reason and leaves it out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..envinfo import ROOT

CACHE = ROOT / ".variants"
MARKER = ".echobench-variant.json"
SERVER_PACKAGES = ("uvloop", "gevent", "trio", "trustme")  # what servers/ imports beyond the standard library
INSTALL_TIMEOUT_S = 900
PROBE = ("import json, platform, sys; print(json.dumps({'version': platform.python_version(), "
         "'implementation': sys.implementation.name, 'version_info': list(sys.version_info[:2]), "
         "'executable': sys.executable}))")


class VariantError(ValueError):
    """A variant spec that cannot be used, or a variant that cannot be built: one line for the user."""


@dataclass(frozen=True)
class Variant:
    spec: str  # as given
    interpreter: str  # "3.13", "current" or a path
    pins: tuple[str, ...] = ()  # PEP 508 requirements, e.g. "uvloop==0.19.0"
    ref: str | None = None  # a git ref of echobench's servers (None: this checkout's)
    python: str | None = field(default=None, compare=False)  # the interpreter's path, once found
    version: str | None = field(default=None, compare=False)  # e.g. "3.13.0", once found

    @property
    def label(self) -> str:
        """A short name for tables and folders: py3.13+uvloop-0.19.0@main."""
        if self.version:
            text = f"py{self.version}"
        elif re.fullmatch(r"\d+\.\d+", self.interpreter):
            text = f"py{self.interpreter}"
        else:  # current, or a path not yet asked for its version
            text = "current" if self.interpreter == "current" else re.sub(r"[^A-Za-z0-9._-]+", "-", self.interpreter).strip("-")
        for pin in self.pins:
            text += "+" + re.sub(r"[^A-Za-z0-9._-]+", "-", pin)
        if self.ref:
            text += "@" + re.sub(r"[^A-Za-z0-9._-]+", "-", self.ref)
        return text


def parse(spec: str) -> Variant:
    """A variant from its spec (``INTERPRETER[+PIN...][@REF]``); VariantError (one line) when malformed. The
    interpreter is not looked up here (:func:`locate`)."""
    from packaging.requirements import InvalidRequirement, Requirement

    text = spec.strip()
    if not text:
        raise VariantError("an empty variant: give an interpreter, e.g. 3.13 or 3.13+uvloop==0.19.0")
    ref = None
    if "@" in text:
        text, ref = text.rsplit("@", 1)
        if not ref or ref.startswith("-") or any(c.isspace() for c in ref):
            raise VariantError(f"variant {spec!r}: a git ref after '@', e.g. 3.13@origin/main")
    head, *pins = text.split("+")
    if not re.fullmatch(r"current|\d+\.\d+|(py|python)\d+\.\d+|/\S+", head):
        raise VariantError(f"variant {spec!r}: the interpreter is a version (3.13), python3.13, 'current' or an "
                           "absolute path")
    head = re.sub(r"^(?:python|py)(?=\d)", "", head)
    for pin in pins:
        try:
            req = Requirement(pin)
        except InvalidRequirement as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise VariantError(f"variant {spec!r}: {pin!r} is not a package requirement ({why})") from None
        if not req.specifier:
            raise VariantError(f"variant {spec!r}: pin a version of {req.name} (e.g. {req.name}==1.0), or leave it out")
    return Variant(spec=spec, interpreter=head, pins=tuple(pins), ref=ref)


def candidates(version: str) -> list[str]:
    """Where CPython ``version`` (X.Y) may live: pyenv's installs (newest patch first), then PATH."""
    out = []
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if root.is_dir():
        found = [p for p in root.glob(f"{version}.*") if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name)]
        for p in sorted(found, key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True):
            exe = p / "bin" / f"python{version}"
            if exe.exists():
                out.append(str(exe))
    on_path = shutil.which(f"python{version}")
    if on_path:
        out.append(on_path)
    return out


def probe(python: str) -> dict:
    """The interpreter's own account of itself (version, implementation); VariantError when it does not run."""
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VariantError(f"{python}: does not run ({exc})") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise VariantError(f"{python}: does not run ({last})")
    return json.loads(out.stdout)


def locate(v: Variant) -> Variant:
    """The variant with its interpreter found and asked for its version; VariantError (one line) otherwise."""
    from dataclasses import replace

    if v.interpreter == "current":
        found = [sys.executable]
    elif v.interpreter.startswith("/"):
        if not os.access(v.interpreter, os.X_OK):
            raise VariantError(f"variant {v.spec!r}: {v.interpreter}: no such executable")
        found = [v.interpreter]
    else:
        found = candidates(v.interpreter)
        if not found:
            raise VariantError(f"variant {v.spec!r}: no Python {v.interpreter} here (not on PATH as "
                               f"python{v.interpreter}, not under pyenv)")
    info = probe(found[0])
    want = v.interpreter
    if re.fullmatch(r"\d+\.\d+", want) and ".".join(map(str, info["version_info"])) != want:
        raise VariantError(f"variant {v.spec!r}: {found[0]} is Python {info['version']}, not {want}")
    return replace(v, python=found[0], version=info["version"])


def available(minimum: tuple[int, int] = (3, 10)) -> list[str]:
    """Every CPython X.Y >= ``minimum`` found here (pyenv or PATH), oldest first: the default variants."""
    versions = set()
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    names = [p.name for p in root.glob("*")] if root.is_dir() else []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        names += [n[len("python"):] for n in (os.listdir(d) if os.path.isdir(d) else []) if re.fullmatch(r"python\d+\.\d+", n)]
    for n in names:
        m = re.match(r"(\d+)\.(\d+)", n)
        if m and (int(m.group(1)), int(m.group(2))) >= minimum:
            versions.add(f"{m.group(1)}.{m.group(2)}")
    return sorted(versions, key=lambda x: tuple(map(int, x.split("."))))


def default_packages(names: tuple[str, ...] = SERVER_PACKAGES) -> tuple[str, ...]:
    """The server packages pinned to the releases this environment has (``uvloop==0.23.0``), so that variants
    differ in their interpreter only, unless a variant pins a package itself; a package not installed here is
    left unpinned (the newest release the interpreter can install)."""
    from importlib import metadata

    out = []
    for n in names:
        try:
            out.append(f"{n}=={metadata.version(n)}")
        except metadata.PackageNotFoundError:
            out.append(n)
    return tuple(out)


def requirement_name(req: str) -> str:
    """The distribution a requirement names, normalised (``Trio>=0.25`` -> ``trio``)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ \[;@]", req.strip(), maxsplit=1)[0]).lower()


def requirements(v: Variant, packages: tuple[str, ...]) -> list[str]:
    """What a variant's environment installs: ``packages``, except those the variant pins itself, then its pins."""
    pinned = {requirement_name(p) for p in v.pins}
    return [p for p in packages if requirement_name(p) not in pinned] + list(v.pins)


def cache_key(v: Variant, packages: tuple[str, ...]) -> str:
    """What defines a variant's environment, hashed: the interpreter (real path and version), the packages and
    the pins. Another key, another folder."""
    if v.python is None:
        raise ValueError("locate() the variant first")
    what = {"python": os.path.realpath(v.python), "version": v.version, "packages": sorted(requirements(v, packages))}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def venv_dir(v: Variant, packages: tuple[str, ...], cache: Path = CACHE) -> Path:
    """``cache/v-<key>``: every variant's interpreter at a path of one length (the length of the paths a process
    meets at start-up moves its instruction counts: docs/bench-ab.md); the spec is in the folder's marker."""
    return Path(cache) / f"v-{cache_key(v, packages)}"


def is_built(folder: Path, key: str) -> bool:
    """A finished build of ``key``: its marker exists (written last) and names the same key."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def ensure(v: Variant, packages: tuple[str, ...] = SERVER_PACKAGES, cache: Path = CACHE, log=lambda msg: None,
           install=None) -> Path:
    """The variant's virtual environment (its folder), built if it is not there or not finished, reused
    otherwise. ``install(python, requirements)`` installs into the new environment (default: pip from the
    registry); a failure is a VariantError with the installer's last line, and the half-built folder is
    removed. Returns the folder; its interpreter is ``folder/bin/python``."""
    key = cache_key(v, packages)
    folder = venv_dir(v, packages, cache)
    if is_built(folder, key):
        return folder
    if folder.exists():
        log(f"variants: {folder.name} is not a finished build (an install was cut short?): rebuilding it")
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    reqs = requirements(v, packages)
    log(f"variants: building {folder.name} ({v.python}, {', '.join(reqs) or 'no packages'})")
    try:
        made = subprocess.run([v.python, "-m", "venv", *([] if reqs else ["--without-pip"]), str(folder)],
                              capture_output=True, text=True, timeout=300)
        if made.returncode != 0:
            raise VariantError(f"variant {v.spec!r}: cannot make a virtual environment: "
                               f"{(made.stderr.strip().splitlines() or ['?'])[-1]}")
        python = str(folder / "bin" / "python")
        if reqs:
            (install or _pip_install)(python, reqs, v)
        versions = _versions(python, [requirement_name(r) for r in reqs])
        (folder / MARKER).write_text(json.dumps({"key": key, "spec": v.spec, "python": v.python,
                                                 "version": v.version, "packages": versions}, indent=1))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # never leave a half-built environment that looks usable
        raise
    return folder


def installed(folder: Path) -> dict:
    """The package versions a built variant holds ({name: version}), from its marker."""
    return json.loads((Path(folder) / MARKER).read_text())["packages"]


def _pip_install(python: str, requirements: list[str], v: Variant) -> None:
    try:
        out = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              *requirements], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise VariantError(f"variant {v.spec!r}: pip took over {INSTALL_TIMEOUT_S} s") from None
    if out.returncode != 0:
        lines = [x for x in out.stderr.strip().splitlines() if x.strip() and not x.startswith("WARNING")]
        raise VariantError(f"variant {v.spec!r}: cannot install {' '.join(requirements)}: "
                           f"{lines[-1] if lines else 'pip failed'}")


def _versions(python: str, names: list[str]) -> dict:
    code = ("import json, sys\nfrom importlib import metadata\nout = {}\nfor n in sys.argv[1:]:\n"
            "    try:\n        out[n] = metadata.version(n)\n    except metadata.PackageNotFoundError:\n"
            "        out[n] = None\nprint(json.dumps(out))")
    out = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else {}
