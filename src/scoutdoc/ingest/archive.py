"""Reading .zip and .tar(.gz/.bz2/.xz) members in memory, refusing what a hostile archive could abuse.

Nothing is extracted to disk, so a traversal name cannot write anywhere; such names are still
refused because no honest archive needs them. Links and device/FIFO members are refused, and caps
on member count, total uncompressed bytes, per-member size and compression ratio stop zip bombs
before they are inflated. Tar's PAX and GNU long-name headers are read whole by tarfile before any
member is seen, so their declared size is checked first (`_bounded_tarinfo`). Member names are made
displayable (`display_name`) as they leave this module.
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
from .names import display_name
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
    return display_name("/".join(parts))


def _skip(name: str, reason: str, code: str) -> Skip:
    return Skip(display_name(name), reason, code)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def iter_members(
    data: bytes, suffix: str, limits: ArchiveLimits, max_member: int, budget: Budget, passwords: tuple[str, ...] = ()
) -> Iterator[Member | Skip]:
    """Members as bytes, or Skips naming the member (relative name) and why it was refused.

    `passwords` are tried in order on encrypted zip members (ZipCrypto, what zipfile can decrypt).
    """
    if suffix == ".zip" or data.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip by its bytes, whatever its name
        entries = _zip_members(data, limits, max_member, budget, passwords)
    else:
        entries = _tar_members(data, limits, max_member, budget)
    empty = True
    for entry in entries:
        empty = False
        yield entry
    if empty:
        raise Unreadable("the archive holds no files", "empty")


def _size_problem(size: int, max_member: int, budget: Budget) -> tuple[str, str] | None:
    """(reason, code) when a member's declared size is over the per-file cap or the archive's remaining budget."""
    if size > max_member:
        return f"{_mb(size)} is over the {_mb(max_member)} per-file cap; raise --max-file-size to include it", "too_large"
    if size > budget.remaining:
        return "archive's total uncompressed size is over the cap; extract it and pass the folder", "limit"
    return None


def _zip_members(data: bytes, limits: ArchiveLimits, max_member: int, budget: Budget, passwords: tuple[str, ...]) -> Iterator[Member | Skip]:
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
                yield _skip(info.filename, problem, "unsafe")
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                yield _skip(info.filename, "symbolic link inside the archive, refused", "unsafe")
                continue
            if info.is_dir():
                continue
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # type bits are only set by Unix zippers
                yield _skip(info.filename, "special file (device, FIFO or socket) inside the archive, refused", "unsafe")
                continue
            if info.file_size > limits.ratio_floor and info.file_size / max(info.compress_size, 1) > limits.max_ratio:
                yield _skip(info.filename, f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 looks like a zip bomb; refused", "unsafe")
                continue
            too_big = _size_problem(info.file_size, max_member, budget)
            if too_big:
                yield _skip(info.filename, *too_big)
                continue
            try:
                content = _read_zip_member(archive, info, min(max_member, budget.remaining) + 1, passwords)  # never trust the declared size
            except Unreadable as exc:
                yield _skip(info.filename, str(exc), exc.code)
                continue
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
                yield _skip(info.filename, f"member cannot be read ({exc}); the archive may be damaged", "damaged")
                continue
            if len(content) > min(max_member, budget.remaining):
                yield _skip(info.filename, "member is larger than its header says; refused", "unsafe")
                continue
            budget.remaining -= len(content)
            yield Member(_clean(info.filename), content)


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, passwords: tuple[str, ...]) -> bytes:
    """Up to `limit` bytes of a member; an encrypted one is tried with each password in turn."""
    if not info.flag_bits & 0x1:
        with archive.open(info) as handle:
            return handle.read(limit)
    if not passwords:
        raise Unreadable("encrypted zip member; pass its password with --password", "encrypted")
    garbled: Exception | None = None
    for password in passwords:
        try:
            with archive.open(info, pwd=password.encode("utf-8")) as handle:
                return handle.read(limit)
        except RuntimeError:  # zipfile's "Bad password"
            continue
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            # ZipCrypto checks one byte: 1 wrong password in 256 passes it and decrypts noise; the next may be right
            garbled = exc
            continue
        except NotImplementedError as exc:  # AES (WinZip) encryption: zipfile only decrypts ZipCrypto
            raise Unreadable("encrypted with AES, which Python's zipfile cannot open; extract it with 7-Zip and pass the file", "encrypted") from exc
    if garbled is not None:
        raise garbled  # none opened it cleanly: a damaged member (or that 1-in-256 wrong password), as the caller says
    raise Unreadable("encrypted zip member, and no --password given opened it; check --password", "encrypted")


def _bounded_tarinfo(max_header: int, problems: list[str]) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses PAX and GNU long-name/long-link headers over `max_header` bytes.

    tarfile reads such a header's whole payload into memory while looking for the next member, so
    a 1 GiB long name in a small .tar.gz costs 1 GiB of RAM before any member cap applies. Raising
    a header error there stops the archive; `problems` carries the reason out, since tarfile
    rewrites the exception into a generic ReadError.
    """

    class BoundedTarInfo(tarfile.TarInfo):
        def _check(self) -> None:
            if self.size > max_header:
                problems.append(f"an extended tar header of {_mb(self.size)} is over the {_mb(max_header)} cap, which no honest archive needs; refused")
                raise tarfile.SubsequentHeaderError("extended header too large")

        def _proc_gnulong(self, tarfile):  # noqa: ANN001 - tarfile's private hook
            self._check()
            return super()._proc_gnulong(tarfile)

        def _proc_pax(self, tarfile):  # noqa: ANN001
            self._check()
            return super()._proc_pax(tarfile)

    return BoundedTarInfo


def _tar_members(data: bytes, limits: ArchiveLimits, max_member: int, budget: Budget) -> Iterator[Member | Skip]:
    problems: list[str] = []
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*", tarinfo=_bounded_tarinfo(limits.max_header_bytes, problems))
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
        if problems:
            raise Unreadable(problems[-1], "unsafe") from exc
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
                    yield _skip(info.name, f"archive expands over {inflated / max(len(data), 1):.0f}:1, which looks like a compression bomb; stopped reading it", "unsafe")
                    return
                problem = member_name_problem(info.name)
                if problem:
                    yield _skip(info.name, problem, "unsafe")
                    continue
                if info.isdir():
                    continue
                if info.issym() or info.islnk():
                    yield _skip(info.name, "link inside the archive, refused", "unsafe")
                    continue
                if not info.isreg():
                    yield _skip(info.name, "special file (device, FIFO or socket) inside the archive, refused", "unsafe")
                    continue
                too_big = _size_problem(info.size, max_member, budget)
                if too_big:
                    yield _skip(info.name, *too_big)
                    continue
                handle = archive.extractfile(info)
                content = handle.read(info.size) if handle else b""
                budget.remaining -= len(content)
                yield Member(_clean(info.name), content)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            if problems:
                yield Skip("", f"{problems[-1]} after {count} members; the rest was not read", "unsafe")
            else:
                yield Skip("", f"archive is damaged after {count} members ({exc}); the rest was not read", "damaged")
