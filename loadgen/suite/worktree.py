"""Another commit's servers beside this one's: a temporary git worktree, always removed.

``make bench-ab`` (and, later, variants with a git ref) runs the servers of a base commit, checked out into a
detached worktree, on the same interpreter and libraries as the head's. Each run gets a fresh temporary folder
``echobench-ab-XXXXXXXX/`` holding the worktree(s) (``src-base``, and ``src-head`` for a head ref), the copies of
the servers that run (``base``, ``head``) and ``owner`` (the PID that made it). It is removed when the run ends, by error or Ctrl-C (the caller
routes SIGTERM to the same path); a run killed outright cannot clean up, so every run first removes the folders
and worktrees of owners that are no longer alive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..procs import pid_exists

PREFIX = "echobench-ab-"
OWNER = "owner"
GIT_TIMEOUT_S = 120.0


class WorktreeError(Exception):
    """A base that cannot be checked out (no such ref, not a git repository): one line, exit 2."""


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except FileNotFoundError:
        raise WorktreeError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise WorktreeError(f"git {args[0]} did not finish in {GIT_TIMEOUT_S:g} s") from None
    if check and out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        raise WorktreeError(f"git {' '.join(args[:2])}: {last}")
    return out


def resolve(repo: Path, ref: str) -> str:
    """The commit ``ref`` names in ``repo`` (full hash); WorktreeError when it names none."""
    if not ref or ref.startswith("-"):
        raise WorktreeError(f"{ref!r} is not a git ref")
    out = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if out.returncode != 0:
        inside = _git(repo, "rev-parse", "--git-dir", check=False).returncode == 0
        raise WorktreeError(f"{ref!r} is not a commit in {repo}" if inside else f"{repo} is not a git repository")
    return out.stdout.strip()


def working_tree_commit(repo: Path) -> str:
    """The commit a working tree is on, with ``-dirty`` when it has uncommitted changes to tracked files."""
    commit = resolve(repo, "HEAD")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    return commit + ("-dirty" if dirty else "")


def ours(repo: Path) -> list[Path]:
    """The worktrees of ``repo`` that an A/B run made (they live in a folder named ``echobench-ab-*``)."""
    out = _git(repo, "worktree", "list", "--porcelain", check=False)
    paths = [Path(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("worktree ")]
    return [p for p in paths if p.parent.name.startswith(PREFIX)]


def _remove_folder(repo: Path, folder: Path) -> None:
    """Remove an A/B folder: its worktrees (and git's record of them, even if the files are already gone)."""
    for tree in ours(repo):
        if tree.parent == folder:
            _git(repo, "worktree", "remove", "--force", "--force", str(tree), check=False)
    shutil.rmtree(folder, ignore_errors=True)
    _git(repo, "worktree", "prune", check=False)


def prune_stale(repo: Path, log) -> list[Path]:
    """Remove the folders (and worktrees) left by A/B runs whose owner is no longer alive; returns them."""
    folders = {t.parent for t in ours(repo)}
    folders |= {p for p in Path(tempfile.gettempdir()).glob(PREFIX + "*") if (p / OWNER).is_file()}
    gone = []
    for folder in sorted(folders):
        try:
            owner = int((folder / OWNER).read_text().strip())
        except (OSError, ValueError):
            owner = None
        if owner is not None and owner != os.getpid() and pid_exists(owner):
            continue  # another A/B run's, still going
        _remove_folder(repo, folder)
        log(f"bench-ab: removed {folder}, left by an earlier run that did not finish (pid {owner})")
        gone.append(folder)
    return gone


@contextmanager
def ab_folder(repo: Path, log):
    """A fresh folder for one A/B run's trees, removed with every worktree in it whatever ends the block. Both
    sides run from ``FOLDER/base`` and ``FOLDER/head``: paths of the same length, because the length of the
    servers' path moves their instruction counts (measured: uvloop-protocol 4,539 per message from a 10-character
    path, 4,448 from a 27-character one, same code)."""
    repo = Path(repo)
    prune_stale(repo, log)
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    (folder / OWNER).write_text(f"{os.getpid()}\n")
    try:
        yield folder
    finally:
        _remove_folder(repo, folder)


def add_worktree(repo: Path, folder: Path, name: str, ref: str) -> tuple[Path, str]:
    """A detached worktree of ``ref`` at ``folder/name``: (path, commit)."""
    commit = resolve(repo, ref)
    tree = folder / name
    _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    return tree, commit


def snapshot(repo: Path, folder: Path, name: str, paths: tuple[str, ...] = ("servers",)) -> Path:
    """A copy of ``paths`` of a working tree as it is now (tracked files with their uncommitted changes, and new
    files git does not ignore) at ``folder/name``, which edits made during the run cannot reach.

    An A/B run measures both sides from such copies of the ``servers`` package alone, never from a worktree or
    a checkout itself: the two then hold exactly the same names, because anything else beside the code moves
    its instruction counts (measured: selectors 13,499.84 per message run from a fresh worktree, whose root
    holds a ``.git`` file, and 13,491.84 from a copy of the same files)."""
    out = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths)
    tree = folder / name
    for rel in out.stdout.split("\0"):
        src = repo / rel
        if not rel or not src.is_file():  # a deleted tracked file is listed until it is committed
            continue
        dst = tree / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    return tree


def missing_requirements(tree: Path) -> list[str]:
    """The requirements of the tree's ``pyproject.toml`` (its dependencies and the ``models`` extra, the servers'
    libraries) that the running interpreter's installed packages do not satisfy: [] when the base can run on the
    head's environment. A model library that is not installed at all is not listed: that model is unavailable
    on both sides alike."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = tree / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return [f"{path.name} unreadable ({exc})"]
    core = list(project.get("dependencies", []))
    optional = list(project.get("optional-dependencies", {}).get("models", []))
    missing = []
    for text in core + optional:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            missing.append(f"{text} (not a requirement this echobench can read)")
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            if text in core:  # a missing model library leaves that model out on both sides alike
                missing.append(f"{req} (not installed)")
            continue
        try:
            ok = req.specifier.contains(have, prereleases=True)
        except InvalidVersion:
            ok = True
        if not ok:
            missing.append(f"{req} (installed: {have})")
    return missing
