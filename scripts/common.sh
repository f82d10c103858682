# Sourced by the project's scripts: where things are, and how to run a command as the
# unprivileged builder user (initdb and postgres refuse to run as root; CI runs as root).
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_USER=${PG_TENANCY_USER:-pgtenancy}
# The PostgreSQL major to build and test against: PG_MAJOR (default 15), or a PG_CONFIG's.
if [ -n "${PG_CONFIG:-}" ] && [ -z "${PG_MAJOR:-}" ]; then
    PG_MAJOR=$("$PG_CONFIG" --version 2>/dev/null | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
fi
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PG_BIN=$("$PG_CONFIG" --bindir 2>/dev/null || echo "/usr/lib/postgresql/$PG_MAJOR/bin")
export PG_MAJOR PG_CONFIG
# Each major has its own throw-away cluster (a data directory belongs to one major).
if [ "$PG_MAJOR" != 15 ] && [ -z "${PG_TENANCY_CLUSTER:-}" ]; then
    export PG_TENANCY_CLUSTER="$REPO/target/cluster-$PG_MAJOR"
fi
# A relative cluster path is the caller's, made absolute: the server resolves its socket and lock
# file from its data directory, not from where the script was started.
case "${PG_TENANCY_CLUSTER:-}" in
    ""|/*) ;;
    *) export PG_TENANCY_CLUSTER="$PWD/$PG_TENANCY_CLUSTER" ;;
esac
TARGET="$REPO/target"

# Runs "$@" as the builder user with the toolchain on PATH; runs it directly when not root.
as_builder() {
    if [ "$(id -u)" -ne 0 ]; then
        "$@"
        return
    fi
    local home sysroot
    home=$(getent passwd "$RUN_USER" | cut -d: -f6)
    sysroot=$(rustc --print sysroot)
    runuser -u "$RUN_USER" -- env -i HOME="$home" USER="$RUN_USER" LANG=C.UTF-8 \
        PATH="$sysroot/bin:/usr/local/bin:$PG_BIN:/usr/bin:/bin" \
        CARGO_HOME="$home/.cargo" CARGO_TARGET_DIR="$TARGET" PG_CONFIG="$PG_CONFIG" \
        ${CI:+CI="$CI"} ${RUST_LOG:+RUST_LOG="$RUST_LOG"} "$@"
}

# Runs the setup script when root (idempotent, seconds when done) and gives the builder the
# repository's target directory.
prepare() {
    [ -z "${PG_TENANCY_PREPARED:-}" ] || return 0
    export PG_TENANCY_PREPARED=1
    if [ "$(id -u)" -eq 0 ]; then
        "$REPO/scripts/setup"
        # The builder must reach and read the checkout and the shared test data beside it.
        local d=$REPO
        while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
        chmod -R o+rX "$REPO/src" "$REPO/sql" "$REPO/tests" "$REPO/pg_regress" "$REPO/scripts" "$REPO/sync"
        chmod o+r "$REPO"/*.toml "$REPO"/Cargo.lock "$REPO"/*.control
        mkdir -p "$TARGET"
        chown -R "$RUN_USER" "$TARGET"
    fi
}
