#!/usr/bin/env python3
"""Write an uncompressed newc cpio archive (a Linux initramfs), reproducibly.

The archive's bytes depend only on the listed entries and the contents of
the files they name: owner root, one fixed date, inode numbers in entry
order.  Uncompressed, because under icount every instruction the guest
spends inflating its initramfs is simulation time.

Usage: mkinitramfs.py OUT ENTRY...
  dir PATH MODE            a directory
  file PATH MODE SOURCE    a regular file with SOURCE's contents
  slink PATH TARGET        a symbolic link
  nod PATH MODE c|b MAJ MIN  a device node
(the same entries as the kernel's gen_init_cpio, one per argument, fields
separated by spaces; MODE in octal).
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

MTIME = 1704067200  # 2024-01-01T00:00:00Z, the FMU's default guest date


class EntryError(ValueError):
    """A malformed entry argument."""


def _header(ino: int, mode: int, size: int, name: bytes,
            rdev: tuple[int, int]) -> bytes:
    fields = (ino, mode, 0, 0, 1, MTIME, size, 0, 0, rdev[0], rdev[1],
              len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _member(ino: int, entry: str) -> bytes:
    kind, *args = entry.split()
    rdev = (0, 0)
    try:
        if kind == "dir" and len(args) == 2:
            path, mode, data = args[0], stat.S_IFDIR | int(args[1], 8), b""
        elif kind == "file" and len(args) == 3:
            path, mode = args[0], stat.S_IFREG | int(args[1], 8)
            data = Path(args[2]).read_bytes()
        elif kind == "slink" and len(args) == 2:
            path, mode, data = args[0], stat.S_IFLNK | 0o777, args[1].encode()
        elif kind == "nod" and len(args) == 5 and args[2] in ("c", "b"):
            path = args[0]
            mode = int(args[1], 8) | (stat.S_IFCHR if args[2] == "c" else stat.S_IFBLK)
            data, rdev = b"", (int(args[3]), int(args[4]))
        else:
            raise EntryError(f"bad entry '{entry}'")
    except ValueError as e:  # int() of a bad number
        raise EntryError(f"bad entry '{entry}': {e}") from None
    name = path.lstrip("/").encode()
    return _pad(_header(ino, mode, len(data), name, rdev)) + _pad(data)


def archive(entries: list[str]) -> bytes:
    body = b"".join(_member(ino, e) for ino, e in enumerate(entries, start=1))
    trailer = _pad(_header(0, 0, 0, b"TRAILER!!!", (0, 0)))
    out = body + trailer
    return out + b"\0" * (-len(out) % 512)


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    try:
        data = archive(sys.argv[2:])
    except (OSError, EntryError) as e:
        print(f"mkinitramfs.py: {e}", file=sys.stderr)
        return 1
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
