#!/bin/sh
# fetch-debs.sh DIR - download (never install) the Debian packages the
# example Linux guest is made of into DIR: the kernel that
# linux-image-amd64 currently depends on, and busybox-static.
set -eu
if [ $# -ne 1 ]; then
    echo "usage: fetch-debs.sh DIR" >&2
    exit 2
fi
dir=$1
kernel=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$kernel" ]; then
    echo "fetch-debs.sh: apt knows no linux-image-amd64 (run apt-get update)" >&2
    exit 1
fi
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
# As root apt would hand the download to its _apt user, who cannot write here.
if ! apt-get download -q -o APT::Sandbox::User=root "$kernel" busybox-static; then
    echo "fetch-debs.sh: apt-get download failed (stale package lists? run apt-get update)" >&2
    exit 1
fi
