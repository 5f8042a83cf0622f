#!/bin/sh
# Install the Debian packages the project needs and register the trixie
# source entry that QEMU 10's source comes from.  Idempotent; a second run
# with everything present only checks.
set -eu

# valgrind: tests/test_memory_safety.py checks the FMUs' memory accesses.
PKGS="build-essential gcc-multilib ninja-build pkg-config flex bison dpkg-dev xz-utils bzip2
libglib2.0-dev libpixman-1-dev libfdt-dev libslirp-dev
seabios gcc-arm-none-eabi binutils-arm-none-eabi util-linux patchelf
tshark valgrind"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done

# The deb-src entry re-uses the URIs of the machine's own Debian source, so
# no mirror name is ever written into the repository.
SRC=/etc/apt/sources.list.d/qemu-fmu-trixie-src.sources
need_update=0
if [ ! -f "$SRC" ]; then
    uris=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [ -z "$uris" ] && [ -f /etc/apt/sources.list ]; then
        uris=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' \
            /etc/apt/sources.list)
    fi
    if [ -z "$uris" ]; then
        echo "setup-host: cannot find the machine's Debian apt source" >&2
        exit 1
    fi
    cat > "$SRC" <<EOT
Types: deb-src
URIs: $uris
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
    need_update=1
fi

if [ -n "$missing" ] || [ "$need_update" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
fi
if [ -n "$missing" ]; then
    echo "setup-host: installing$missing"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
