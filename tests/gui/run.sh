#!/bin/sh
# Desktop end-to-end test of the `shoulder` GUI under Xvfb: installs what the
# test needs (idempotent), then runs it. Screenshots land in artifacts/gui/.
#
#   tests/gui/run.sh            # from the repository root
#
# Needs root (or sudo) for apt-get when a package is missing.
set -eu

cd "$(dirname "$0")/../.."

PACKAGES="xvfb xdotool imagemagick libx11-6 libx11-xcb1 libxcursor1 libxi6 \
libxkbcommon-x11-0 libxkbcommon0 libgl1 libglx-mesa0 libgl1-mesa-dri"

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

# Mesa's software renderer: no GPU under Xvfb.
export LIBGL_ALWAYS_SOFTWARE=1
unset WAYLAND_DISPLAY
mkdir -p artifacts/gui
# The test runs the client binary, which cargo builds for tests of its own
# package only (this test lives in shoulder-tests; testkit/src/bins.rs):
# the workspace's test build makes both. --workspace keeps the features the
# same as that build's, so after `cargo test --workspace` (scripts/test)
# nothing is compiled again; a narrower selection would rebuild tokio and
# everything above it with other features.
cargo test --locked -q --workspace --no-run
cargo test --locked --workspace --test client_gui_xvfb -- --ignored --nocapture "$@"
echo "screenshots: $(pwd)/artifacts/gui/"
