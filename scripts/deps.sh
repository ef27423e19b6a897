#!/bin/sh
# Installs, from Debian packages, what building and testing crewd needs and this machine lacks.
# The Makefile calls it before every build; when everything is present it only checks and
# returns, so it costs a few pkg-config calls. Needs root (or sudo) only when it installs.
set -eu

# pkg-config module -> Debian package. Libraries are checked through pkg-config so that a
# library installed some other way (a developer's own build) is respected.
missing=""
need_pc() {
    if ! pkg-config --exists "$1" 2>/dev/null; then missing="$missing $2"; fi
}
need_cmd() {
    if ! command -v "$1" >/dev/null 2>&1; then missing="$missing $2"; fi
}

need_cmd pkg-config pkg-config
need_cmd cmake cmake
need_cmd cc gcc
need_cmd make make
need_pc libevent libevent-dev
need_pc libevent_openssl libevent-dev
need_pc jansson libjansson-dev
need_pc sqlite3 libsqlite3-dev
need_pc openssl libssl-dev
need_pc libcurl libcurl4-openssl-dev
need_pc libpq libpq-dev
need_pc cmocka libcmocka-dev
# Tests: a throwaway PostgreSQL cluster (initdb/pg_ctl) and the sqlite3 shell for inspection.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing="$missing postgresql"; fi
need_cmd sqlite3 sqlite3
need_cmd curl curl
# Integration tests are Python 3 standard-library programs.
need_cmd python3 python3
# Fuzzing (libFuzzer) and LeakSanitizer builds use clang and its runtime.
need_cmd clang clang
if ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 \
   && [ "$(uname -m)" = x86_64 ]; then
    missing="$missing libclang-rt-14-dev"
fi

[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: need root to install:$missing" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
