#!/usr/bin/env bash
# Install a headless-capable Chromium for the browser tests of the HTML report
# (tests/predict/test_report_browser.py drives it with the python `playwright` package of the
# `integrations` extra; `make test` calls this script). Playwright's own browser download
# (`playwright install`) is not used: the tests run the system's Chromium, offline.
#
# Usage: scripts/install_chromium.sh
#
# Idempotent: exits at once when a Chromium is found ($LIGHTNING_CAM_CHROMIUM, chromium,
# chromium-browser on PATH). Otherwise installs Debian/Ubuntu's `chromium` package with apt-get
# (as root, or through sudo); on other systems it says what to install and fails.
set -euo pipefail

find_chromium() {
    local name
    if [[ -n "${LIGHTNING_CAM_CHROMIUM:-}" && -x "${LIGHTNING_CAM_CHROMIUM}" ]]; then
        echo "$LIGHTNING_CAM_CHROMIUM"
        return 0
    fi
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if found="$(find_chromium)"; then
    echo "install_chromium: $("$found" --version 2>/dev/null || echo chromium) at $found"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no Chromium found and no apt-get: install Chromium (or Chrome) and" \
         "set LIGHTNING_CAM_CHROMIUM=/path/to/it" >&2
    exit 2
fi
SUDO=()
if [[ "$(id -u)" != "0" ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install_chromium: run as root or install sudo (apt-get install chromium)" >&2
        exit 2
    fi
    SUDO=(sudo)
fi
echo "install_chromium: apt-get install chromium"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
# Debian names the package `chromium`; Ubuntu's `chromium-browser` is a snap wrapper.
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium \
    || "${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium-browser
found="$(find_chromium)" || {
    echo "install_chromium: installed, but no chromium on PATH" >&2
    exit 1
}
echo "install_chromium: $("$found" --version 2>/dev/null || echo chromium) at $found"
