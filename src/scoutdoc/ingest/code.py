"""Choosing the files of a directory the way git would, plus the ignores a prompt needs on top.

The selection equals `git ls-files --cached --others --exclude-standard` minus DEFAULT_IGNORE_DIRS/
FILES and secret files. Inside a repository, with git installed, git itself lists the files
(`_git_listed`): its ignore rules have corners a reimplementation keeps missing (a directory
re-included by `!*/` after `*`, `logs/**` that leaves `logs/` itself to be entered, global excludes,
a linked worktree's `.git` file), and a submodule or an untracked repository inside it is one entry
there, skipped here with that reason. Elsewhere (no repository, no git, `--no-gitignore` aside) the
same rules are applied by `_Rules`: nested `.gitignore` files with negations, `.git/info/exclude`,
and the `.gitignore` files of enclosing directories up to the repository root; ignored directories
are never entered, which is also how git makes a negation inside an ignored directory ineffective.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .document import Skip
from .options import IngestOptions
from .globmatch import SegmentPattern, is_complex
from .names import display_name
from .secrets import SECRET_SKIP_REASON, is_secret_path

if TYPE_CHECKING:
    import pathspec

DEFAULT_IGNORE_DIRS = frozenset({
    # version control
    ".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj",
    # dependencies and vendored code
    "node_modules", "bower_components", "jspm_packages", "vendor", "site-packages", ".pnpm-store",
    # virtual environments and tool caches
    ".venv", "venv", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    ".hypothesis", ".eggs", ".direnv", ".pixi", ".gradle", ".terraform", ".idea",
    # build output
    "dist", "build", "target", ".next", ".nuxt", ".svelte-kit", ".parcel-cache", "htmlcov", ".coverage",
})
DEFAULT_IGNORE_DIR_GLOBS = ("*.egg-info",)
DEFAULT_IGNORE_FILES = frozenset({
    # lockfiles: machine-written, long, and useless to a reader
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb", "poetry.lock",
    "Pipfile.lock", "uv.lock", "pdm.lock", "Cargo.lock", "Gemfile.lock", "composer.lock", "go.sum",
    "mix.lock", "pubspec.lock", "Podfile.lock", "flake.lock", "packages.lock.json",
    # desktop droppings
    ".DS_Store", "Thumbs.db", "desktop.ini",
})
_IGNORED_DIR_GLOB = re.compile("|".join(fnmatch.translate(g) for g in DEFAULT_IGNORE_DIR_GLOBS))


def is_default_ignored_dir(name: str, path: str | Path) -> bool:
    if name in DEFAULT_IGNORE_DIRS or _IGNORED_DIR_GLOB.match(name):
        return True
    return os.path.isfile(os.path.join(path, "pyvenv.cfg"))  # a virtual environment under any name


class Matcher:
    """A compiled gitignore-style spec with a one-regex pre-check.

    pathspec tries each pattern in turn from Python, which made rule checks most of the walk's time
    on a repository with a 60-line .gitignore. Most paths match no pattern at all, so the patterns'
    own regexes joined into one answer that case in a single call, and only a path that matches
    something gets pathspec's exact last-match-wins verdict.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.spec = gitignore_spec(lines)
        regexes = [p.regex for p in self.spec.patterns if p.include is not None and p.regex is not None]
        self._empty = not regexes  # only comments and blank lines, like git's stock info/exclude
        self._any = None if any(isinstance(r, SegmentPattern) for r in regexes) else _any_matcher(regexes)

    def check(self, path: str) -> bool | None:
        """True: ignored (or, for --include, selected); False: re-included by a negation; None: no pattern matched.

        `path` is relative and uses "/" (as the walk builds it), the form pathspec normalizes to.
        """
        if self._empty or (self._any is not None and self._any(path) is None):
            return None
        return self.spec.check_file(path).include

    def match_file(self, path: str) -> bool:
        return bool(self.check(path))


_NAMED_GROUP = re.compile(r"\(\?P<\w+>")
_ANY_DEPTH = "^(?:.+/)?"  # how pathspec starts a pattern that may match in any directory


