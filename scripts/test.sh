#!/usr/bin/env bash
# The whole test suite: installs the system packages the tests need, checks formatting,
# lints and generated code, then runs every test. CI runs exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    local missing=()
    command -v capnp >/dev/null || missing+=(capnproto)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
    fi
}

install_packages

log "cargo fmt --check"
cargo fmt --all --check

log "generated Cap'n Proto code is current"
cargo run --quiet -p xtask -- capnp --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --workspace
