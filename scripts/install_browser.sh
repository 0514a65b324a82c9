#!/usr/bin/env bash
# Installs Debian's headless Chromium and its driver for the real-browser test, when possible.
# The browser test skips with a clear reason if this could not be done (not root, no apt).
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: not root or no apt-get; the browser test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
  || echo "install_browser: apt-get install chromium chromium-driver failed; the browser test will be skipped" >&2
exit 0
