#!/usr/bin/env python3
"""Write the uncompressed kernel inside an x86 bzImage (vmlinuz).

The bzImage's payload is an xz stream holding the kernel ELF (with its
relocations appended); QEMU boots that ELF by PVH from -kernel, skipping
the seconds of virtual time the in-guest decompressor would take.

Usage: extract_vmlinux.py VMLINUZ OUT
"""

from __future__ import annotations

import lzma
import sys
from pathlib import Path

XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"


def extract(bzimage: bytes) -> bytes:
    """The first xz stream in ``bzimage`` that decompresses to an ELF."""
    start = bzimage.find(XZ_MAGIC)
    while start >= 0:
        try:
            # The stream is followed by the rest of the bzImage: decode
            # one stream and ignore what follows it.
            data = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(bzimage[start:])
        except lzma.LZMAError:
            data = b""
        if data.startswith(ELF_MAGIC):
            return data
        start = bzimage.find(XZ_MAGIC, start + 1)
    raise ValueError("no xz-compressed ELF kernel found (not an xz bzImage?)")


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        kernel = extract(src.read_bytes())
    except (OSError, ValueError) as e:
        print(f"extract_vmlinux.py: {src}: {e}", file=sys.stderr)
        return 1
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(kernel)
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
