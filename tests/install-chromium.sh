#!/bin/sh
# Installs the headless browser the HTML-report tests render pages with, through the system's package manager,
# when none is on PATH. Run as root, or as a user with sudo. Nothing to do when chromium is already there.
set -eu
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-chromium: need root or sudo to install chromium" >&2; exit 1; }
    SUDO="sudo"
fi
if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
elif command -v dnf >/dev/null 2>&1; then
    $SUDO dnf install -y -q chromium
elif command -v brew >/dev/null 2>&1; then
    brew install --cask chromium
else
    echo "install-chromium: no apt-get, dnf or brew here; install Chromium and put it on PATH" >&2
    exit 1
fi
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || {
    echo "install-chromium: the package manager finished but no chromium is on PATH" >&2; exit 1; }
