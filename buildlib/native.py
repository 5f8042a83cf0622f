"""The FMU's native parts: the loader shim and self-contained ELF files.

An FMU must run on a host that has glibc and a libpython and nothing else
of ours.  The loader shim is C linked against glibc alone (no C++ runtime
to bundle); every other ELF file the FMU ships (QEMU) gets its non-glibc
shared libraries copied beside it and an ``$ORIGIN``-relative RUNPATH, so
the dynamic linker finds them inside the FMU wherever it was unpacked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOADER_SOURCES = REPO / "fmu_src" / "loader"

# The libraries of glibc itself: every Linux host has them, matched to its
# own dynamic linker, so they are never bundled.
GLIBC = {
    "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libpthread.so.0",
    "libdl.so.2", "librt.so.1", "libresolv.so.2", "libutil.so.1",
    "libanl.so.1", "libmvec.so.1", "libBrokenLocale.so.1",
    "libc_malloc_debug.so.0", "libthread_db.so.1", "linux-vdso.so.1",
}
_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)\s*$")


class NativeBuildError(Exception):
    """A tool or library the build needs is missing."""


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise NativeBuildError(f"{argv[0]} not found; run `make setup`") from None
    except subprocess.CalledProcessError as e:
        raise NativeBuildError(f"{' '.join(argv)} failed: {e.stderr.strip()}") from None
    return done.stdout


def build_loader(out: Path) -> Path:
    """Compile the loader shim (fmu_src/loader) as the shared library ``out``.

    C with no static constructors or destructors and no Python headers (the
    Python API is found at run time), so it needs only glibc.
    """
    sources = sorted(str(p) for p in LOADER_SOURCES.glob("*.c"))
    _run(["gcc", "-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden",
          "-Wall", "-Wextra", "-Werror", "-Wl,-z,defs", "-Wl,--as-needed",
          "-o", str(out), *sources, "-lpthread", "-ldl"])
    extra = [lib for lib in needed(out) if lib not in GLIBC]
    if extra:
        raise NativeBuildError(f"the loader shim needs {extra}; it may need "
                               "only glibc")
    return out


def shared_libraries(elf: Path) -> dict[str, Path]:
    """Soname -> path of every non-glibc library ``elf`` loads on this host."""
    found: dict[str, Path] = {}
    for line in _run(["ldd", str(elf)]).splitlines():
        if "not found" in line:
            raise NativeBuildError(f"{elf}: {line.strip()}")
        match = _LDD_LINE.match(line)
        if match and match.group(1) not in GLIBC:
            found[match.group(1)] = Path(match.group(2))
    return found


def needed(elf: Path) -> list[str]:
    """The DT_NEEDED entries of ``elf``."""
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                      _run(["readelf", "-d", str(elf)]))


def runpath(elf: Path) -> list[str]:
    """The DT_RUNPATH (or DT_RPATH) directories of ``elf``, unexpanded."""
    match = re.search(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]",
                      _run(["readelf", "-d", str(elf)]))
    return match.group(1).split(":") if match else []


def make_self_contained(elfs: list[Path], libdir: Path) -> list[Path]:
    """Copy what ``elfs`` need into ``libdir`` and point their RUNPATH there.

    Returns the libraries copied.  Each copy gets RUNPATH ``$ORIGIN`` so its
    own dependencies resolve beside it.
    """
    libdir.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {}
    for elf in elfs:
        wanted.update(shared_libraries(elf))
    copied = []
    for soname, source in sorted(wanted.items()):
        target = libdir / soname
        shutil.copyfile(source.resolve(), target)
        target.chmod(0o644)
        _run(["strip", "--strip-unneeded", str(target)])
        _run(["patchelf", "--set-rpath", "$ORIGIN", str(target)])
        copied.append(target)
    for elf in elfs:
        relative = os.path.relpath(libdir, elf.parent)
        origin = "$ORIGIN" if relative == "." else f"$ORIGIN/{relative}"
        _run(["patchelf", "--set-rpath", origin, str(elf)])
    return copied

