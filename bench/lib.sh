# shellcheck shell=bash
# Shared by the bench scripts (sourced; needs ROOT and the script's log and die).

# build_release TAG EXAMPLE: builds the release binary and examples/EXAMPLE.rs, then sets
# FR and FAKE (their paths), REV (the commit, marked when src/ has uncommitted changes) and
# RUSTC. Run it before HOME changes: cargo and rustup live there.
# shellcheck disable=SC2034 # FR, FAKE, REV, RUSTC: for the scripts that source this
build_release() {
    local tag=$1 example=$2 target
    log "$tag: cargo build --release"
    cargo build --release --quiet
    cargo build --release --quiet --example "$example"
    target=${CARGO_TARGET_DIR:-$ROOT/target}
    [[ $target == /* ]] || target=$ROOT/$target
    FR=$target/release/freeroute
    FAKE=$target/release/examples/$example
    [[ -x $FR && -x $FAKE ]] || die "built binaries not found under $target/release"
    REV=$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)
    if [[ $REV != unknown ]] && ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2> /dev/null; then
        REV="$REV (with uncommitted changes to src/)"
    fi
    RUSTC=$(rustc --version 2> /dev/null || echo unknown)
}
