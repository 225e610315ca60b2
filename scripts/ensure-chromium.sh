#!/usr/bin/env bash
# Installs Debian's chromium for the browser test of the report pages, when it is missing and this user may
# install packages (root with apt-get, as in CI). Otherwise says so; the browser test then skips.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the report browser test..."
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    && exit 0
fi
echo "note: chromium is not installed and cannot be installed here; the report browser test will skip."
