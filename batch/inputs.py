"""Which photos ``age-batch`` scores, and how a worker reads one: local paths and any URI pyarrow's file systems
open (``s3://``, ``gs://``, ``hdfs://``, ``file://``).

``INPUT`` is one of:

- a folder: every file under it, recursively, whose suffix is a photo type (:data:`PHOTO_SUFFIXES`; hidden files
  skipped), so sidecar files (``.xml``, ``.json``, ``Thumbs.db``) cost nothing;
- a glob (``*``, ``?``, ``[...]``; ``**/`` spans folders): every file it matches, whatever its suffix (hidden
  files only when the pattern's last part starts with a dot);
- a text file of paths: one path or URI a line (blank lines and ``#`` comments skipped), relative paths taken from
  the list's own folder; every listed path is scored, so a missing or non-photo entry gets its error row.

Photos are named in the output by their absolute local path or their full URI: that name is the key a rerun uses
to skip what is already written, so the same command must name the same photos the same way.
"""

from __future__ import annotations

import os
import posixpath
import re
from urllib.parse import urlsplit

import pyarrow.fs as pafs

__all__ = ["PHOTO_SUFFIXES", "Reader", "list_photos", "open_location"]

PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}
)
"""Suffixes (any case) a folder listing takes: the types ``core.image`` decodes plus the photo types it refuses
(GIF, HEIC, AVIF), which get an ``unsupported_image`` row rather than vanish without a word."""

_WILDCARD = re.compile(r"[*?\[]")
_GLOB_TOKEN = re.compile(r"(\*\*/|\*\*|\*|\?|\[!?[^\]]+\])")


def open_location(location: str) -> tuple[pafs.FileSystem, str, str]:
    """``(file system, path in it, prefix)`` for a local path or a URI; ``prefix + path`` names a file there.

    A local path is made absolute (prefix ``""``); for a URI the prefix is what precedes the file system's path
    (``"s3://"`` for ``s3://bucket/key``, whose path is ``bucket/key``; ``"hdfs://nn:8020"`` for HDFS).
    """
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(location), ""
    filesystem, path = pafs.FileSystem.from_uri(location)
    trimmed = location.rstrip("/")
    tail = path.rstrip("/")
    prefix = (
        trimmed[: len(trimmed) - len(tail)] if tail and trimmed.endswith(tail) else location.split("://")[0] + "://"
    )
    return filesystem, path, prefix


def list_photos(location: str) -> list[str]:
    """The photos ``location`` (a folder, a glob or a path list; see the module docstring) names, sorted, each once.

    Raises ``FileNotFoundError`` when ``location`` names nothing.
    """
    filesystem, path, prefix = open_location(location)
    if _WILDCARD.search(path):
        names = _glob(filesystem, path)
    else:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            names = [
                entry.path
                for entry in filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
                if entry.type == pafs.FileType.File and _is_photo_name(entry.base_name)
            ]
        elif info.type == pafs.FileType.File:
            return sorted(set(_read_list(filesystem, path, prefix)))
        else:
            raise FileNotFoundError(f"{location}: no such file or folder")
    return sorted({prefix + name for name in names})


def _is_photo_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in PHOTO_SUFFIXES


def _glob(filesystem: pafs.FileSystem, pattern: str) -> list[str]:
    """Files matching ``pattern`` (a file-system path with wildcards), listed under its wildcard-free leading folder."""
    parts = pattern.split("/")
    fixed = next(index for index, part in enumerate(parts) if _WILDCARD.search(part))
    base = "/".join(parts[:fixed]) or "/"
    regex = re.compile(_glob_regex(pattern))
    if filesystem.get_file_info(base).type != pafs.FileType.Directory:
        return []
    listing = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    # As in a shell, a wildcard does not match a hidden file's leading dot; a pattern that spells it out does.
    hidden = parts[-1].startswith(".")
    return [
        entry.path
        for entry in listing
        if entry.type == pafs.FileType.File
        and regex.fullmatch(entry.path)
        and (hidden or not entry.base_name.startswith("."))
    ]


def _glob_regex(pattern: str) -> str:
    """A shell glob as a regular expression: ``*`` and ``?`` stay within one folder, ``**/`` spans any number."""
    pieces = []
    for token in _GLOB_TOKEN.split(pattern):
        if token == "**/":
            pieces.append("(?:[^/]*/)*")
        elif token == "**":
            pieces.append(".*")
        elif token == "*":
            pieces.append("[^/]*")
        elif token == "?":
            pieces.append("[^/]")
        elif token.startswith("[") and token.endswith("]") and len(token) > 2:
            negated = token.startswith("[!")
            body = token[2:-1] if negated else token[1:-1]
            pieces.append(("[^" if negated else "[") + body.replace("\\", "\\\\") + "]")
        else:
            pieces.append(re.escape(token))
    return "".join(pieces)


def _read_list(filesystem: pafs.FileSystem, path: str, prefix: str) -> list[str]:
    """The entries of a path list, each as a full name: URIs as written, relative paths from the list's folder."""
    with filesystem.open_input_stream(path) as stream:
        lines = stream.read().decode("utf-8").splitlines()
    folder = posixpath.dirname(path) if prefix else os.path.dirname(path)
    names = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if "://" in entry:
            names.append(entry)
        elif prefix:
            names.append(prefix + posixpath.normpath(posixpath.join(folder, entry)))
        else:
            names.append(os.path.normpath(os.path.join(folder, os.path.expanduser(entry))))
    return names


class Reader:
    """Reads photos by the names :func:`list_photos` gives, opening each URI's file system once (an S3 client costs
    a request or two to set up, far more than a small photo)."""

    def __init__(self) -> None:
        self._systems: dict[str, tuple[pafs.FileSystem, str]] = {}

    def read(self, name: str) -> bytes:
        """The bytes of the photo ``name``; ``OSError`` (``FileNotFoundError`` among others) when it cannot be read."""
        if "://" not in name:
            with open(name, "rb") as handle:
                return handle.read()
        parts = urlsplit(name)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._systems:
            filesystem, _, prefix = open_location(name)
            self._systems[key] = (filesystem, prefix)
        filesystem, prefix = self._systems[key]
        with filesystem.open_input_stream(name[len(prefix) :]) as stream:
            return stream.read()
