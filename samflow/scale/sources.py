"""Where a distributed run's inputs live: local paths, or URIs any pyarrow filesystem reads (s3://, gs://, file://...).

Listing happens on the driver (so resume can filter before any work); reading happens on the workers, which is why
only strings travel in the dataset. Local specs follow `samflow run`'s rules exactly (`runner.expand_paths`).
"""

from __future__ import annotations

import fnmatch
import glob
import logging
from pathlib import Path, PurePosixPath
from typing import Any

from samflow.errors import InputError
from samflow.scale.records import is_uri
from samflow.scale.runner import expand_paths

log = logging.getLogger(__name__)

def list_files(spec: str | Path, suffixes: set[str] | None = None) -> list[str]:
    """The files a spec names, sorted: a file, a folder's files (filtered by suffix, hidden ones left out) or a glob.
    Local paths come back as they were written (relative stays relative); URIs as full URIs."""
    if not is_uri(spec):
        return [str(path) for path in expand_paths(spec, suffixes)]
    from pyarrow import fs as pafs

    filesystem, root = _filesystem(str(spec))
    scheme = str(spec).split("://", 1)[0]
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.File:
        return [str(spec)]
    if info.type == pafs.FileType.Directory:
        entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=False))
        names = [e.path for e in entries if e.type == pafs.FileType.File and not e.base_name.startswith(".")]
        names = [n for n in names if suffixes is None or PurePosixPath(n).suffix.lower() in suffixes]
        return sorted(_join(scheme, spec, n) for n in names)
    if glob.has_magic(root):
        base = _glob_base(root)
        entries = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        names = [e.path for e in entries if e.type == pafs.FileType.File and glob_match(e.path, root)]
        return sorted(_join(scheme, spec, n) for n in names)
    raise InputError(f"no such file or folder: {spec}")


def read_bytes(path: str) -> bytes:
    """A file's bytes, from the local disk or through pyarrow for a URI; InputError when it cannot be read."""
    try:
        if not is_uri(path):
            return Path(path).read_bytes()
        filesystem, inner = _filesystem(path)
        with filesystem.open_input_stream(inner) as stream:
            return stream.read()
    except (OSError, ValueError) as exc:  # pyarrow raises OSError subclasses (and ArrowInvalid, a ValueError)
        raise InputError(f"cannot read {path}: {exc}") from exc


def local_copy(path: str, directory: Path) -> Path:
    """A local path holding the file: the path itself when local, else a copy of the URI's bytes in `directory`
    (nodes read files by path)."""
    if not is_uri(path):
        return Path(path)
    target = directory / PurePosixPath(path.split("://", 1)[1]).name
    target.write_bytes(read_bytes(path))
    return target


def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        # from_uri refuses glob characters in some schemes; retry with the pattern's fixed prefix.
        if glob.has_magic(uri):
            scheme, rest = uri.split("://", 1)
            filesystem, base = pafs.FileSystem.from_uri(f"{scheme}://{_glob_base(rest)}")
            return filesystem, base.rstrip("/") + "/" + rest[len(_glob_base(rest)):].lstrip("/")
        raise InputError(f"cannot open {uri}: {exc} (is the filesystem's package installed, e.g. s3fs/gcsfs "
                         "for pyarrow?)") from exc


def glob_match(path: str, pattern: str) -> bool:
    """`glob.glob(pattern, recursive=True)`'s rules for one path: `*`, `?` and `[...]` stay within a path
    component, `**` spans any number of them, and wildcards do not match hidden names."""
    return _match(PurePosixPath(path).parts, PurePosixPath(pattern).parts)


def _match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(parts[i:], rest) for i in range(len(parts) + 1)
                   if not any(p.startswith(".") for p in parts[:i]))
    if not parts:
        return False
    name = parts[0]
    if glob.has_magic(head) and name.startswith(".") and not head.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, head) and _match(parts[1:], rest)


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard component."""
    parts = PurePosixPath(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return str(PurePosixPath(*fixed)) if fixed else "/"


def _join(scheme: str, spec: str | Path, inner: str) -> str:
    """A listed pyarrow path back as a URI of the spec's scheme (`file:///x`, `s3://bucket/x`)."""
    if scheme == "file":
        return f"file://{inner}" if inner.startswith("/") else f"file:///{inner}"
    return f"{scheme}://{inner.lstrip('/')}"
