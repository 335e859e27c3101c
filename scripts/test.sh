#!/usr/bin/env bash
# The whole test suite: installs the system packages the tests need, checks formatting,
# lints and generated code, then runs every test. CI runs exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# The suite builds once, so incremental caches would only cost disk (several GB), and
# line tables keep backtraces readable at a fraction of full debug info.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
export CARGO_PROFILE_TEST_DEBUG=line-tables-only

log() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    local missing=()
    command -v capnp >/dev/null || missing+=(capnproto)
    command -v gtlsclient >/dev/null || missing+=(ngtcp2-client)
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    command -v npm >/dev/null || missing+=(nodejs npm)
    # The browser tests drive Debian's Chromium; test tools never download their own.
    command -v chromium >/dev/null || missing+=(chromium)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
    fi
}

install_packages

# The interop tests run aioquic and pycapnp from a virtual environment, so pip never
# touches the system Python (Debian 12 marks it externally managed).
install_interop_python() {
    local venv=target/interop-venv
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv"
        python3 -m venv "$venv"
    fi
    log "installing the Python interop clients"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
}

install_interop_python

# The web client's build and test tools, pinned by web/package-lock.json. The page itself
# needs none of them at run time: the edge serves the committed files.
log "installing the web client's test tools"
npm --prefix web ci --no-audit --no-fund --loglevel=error

log "cargo fmt --check"
cargo fmt --all --check

log "generated Cap'n Proto code is current"
cargo run --quiet -p xtask -- capnp --check

log "generated web codec is current"
npm --prefix web run --silent codec:check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "web codec tests"
npm --prefix web run --silent test:codec

log "cargo test"
cargo test --workspace --no-fail-fast
