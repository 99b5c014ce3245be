"""Ray's storage on a local (or mounted) folder, where every file is written whole or not at all.

Ray copies its experiment state (the trials, the searcher) to the storage folder over the previous
copy, in place: a disk that fills during the copy leaves a truncated file that no resume can read.
Here each file is written beside its final name and renamed over it once complete, so a failed
write leaves the previous version, and `tvae-sweep resume` finds the sweep as it last was.
"""
from __future__ import annotations

import os
import uuid
from contextlib import suppress

from fsspec.implementations.local import LocalFileSystem
from pyarrow.fs import FSSpecHandler, PyFileSystem

PARTIAL = ".partial-"  # in the name of a file being written


class _Renamed:
    """A file opened for writing at `path`: written to a partial file beside it, renamed over `path`
    when closed after writes that all succeeded, removed otherwise."""

    def __init__(self, path: str, mode: str):
        self.path = path
        self.partial = os.path.join(os.path.dirname(path), f"{PARTIAL}{uuid.uuid4().hex}-{os.path.basename(path)}")
        self.file = open(self.partial, mode)  # closed by close()

    @property
    def closed(self) -> bool:
        return self.file.closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.file.tell()

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except BaseException:
            self.abandon()
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except BaseException:
            self.abandon()
            raise

    def close(self) -> None:
        if self.file.closed:
            return
        try:
            self.file.close()  # flushes: fails on a full disk
        except BaseException:
            self.abandon()
            raise
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        """Removes the partial file: `path` keeps its previous version, if any."""
        with suppress(OSError):
            self.file.close()
        with suppress(FileNotFoundError):
            os.remove(self.partial)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None:
            self.close()
        else:
            self.abandon()


class WholeFiles(LocalFileSystem):
    """The local filesystem, where a file opened for writing appears only once complete."""

    def _open(self, path, mode="rb", block_size=None, **kwargs):
        if "w" not in mode:
            return super()._open(path, mode, block_size, **kwargs)
        path = self._strip_protocol(path)
        self.makedirs(self._parent(path), exist_ok=True)
        return _Renamed(path, mode)


def whole_files() -> PyFileSystem:
    """Ray's storage_filesystem for a storage path on this machine's (or a mounted) filesystem."""
    return PyFileSystem(FSSpecHandler(WholeFiles()))


def on_this_machine(filesystem) -> bool:
    """Whether a checkpoint's filesystem is this machine's (or a mounted) folder: pyarrow's local
    one, or the whole-files one above; anything else is an object store."""
    if filesystem is None or getattr(filesystem, "type_name", None) == "local":
        return True
    handler = getattr(filesystem, "handler", None)
    return isinstance(getattr(handler, "fs", None), WholeFiles)
