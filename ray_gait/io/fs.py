"""Local paths and object-store URIs (s3://, gs://, ...) through pyarrow's filesystems."""
from __future__ import annotations

import fnmatch
import os
import posixpath
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Iterator

import pyarrow.fs as pafs


@dataclass(frozen=True)
class Location:
    """A filesystem and a path inside it; `uri` is what the user gave (or the local absolute path)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        """True when the location is on the local disk."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> "Location":
        """A location below this one."""
        path = posixpath.join(self.path, *parts)
        uri = posixpath.join(self.uri, *parts) if not self.is_local else path
        return Location(self.fs, path, uri)


def is_uri(value: str) -> bool:
    """True for an object-store URI (`s3://...`, `gs://...`); False for a local path or `file://`."""
    return "://" in value and not value.startswith("file://")


def absolute(value: str, base_dir: str = "") -> str:
    """A path as written in a config, a sweep file or a flag, made absolute once (the one rule).

    URIs and absolute paths stay as they are; a relative path is taken from `base_dir` (the folder of
    the file that names it) when it exists there, else from the current folder.
    """
    if not value or is_uri(value) or os.path.isabs(value):
        return value
    if value.startswith("file://"):
        return os.path.abspath(value[len("file://"):])
    if base_dir:
        candidate = os.path.normpath(os.path.join(base_dir, value))
        if os.path.exists(candidate):
            return candidate
    return os.path.abspath(value)


def resolve(uri_or_path: str) -> Location:
    """Turn a local path or a URI that pyarrow understands into a Location."""
    if is_uri(uri_or_path):
        fs, path = pafs.FileSystem.from_uri(uri_or_path)
        return Location(fs, path.rstrip("/"), uri_or_path.rstrip("/"))
    if uri_or_path.startswith("file://"):
        uri_or_path = uri_or_path[len("file://"):]
    path = os.path.abspath(os.path.expanduser(uri_or_path))
    return Location(pafs.LocalFileSystem(), path, path)


def exists(loc: Location) -> bool:
    """True when a file or folder exists at the location."""
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def is_dir(loc: Location) -> bool:
    """True when the location is a folder."""
    return loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory


MAX_COMPONENT_BYTES = 255


def _component_problem(name: object) -> str | None:
    """Why a string cannot be one path component, or None when it can."""
    if not isinstance(name, str):
        return f"not a string ({type(name).__name__})"
    if name in ("", ".", ".."):
        return "empty, '.' or '..'"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "it contains a NUL or other control character"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_COMPONENT_BYTES:
        return f"{size} bytes long (at most {MAX_COMPONENT_BYTES})"
    return None


def safe_component(name: str, what: str) -> str:
    """Return `name` when it is one harmless path component, else raise ValueError saying why (`what` names it)."""
    problem = _component_problem(name)
    if problem is not None:
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else f"{name[:60]!r}..."
        raise ValueError(f"{what}: {shown} is not a safe path component: {problem}")
    return name


def _walk_local(top: str, follow_links: bool, max_depth: int | None) -> Iterator[str]:
    """Relative paths of the files below a local folder, each real folder entered once (no symlink loops).

    Symlinks to files are always listed; symlinks to folders are entered when `follow_links`, except a
    folder already entered by another path (a link to `..`, a cycle of links).  Folders deeper than
    `max_depth` levels are not entered.
    """
    seen: set[tuple[int, int]] = set()
    pending = [(top, "", 0)]
    while pending:
        folder, rel, level = pending.pop()
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name, reverse=True)
        for entry in entries:
            child = f"{rel}{entry.name}"
            if entry.is_file():
                yield child
            elif entry.is_dir(follow_symlinks=follow_links) and (max_depth is None or level + 1 < max_depth):
                pending.append((entry.path, f"{child}/", level + 1))


def _walk_remote(root: Location) -> Iterator[str]:
    """Relative paths of the objects below a folder of an object store (no symlinks there)."""
    infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True, allow_not_found=False))
    prefix = root.path.rstrip("/") + "/"
    for info in infos:
        if info.type == pafs.FileType.File and info.path.startswith(prefix):
            yield info.path[len(prefix):]


def list_files(root: Location, depth: int | None = None, pattern: str = "*") -> list[str]:
    """Sorted paths relative to `root` of the files `depth` levels down whose name matches `pattern`.

    Local folders are walked through symlinks (OpenGait's paired trees are links), each real folder once.
    """
    walk = _walk_local(root.path, True, depth) if root.is_local else _walk_remote(root)
    found = []
    for rel in walk:
        parts = rel.split("/")
        if depth is not None and len(parts) != depth:
            continue
        if fnmatch.fnmatchcase(parts[-1], pattern):
            found.append(rel)
    return sorted(found)


# No input file of a gait data set comes near this (a 1,000-frame 128 x 88 silhouette pickle is 11 MiB);
# a bigger one is refused before it is read into memory.
MAX_READ_BYTES = 512 * 2**20


class FileTooLargeError(OSError):
    """A file is larger than a reader accepts."""


_READ_CHUNK = 8 * 2**20


def read_bytes(loc: Location, limit: int = MAX_READ_BYTES) -> bytes:
    """Read a whole file of at most `limit` bytes; FileTooLargeError (an OSError) for a bigger one."""
    too_large = FileTooLargeError(f"{loc.uri}: larger than {limit} bytes, the most an input file may have")
    if loc.is_local and os.stat(loc.path).st_size > limit:
        raise too_large
    chunks, total = [], 0
    with loc.fs.open_input_stream(loc.path) as stream:
        while chunk := stream.read(min(_READ_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise too_large
    return b"".join(chunks)


def copy_tree(src: Location, dst: Location) -> int:
    """Copy every file below `src` to the same place below `dst` (replacing what is there); returns the count."""
    files = list_files(src)
    for rel in files:
        write_bytes_atomic(dst.join(rel), read_bytes(src.join(rel), limit=2**40))
    return len(files)


def makedirs(loc: Location) -> None:
    """Create a folder and its parents (a no-op on object stores without folders)."""
    loc.fs.create_dir(loc.path, recursive=True)


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Write a file so that it appears under its final name only when complete.

    Local disks: a temporary name in the same folder, then an atomic rename.  Object stores:
    an upload becomes visible only when it completes, so the object is written directly.
    """
    parent = posixpath.dirname(loc.path)
    if loc.is_local:
        os.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(loc.path)}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, loc.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    with loc.fs.open_output_stream(loc.path) as stream:
        stream.write(data)


def remove_temporaries(root: Location) -> int:
    """Delete leftovers of interrupted atomic writes (`.NAME.tmp-XXXXXXXX`) below a folder."""
    if not exists(root):
        return 0
    removed = 0
    walk = _walk_local(root.path, False, None) if root.is_local else _walk_remote(root)
    for rel in list(walk):
        name = posixpath.basename(rel)
        if name.startswith(".") and ".tmp-" in name:
            root.fs.delete_file(root.join(rel).path)
            removed += 1
    return removed
