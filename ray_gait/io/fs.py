"""Local paths and object-store URIs (s3://, gs://, ...) through pyarrow's filesystems."""
from __future__ import annotations

import fnmatch
import os
import posixpath
import uuid
from dataclasses import dataclass

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


def resolve(uri_or_path: str) -> Location:
    """Turn a local path or a URI that pyarrow understands into a Location."""
    if "://" in uri_or_path and not uri_or_path.startswith("file://"):
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


def list_files(root: Location, depth: int | None = None, pattern: str = "*") -> list[str]:
    """Sorted paths relative to `root` of the files `depth` levels down whose name matches `pattern`."""
    infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True, allow_not_found=False))
    prefix = root.path.rstrip("/") + "/"
    found = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.startswith(prefix):
            continue
        rel = info.path[len(prefix):]
        parts = rel.split("/")
        if depth is not None and len(parts) != depth:
            continue
        if fnmatch.fnmatchcase(parts[-1], pattern):
            found.append(rel)
    return sorted(found)


def read_bytes(loc: Location) -> bytes:
    """Read a whole file."""
    with loc.fs.open_input_stream(loc.path) as stream:
        return stream.read()


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
    for info in root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True)):
        name = posixpath.basename(info.path)
        if info.type == pafs.FileType.File and name.startswith(".") and ".tmp-" in name:
            root.fs.delete_file(info.path)
            removed += 1
    return removed