def _any_matcher(regexes: list[re.Pattern]) -> Callable[[str], re.Match | None] | None:
    """A function finding a match wherever one of `regexes` would search one, or None when they cannot be joined.

    pathspec anchors every pattern at the start, and most begin with the same any-depth prefix:
    written once in front of the alternation, the engine tries each directory split once for all
    patterns instead of once per pattern (4x faster than a plain alternation on a Python .gitignore).
    """
    if not regexes or any(r.flags != regexes[0].flags or not isinstance(r.pattern, str) or "(?P=" in r.pattern for r in regexes):
        return None
    patterns = [_NAMED_GROUP.sub("(?:", r.pattern) for r in regexes]  # the group names would clash in one regex
    try:
        if not all(p.startswith("^") for p in patterns):
            return re.compile("|".join(f"(?:{p})" for p in patterns), regexes[0].flags).search
        any_depth = [p[len(_ANY_DEPTH) :] for p in patterns if p.startswith(_ANY_DEPTH)]
        anchored = [p[1:] for p in patterns if not p.startswith(_ANY_DEPTH)]
        branches = [f"(?:.+/)?(?:{'|'.join(f'(?:{p})' for p in any_depth)})"] if any_depth else []
        branches += [f"(?:{p})" for p in anchored]
        return re.compile("|".join(branches), regexes[0].flags).match
    except re.error:
        return None


@dataclass
class _Rules:
    """The ignore files in force for one directory: (base relative to the repo top, matcher), outermost first."""

    levels: list[tuple[str, Matcher]] = field(default_factory=list)
    exclude: Matcher | None = None  # .git/info/exclude, lowest precedence

    def ignored(self, rel_to_top: str, is_dir: bool) -> bool:
        probe_suffix = "/" if is_dir else ""
        for base, matcher in reversed(self.levels):
            sub = rel_to_top[len(base) + 1 :] if base else rel_to_top
            verdict = matcher.check(sub + probe_suffix)
            if verdict is not None:
                return verdict
        if self.exclude is not None:
            verdict = self.exclude.check(rel_to_top + probe_suffix)
            if verdict is not None:
                return verdict
        return False

    def with_file(self, base: str, ignore_file: Path) -> "_Rules":
        matcher = _load_matcher(ignore_file)
        if matcher is None:
            return self
        return _Rules([*self.levels, (base, matcher)], self.exclude)


def gitignore_spec(lines: Iterable[str]) -> pathspec.PathSpec:
    """Compiled gitignore-style patterns; pathspec is imported on first use, not at start-up.

    Patterns whose regex could backtrack badly (many `*`) are matched by `SegmentPattern` instead,
    in time linear in the path depth; pathspec's plain backend calls each pattern's `regex`, so the
    swap keeps its last-match-wins and directory rules.
    """
    import pathspec

    try:
        spec = pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")
    except TypeError:  # pathspec before 1.0 has one backend
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
    for pattern in spec.patterns:
        if pattern.include is not None and isinstance(pattern.pattern, str) and is_complex(pattern.pattern):
            pattern.regex = SegmentPattern(pattern.pattern)
    return spec


def _load_matcher(path: Path) -> Matcher | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return Matcher(lines)


def _repo_top(directory: Path) -> Path | None:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _initial_rules(directory: Path, use_gitignore: bool) -> tuple[_Rules, str, Path | None]:
    """Rules from the repository top down to `directory`, `directory`'s path relative to the top, and
    the top of the repository it is read in (None outside one).

    A directory the enclosing repository ignores (say `.venv/lib/.../pkg`) was still named by the
    user on purpose, so it is then read as a root of its own with only its own ignore files.
    """
    if not use_gitignore:
        return _Rules(), "", None
    top = repo = _repo_top(directory)
    if top is None:  # not a repository: still honour the .gitignore files the directory carries
        top = directory
    rules = _Rules()
    info_exclude = top / ".git" / "info" / "exclude"
    if info_exclude.is_file():
        rules.exclude = _load_matcher(info_exclude)
    prefix = directory.relative_to(top).as_posix()
    prefix = "" if prefix == "." else prefix
    current, base = top, ""
    for part in ["", *Path(prefix).parts]:
        if part:
            current, base = current / part, _join(base, part)
            if rules.ignored(base, True) or is_default_ignored_dir(part, current):
                own = _Rules()
                if (directory / ".gitignore").is_file():
                    own = own.with_file("", directory / ".gitignore")
                return own, "", None
        if (current / ".gitignore").is_file():
            rules = rules.with_file(base, current / ".gitignore")
    return rules, prefix, repo


