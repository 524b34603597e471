#!/usr/bin/env bash
# Builds the HPC world's parallel walkers that scripts/bench-latency.sh
# compares ferry with: mpiFileUtils' dwalk and IO500's pfind, from their
# public sources (neither is packaged by Debian).
#
# usage: scripts/build-hpc-walkers.sh SRC [PREFIX]
#
# SRC holds a checkout of each repository, by name:
#   SRC/mpifileutils  github.com/hpc/mpifileutils   (measured: 2dbcf1c, v0.12+)
#   SRC/libcircle     github.com/hpc/libcircle      (406a046, v0.3+)
#   SRC/lwgrp         github.com/LLNL/lwgrp         (7d8520d, v1.0.6)
#   SRC/dtcmp         github.com/LLNL/dtcmp         (bbd720f, v1.1.5)
#   SRC/pfind         github.com/VI4IO/pfind        (aaba722)
# PREFIX (default /work/hpc/install) gets bin/dwalk and bin/pfind, with
# their library path built in. Needs root for apt (Open MPI, autotools,
# cmake and mpiFileUtils' libraries).
set -euo pipefail
SRC=$(realpath "${1:?usage: $0 SRC [PREFIX]}")
PREFIX=${2:-/work/hpc/install}
BUILD=${BUILD:-$SRC/../build}
mkdir -p "$PREFIX" "$BUILD"
PREFIX=$(realpath "$PREFIX")
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig

apt-get install -y --no-install-recommends libopenmpi-dev openmpi-bin cmake autoconf automake \
  libtool pkg-config libattr1-dev libarchive-dev libbz2-dev libssl-dev >/dev/null

autotools() {
  local name=$1
  shift
  (cd "$SRC/$name" && autoreconf -fi && ./configure --prefix="$PREFIX" CC=mpicc "$@" && make && make install)
}
autotools libcircle
autotools lwgrp
autotools dtcmp --with-lwgrp="$PREFIX"

cmake -S "$SRC/mpifileutils" -B "$BUILD/mpifileutils" \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_BUILD_TYPE=Release \
  -DWITH_DTCMP_PREFIX="$PREFIX" -DWITH_LibCircle_PREFIX="$PREFIX" \
  -DCMAKE_INSTALL_RPATH="$PREFIX/lib" -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON
cmake --build "$BUILD/mpifileutils"
cmake --install "$BUILD/mpifileutils"

(cd "$SRC/pfind" && ./compile.sh)
install -m 755 "$SRC/pfind/pfind" "$PREFIX/bin/pfind"

echo "built: $PREFIX/bin/dwalk $PREFIX/bin/pfind" >&2
