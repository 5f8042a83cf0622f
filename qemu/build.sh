#!/bin/bash
# Build QEMU 10.0.x from Debian's source with the qqq synchronization module
# and install it under build/qemu/ of the work tree.
#
# The source tree and the meson build directory live in a cache outside the
# work tree (QEMU_FMU_CACHE, default ~/.cache/qemu-fmu), keyed by the QEMU
# version and the configure line.  Our module files are copied in only when
# their content changed and the hook patch is re-applied only when it
# changed, so ninja rebuilds incrementally; with nothing changed the whole
# script takes seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${QEMU_FMU_CACHE:-$HOME/.cache/qemu-fmu}
dest=${QEMU_FMU_PREFIX:-$repo/build/qemu}
python=${PYTHON:-$repo/.venv/bin/python}
jobs=${JOBS:-$(nproc)}

QEMU_SUITE=trixie
TARGETS=arm-softmmu,x86_64-softmmu
CONFIGURE_ARGS=(
    --target-list=$TARGETS
    --without-default-features --disable-docs --disable-werror
    --enable-slirp --enable-fdt=system --enable-kvm --enable-tcg
    --disable-install-blobs --disable-tools
)

log() { echo "qemu/build.sh: $*" >&2; }

fetch_source() {
    mkdir -p "$cache/src"
    if ! ls "$cache"/src/qemu_*.dsc >/dev/null 2>&1; then
        log "fetching QEMU source from Debian $QEMU_SUITE"
        (cd "$cache/src" && apt-get source --download-only -qq "qemu/$QEMU_SUITE")
    fi
    dsc=$(ls "$cache"/src/qemu_*.dsc | sort -V | tail -n 1)
    orig=$(ls "$cache"/src/qemu_*.orig.tar.xz | sort -V | tail -n 1)
    # apt checked the .dsc against the signed index; check the tarball
    # against the .dsc so a corrupt cache never reaches the build.
    want=$(awk -v f="$(basename "$orig")" \
        '/^Checksums-Sha256:/ {s=1; next} /^[^ ]/ {s=0} s && $3 == f {print $1}' \
        "$dsc")
    have=$(sha256sum "$orig" | cut -d' ' -f1)
    if [ -z "$want" ] || [ "$want" != "$have" ]; then
        log "checksum mismatch for $orig (want '$want', have $have); delete $cache/src and retry"
        exit 1
    fi
    version=$(basename "$orig" | sed 's/^qemu_\(.*\)\.orig\.tar\.xz$/\1/')
}

prepare_tree() {
    key=$(printf '%s\n' "$version" "${CONFIGURE_ARGS[@]}" | sha256sum | cut -c1-12)
    tree="$cache/qemu-$version-$key"
    if [ ! -f "$tree/.extracted" ]; then
        log "extracting $version"
        rm -rf "$tree" && mkdir -p "$tree"
        tar -xJf "$orig" -C "$tree" --strip-components=1
        # The +ds tarball drops prebuilt firmware; configure still wants
        # these names to exist.  We install no blobs, so empty is enough.
        for f in $(sed -n "s/.*'\(edk2-[^']*\.fd\)'.*/\1/p" "$tree/pc-bios/meson.build"); do
            [ -f "$tree/pc-bios/$f.bz2" ] || bzip2 -c </dev/null >"$tree/pc-bios/$f.bz2"
        done
        touch "$tree/.extracted"
    fi
    # Drop trees of other versions or configure lines.
    for old in "$cache"/qemu-*; do
        [ "$old" = "$tree" ] || [ ! -d "$old" ] || rm -rf "$old"
    done
}

# Copy src to dst only if the content differs, so mtimes stay put; replace
# by rename, so a QEMU running from dst keeps its old file.
sync_file() {
    cmp -s "$1" "$2" 2>/dev/null && return
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.new.$$" && mv -f "$2.new.$$" "$2"
}

apply_module() {
    local applied="$tree/.qqq-hooks.patch"
    if ! cmp -s "$here/hooks.patch" "$applied" 2>/dev/null; then
        if [ -f "$applied" ]; then
            patch -d "$tree" -p1 -R -s <"$applied"
            rm -f "$applied"
        fi
        log "applying hooks.patch"
        [ -s "$here/hooks.patch" ] && patch -d "$tree" -p1 -s --no-backup-if-mismatch <"$here/hooks.patch"
        cp "$here/hooks.patch" "$applied"
    fi
    mkdir -p "$tree/qqq"
    for f in "$here"/qqq/*; do
        sync_file "$f" "$tree/qqq/$(basename "$f")"
    done
    for f in "$tree"/qqq/*; do
        [ -e "$here/qqq/$(basename "$f")" ] || rm -f "$f"
    done
}

build() {
    local bdir="$tree/build"
    # configure finds a compiler for the x86 option ROMs only if one can
    # build 32-bit code (gcc-multilib); run it again once that appears.
    if [ ! -f "$bdir/build.ninja" ] ||
        [ ! -f "$bdir/pc-bios/optionrom/config.mak" ]; then
        log "configuring"
        mkdir -p "$bdir"
        (cd "$bdir" && ../configure --python="$python" "${CONFIGURE_ARGS[@]}" \
            --prefix=/usr/local >"$bdir/configure.log" 2>&1) ||
            { tail -n 30 "$bdir/configure.log" >&2; exit 1; }
    fi
    log "building (ninja -j$jobs)"
    ninja -C "$bdir" -j"$jobs" qemu-system-arm qemu-system-x86_64 \
        >"$bdir/ninja.log" 2>&1 ||
        { grep -B2 -A20 -m3 "error\|FAILED" "$bdir/ninja.log" | head -n 60 >&2; exit 1; }
    # QEMU builds with --disable-werror; our own files get no such slack.
    if grep -A3 "^\.\./qqq/.*warning" "$bdir/ninja.log" >&2; then
        log "warnings in qemu/qqq/: fix them"
        exit 1
    fi
    # The x86 option ROMs (multiboot, linuxboot, ...) have a make build.
    make -s -C "$bdir/pc-bios/optionrom" >"$bdir/optionrom.log" 2>&1 ||
        { tail -n 20 "$bdir/optionrom.log" >&2; exit 1; }
}

# bin/ and share/qemu/ side by side: QEMU finds its data directory relative
# to its executable, so no -L is needed wherever the pair is copied.
install_tree() {
    local bdir="$tree/build" share="$dest/share/qemu"
    mkdir -p "$dest/bin" "$share"
    for t in arm x86_64; do
        sync_file "$bdir/qemu-system-$t" "$dest/bin/qemu-system-$t"
        chmod 755 "$dest/bin/qemu-system-$t"
    done
    for f in "$bdir"/pc-bios/optionrom/*.bin; do
        [ -e "$f" ] && sync_file "$f" "$share/$(basename "$f")"
    done
    for f in /usr/share/seabios/bios-256k.bin /usr/share/seabios/vgabios-*.bin; do
        [ -e "$f" ] && sync_file "$(readlink -f "$f")" "$share/$(basename "$f")"
    done
    echo "$version" >"$dest/VERSION"
    # What was built, for the test suite's stale-build check.
    (cd "$here" && sha256sum hooks.patch qqq/*) >"$dest/SOURCES"
}

fetch_source
prepare_tree
apply_module
build
install_tree
log "QEMU $version ready in $dest"