GIT_TIMEOUT_S = 30


@dataclass(frozen=True)
class _Listed:
    """What `git ls-files --cached --others --exclude-standard` lists under a directory, relative to it."""

    files: frozenset[str]  # a submodule is one of them, though a directory on disk
    dirs: frozenset[str]  # the directories holding them
    repos: frozenset[str]  # untracked repositories inside it, which git lists whole ("nested/")


def _git_listed(top: Path, directory: Path) -> _Listed | None:
    """git's own selection under `directory` of the repository at `top`: every ignore rule as git reads
    them (global excludes, a linked worktree's, files in the index whatever the rules say); None
    without git, or when git refuses the repository (another owner). The repository is the user's,
    but not necessarily trusted: hooks and fsmonitor are switched off."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        listed = subprocess.run(
            # the whole repository, cut to `directory` below: a directory named "data[1]" would be a glob as a pathspec
            [git, "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-C", str(top), "ls-files", "-z",
             "--cached", "--others", "--exclude-standard"],
            capture_output=True, timeout=GIT_TIMEOUT_S, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    under = "" if directory == top else directory.relative_to(top).as_posix() + "/"
    names = {name[len(under):] for name in map(os.fsdecode, listed.split(b"\0")) if name.startswith(under) and name != under}
    files = {n for n in names if n and not n.endswith("/")}
    repos = {n.rstrip("/") for n in names if n.endswith("/")}
    dirs = {str(parent) for f in files | repos for parent in PurePosixPath(f).parents if str(parent) != "."}
    return _Listed(frozenset(files), frozenset(dirs), frozenset(repos))


def _git_ignores(top: Path, directory: Path) -> bool:
    """Whether git ignores `directory` itself (the path on stdin: no pathspec magic in its name)."""
    rel = directory.relative_to(top).as_posix()
    if rel == ".":
        return False
    try:
        return subprocess.run(
            [shutil.which("git") or "git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-C", str(top),
             "check-ignore", "-q", "--stdin", "-z"],
            input=os.fsencode(rel + "/") + b"\0", capture_output=True, timeout=GIT_TIMEOUT_S,
        ).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass
class Selected:
    path: str | Path  # on disk (symlinks to files inside the directory resolved)
    rel: str  # posix path relative to the directory argument


def walk_directory(directory: Path, options: IngestOptions) -> tuple[list[Selected], list[Skip]]:
    """Files to read under `directory`, in sorted order, and the ones refused with a reason.

    Ignored files (gitignore, default ignores, --exclude, not matching --include) are left out
    silently: listing every node_modules file as "skipped" would bury the skips that matter.
    """
    directory = directory.resolve()
    rules, prefix, repo = _initial_rules(directory, options.gitignore)
    git = _git_listed(repo, directory) if repo is not None else None  # else the rules decide, as git would
    if git is not None and not (git.files or git.repos) and _git_ignores(repo, directory):
        git = None  # a directory git ignores (a global exclude too) was named on purpose: the rules read it
    include = Matcher(options.include) if options.include else None
    exclude = Matcher(options.exclude) if options.exclude else None
    selected: list[Selected] = []
    skipped: list[Skip] = []

    def visit(current: Path, rel_dir: str, rules: _Rules) -> None:
        try:  # an unreadable directory (or its .gitignore) is one skip, not the end of the walk
            entries = sorted(os.scandir(current), key=lambda e: e.name)
            if options.gitignore and rel_dir and (current / ".gitignore").is_file():
                rules = rules.with_file(_join(prefix, rel_dir), current / ".gitignore")
        except OSError as exc:
            skipped.append(Skip(display_name(rel_dir or str(directory)), *_os_reason(exc, "directory")))
            return
        for entry in entries:
            rel = _join(rel_dir, entry.name)
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file(follow_symlinks=False)
            except OSError as exc:
                skipped.append(Skip(display_name(rel), *_os_reason(exc, "file")))
                continue
            if is_dir:
                if is_default_ignored_dir(entry.name, entry.path):
                    continue
                if git is not None and (rel in git.repos or rel in git.files):
                    skipped.append(Skip(display_name(rel), f"a git {'repository' if rel in git.repos else 'submodule'} "
                                        "of its own, which git lists as one entry; pass its path to read it", "repository"))
                    continue
                if (rel not in git.dirs) if git is not None else rules.ignored(_join(prefix, rel), True):
                    continue
                if exclude and exclude.match_file(rel + "/"):
                    continue
                visit(Path(entry.path), rel, rules)
                continue
            if entry.name in DEFAULT_IGNORE_FILES:
                continue
            if (rel not in git.files) if git is not None else rules.ignored(_join(prefix, rel), False):
                continue
            if exclude and exclude.match_file(rel):
                continue
            if include and not include.match_file(rel):
                continue
            if not options.include_secrets and is_secret_path(rel):
                skipped.append(Skip(display_name(rel), SECRET_SKIP_REASON, "secret"))
                continue
            path: str | Path = entry.path
            if is_link:
                target = _link_target(Path(entry.path), directory)
                if isinstance(target, str):
                    skipped.append(Skip(display_name(rel), target, "link"))
                    continue
                path = target
            elif not is_file:
                skipped.append(Skip(display_name(rel), "not a regular file (device, socket or pipe), skipped", "not_regular"))
                continue
            try:
                size = os.stat(path).st_size
            except OSError as exc:
                skipped.append(Skip(display_name(rel), *_os_reason(exc, "file")))
                continue
            if size > options.max_file_size:
                skipped.append(Skip(display_name(rel), f"{size / 1e6:.1f} MB is over the {options.max_file_size / 1e6:.1f} MB per-file cap; raise --max-file-size to include it", "too_large"))
                continue
            selected.append(Selected(path, display_name(rel)))

    try:
        visit(directory, "", rules)
    except RecursionError:  # only a pathological tree (hundreds of nested folders) gets here
        skipped.append(Skip(str(directory), "folders nested too deeply to walk; pass a subfolder instead", "limit"))
    return selected, skipped


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


def _link_target(link: Path, root: Path) -> Path | str:
    """The file a symlink points to when it stays inside `root`; otherwise the reason it is refused."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
            return "symbolic link loop; fix or remove the link"
        return "dangling symbolic link (its target does not exist); fix or remove the link"
    if target.is_dir():
        return "symbolic link to a directory, not followed (git does not follow it either)"
    if not target.is_relative_to(root):
        return "symbolic link pointing outside the directory, not followed; pass the target path itself to read it"
    if not target.is_file():
        return "symbolic link to something that is not a regular file, skipped"
    return target


def _os_reason(exc: OSError, what: str) -> tuple[str, str]:
    """(reason, code) for an OS error on a file or directory met during the walk."""
    if isinstance(exc, PermissionError):
        return f"permission denied reading this {what}; check its permissions", "permission"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop; fix or remove the link", "link"
    return f"cannot read this {what} ({exc.strerror or exc}); check the path", "damaged"


def render_tree(label: str, rel_paths: list[str]) -> str:
    """An ASCII-art tree of the selected files, so the model sees the layout before the contents."""
    root: dict = {}
    for rel in sorted(rel_paths):
        node = root
        for part in rel.split("/"):
            node = node.setdefault(part, {})
    lines = [label.rstrip("/") + "/"]

    def emit(node: dict, indent: str) -> None:
        names = sorted(node)  # the order documents follow, so tree and contents line up
        for i, name in enumerate(names):
            last = i == len(names) - 1
            child = node[name]
            lines.append(f"{indent}{'└── ' if last else '├── '}{name}{'/' if child else ''}")
            if child:
                emit(child, indent + ("    " if last else "│   "))

    emit(root, "")
    return "\n".join(lines)
