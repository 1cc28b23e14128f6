"""Reading .zip and .tar(.gz/.bz2/.xz) members in memory, refusing what a hostile archive could abuse.

Nothing is extracted to disk, so a traversal name cannot write anywhere; such names are still
refused because no honest archive needs them. Links and device/FIFO members are refused, and caps
on member count, total uncompressed bytes, per-member size and compression ratio stop zip bombs
before they are inflated.
"""

import io
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .document import Skip, Unreadable
from .options import ArchiveLimits


@dataclass
class Budget:
    """Uncompressed bytes still allowed for one top-level archive and everything nested in it."""

    remaining: int


@dataclass(frozen=True)
class Member:
    name: str  # normalised, relative, "/"-separated
    data: bytes


_DRIVE = re.compile(r"^[A-Za-z]:")


def member_name_problem(name: str) -> str | None:
    """Why a member name is refused, or None when it is a plain relative path."""
    if "\x00" in name:
        return "member name contains a NUL byte, refused"
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        return "absolute path inside the archive, refused"
    if ".." in unified.split("/"):
        return "path escapes the archive ('..'), refused"
    return None


def _clean(name: str) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def iter_members(data: bytes, suffix: str, limits: ArchiveLimits, max_member: int, budget: Budget) -> Iterator[Member | Skip]:
    """Members as bytes, or Skips naming the member (relative name) and why it was refused."""
    if suffix == ".zip":
        yield from _zip_members(data, limits, max_member, budget)
    else:
        yield from _tar_members(data, limits, max_member, budget)


def _size_problem(size: int, max_member: int, budget: Budget) -> tuple[str, str] | None:
    """(reason, code) when a member's declared size is over the per-file cap or the archive's remaining budget."""
    if size > max_member:
        return f"{_mb(size)} is over the {_mb(max_member)} per-file cap; raise --max-file-size to include it", "too_large"
    if size > budget.remaining:
        return "archive's total uncompressed size is over the cap; extract it and pass the folder", "limit"
    return None


def _zip_members(data: bytes, limits: ArchiveLimits, max_member: int, budget: Budget) -> Iterator[Member | Skip]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise Unreadable(f"not a readable zip archive ({exc}); the file may be truncated or damaged", "damaged") from exc
    if len(infos) > limits.max_members:
        raise Unreadable(f"archive has {len(infos)} members, over the cap of {limits.max_members}; extract it and pass the folder", "limit")
    declared = sum(i.file_size for i in infos)
    if declared > limits.ratio_floor and declared / max(len(data), 1) > limits.max_ratio:
        raise Unreadable(f"expands {declared / max(len(data), 1):.0f}:1 ({_mb(declared)}), which looks like a zip bomb; refused", "unsafe")
    with archive:
        for info in infos:
            problem = member_name_problem(info.filename)
            if problem:
                yield Skip(info.filename, problem, "unsafe")
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                yield Skip(info.filename, "symbolic link inside the archive, refused", "unsafe")
                continue
            if info.is_dir():
                continue
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # type bits are only set by Unix zippers
                yield Skip(info.filename, "special file (device, FIFO or socket) inside the archive, refused", "unsafe")
                continue
            if info.flag_bits & 0x1:
                yield Skip(info.filename, "encrypted zip member; extract it with its password and pass the file", "encrypted")
                continue
            if info.file_size > limits.ratio_floor and info.file_size / max(info.compress_size, 1) > limits.max_ratio:
                yield Skip(info.filename, f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 looks like a zip bomb; refused", "unsafe")
                continue
            too_big = _size_problem(info.file_size, max_member, budget)
            if too_big:
                yield Skip(info.filename, *too_big)
                continue
            try:
                with archive.open(info) as handle:
                    content = handle.read(min(max_member, budget.remaining) + 1)  # never trust the declared size
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError, OSError) as exc:
                yield Skip(info.filename, f"member cannot be read ({exc}); the archive may be damaged", "damaged")
                continue
            if len(content) > min(max_member, budget.remaining):
                yield Skip(info.filename, "member is larger than its header says; refused", "unsafe")
                continue
            budget.remaining -= len(content)
            yield Member(_clean(info.filename), content)


def _tar_members(data: bytes, limits: ArchiveLimits, max_member: int, budget: Budget) -> Iterator[Member | Skip]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise Unreadable(f"not a readable tar archive ({exc}); the file may be truncated or damaged", "damaged") from exc
    inflated = 0
    count = 0
    with archive:
        try:
            for info in archive:
                count += 1
                if count > limits.max_members:
                    yield Skip("", f"archive has more than {limits.max_members} members; stopped there, extract it and pass the folder", "limit")
                    return
                inflated += info.size
                if inflated > limits.ratio_floor and inflated / max(len(data), 1) > limits.max_ratio:
                    # Reading on would inflate the rest of the stream; stop the whole archive.
                    yield Skip(info.name, f"archive expands over {inflated / max(len(data), 1):.0f}:1, which looks like a compression bomb; stopped reading it", "unsafe")
                    return
                problem = member_name_problem(info.name)
                if problem:
                    yield Skip(info.name, problem, "unsafe")
                    continue
                if info.isdir():
                    continue
                if info.issym() or info.islnk():
                    yield Skip(info.name, "link inside the archive, refused", "unsafe")
                    continue
                if not info.isreg():
                    yield Skip(info.name, "special file (device, FIFO or socket) inside the archive, refused", "unsafe")
                    continue
                too_big = _size_problem(info.size, max_member, budget)
                if too_big:
                    yield Skip(info.name, *too_big)
                    continue
                handle = archive.extractfile(info)
                content = handle.read(info.size) if handle else b""
                budget.remaining -= len(content)
                yield Member(_clean(info.name), content)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            yield Skip("", f"archive is damaged after {count} members ({exc}); the rest was not read", "damaged")
