"""Reading a file that may be hostile, in bounded memory and time. Every reader of the tools
(``load_trajectories``, ``validate``, ``stats``, ``report``, ``convert``) gets its bytes here.

- Only regular files are read: a FIFO named ``manifest.jsonl`` would block a reader forever and
  ``/dev/zero`` never ends.
- At most ``limit`` bytes: the size is checked before reading, and reading stops there.
- gzip data (told by its magic bytes, as the viewer tells it) is inflated in 1 MiB chunks and
  stopped as soon as it expands past ``limit``: a 5 MB file of zeros that inflates to 5 GB costs
  ``limit``, not 5 GB. Several gzip members in a row are read as one stream, as ``gunzip`` does.

The limits (bytes, after gunzip):
- ``MAX_STEP_FILE_BYTES`` 512 MiB: a step file or a rollout JSONL file. The viewer reads at most
  that much too (about the longest text a browser holds), so the tools and the viewer refuse the
  same files; its records take a few GB as Python objects.
- ``MAX_MANIFEST_BYTES`` 64 MiB: a manifest line is ~3 KB, so over 20,000 steps.
- ``MAX_SUMMARY_BYTES`` 16 MiB: summary.json holds the run's flags, a few KB.

Example:
    >>> import gzip, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "trajectories_step_1.json.gz"
    >>> _ = path.write_bytes(gzip.compress(bytes(3 << 20)))     # 3 MiB of zeros, 3 KB on disk
    >>> try:
    ...     read_bytes(path, limit=1 << 20)
    ... except UnreadableFile as error:
    ...     print(error.reason)
    expands to more than 1 MiB when decompressed, the most that is read; not read further
"""
from __future__ import annotations

import os
import stat
import zlib
from pathlib import Path

MiB = 1 << 20
MAX_STEP_FILE_BYTES = 512 * MiB
MAX_MANIFEST_BYTES = 64 * MiB
MAX_SUMMARY_BYTES = 16 * MiB
_CHUNK = MiB
_GZIP_MAGIC = b"\x1f\x8b"


class UnreadableFile(Exception):
    """A file that is not read: ``reason`` says why, the message names the file."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def human_bytes(n: int) -> str:
    """``512 MiB``, ``3.5 GiB``: the sizes that messages give."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n / 1024:.1f} KiB"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def open_regular(path, limit: int | None = None):
    """A binary file object of ``path`` when it is a regular file of at most ``limit`` bytes;
    ``UnreadableFile`` otherwise. Opening never blocks (a FIFO is opened non-blocking, then refused)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise UnreadableFile(path, f"cannot read: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(path, f"{_kind(info.st_mode)}, not a regular file: only files are read")
        if limit is not None and info.st_size > limit:
            raise UnreadableFile(path, f"the file holds {human_bytes(info.st_size)}, more than the {human_bytes(limit)} that is read")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, limit: int, gunzip: bool = True) -> bytes | bytearray:
    """The bytes of the regular file ``path`` (inflated when it is gzip data and ``gunzip``), at
    most ``limit`` of them; ``UnreadableFile`` naming the file and the reason otherwise. Inflated
    data comes as a ``bytearray`` (no copy), the file's own bytes as ``bytes``."""
    with open_regular(path, limit) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b""
        try:
            head = f.read(2)
            if gunzip and head == _GZIP_MAGIC:
                f.seek(0)
                return _inflate(f, path, limit)
            if gunzip and Path(path).name.lower().endswith(".gz"):
                raise UnreadableFile(path, "named .gz but is not gzip data")
            return head + f.read(size - len(head))  # what the file held when opened, no more
        except OSError as error:
            raise UnreadableFile(path, f"cannot read: {error.strerror or error}") from None


def _inflate(f, path, limit: int) -> bytearray:
    out = bytearray()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    try:
        while chunk := f.read(_CHUNK):
            while chunk:
                if inflater.eof:  # a member ended: another follows, or the zero padding some writers add
                    if not chunk.strip(b"\0"):
                        break
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += inflater.decompress(chunk, limit + 1 - len(out))  # max_length >= 1 here
                if len(out) > limit:
                    raise UnreadableFile(path, f"expands to more than {human_bytes(limit)} when decompressed, "
                                               "the most that is read; not read further")
                chunk = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    except zlib.error as error:
        raise UnreadableFile(path, f"cannot decompress: the gzip data is broken or truncated ({error})") from None
    if not inflater.eof:
        raise UnreadableFile(path, "cannot decompress: the gzip data is broken or truncated (it ends before its end mark)")
    return out
