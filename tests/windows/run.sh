#!/bin/sh
# The Windows build of the `shoulder` client (x86_64-pc-windows-gnu, linked
# with MinGW-w64), run under Wine against the real agent: installs what it
# needs (idempotent), builds shoulder.exe, then runs tests/tests/client_windows_wine.rs.
#
#   tests/windows/run.sh            # from the repository root
#
# Needs root (or sudo) for apt-get when a package is missing.
set -eu

cd "$(dirname "$0")/../.."

TARGET=x86_64-pc-windows-gnu
PACKAGES="gcc-mingw-w64-x86-64 wine64"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    # One word per package: the list is split on purpose.
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
# Without optimisation or debug info: the workspace's dev profile optimises
# dependencies (opt-level 2) for the host tests' sake, which made this cross
# build take 7.3 min instead of 2.5 here; the test below needs only a
# working client, and its run time under Wine is the same (about 15 s).
cargo build --locked -q -p shoulder --bin shoulder --target "$TARGET" \
    --config 'profile.dev.debug=0' \
    --config 'profile.dev.package."*".opt-level=0' \
    --config 'profile.dev.package.shoulder-capture.opt-level=0' \
    --config 'profile.dev.package.shoulder-display.opt-level=0' \
    --config 'profile.dev.package.shoulder-proto.opt-level=0'
exe_dir="$target_dir/$TARGET/debug"
x86_64-w64-mingw32-gcc -shared -O2 -o "$exe_dir/bcryptprimitives.dll" \
    tests/windows/bcryptprimitives.c tests/windows/bcryptprimitives.def -ladvapi32

# Debian installs wine64 outside PATH.
wine=$(command -v wine64 || echo /usr/lib/wine/wine64)
export SHOULDER_WINDOWS_EXE="$exe_dir/shoulder.exe"
export SHOULDER_WINE="$wine"
export WINEPREFIX="$target_dir/wineprefix"
export WINEDEBUG=-all
# --workspace: the features the workspace's test build was made with, so
# after `cargo test --workspace` (scripts/test) nothing is compiled again.
cargo test --locked -q --workspace --test client_windows_wine -- --ignored --test-threads=1
