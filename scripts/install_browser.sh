#!/usr/bin/env bash
# Make sure Debian's Chromium is there for the browser tests (tests/browser); idempotent.
#
# - Chromium already installed (`chromium` on PATH or /usr/bin/chromium): says so, exits 0.
# - Missing, and we are root with apt-get: `apt-get update` + `apt-get install -y chromium`.
# - Missing and it cannot be installed here (not root, no apt-get): says why; exits 0 on a
#   developer's machine (the browser tests then skip, saying why) and 1 under CI (CI=true), where
#   the browser tests must run.
# A failing apt-get always exits non-zero.
#
# Playwright drives this Chromium through executable_path; never run `playwright install` (browser
# downloads are not possible here). The Python package playwright comes with the test extra.
set -euo pipefail

say() { echo "[install_browser] $*"; }
in_ci() { case "${CI:-}" in ""|0|false|False|FALSE|no) return 1 ;; *) return 0 ;; esac; }
found() {
  local c
  for c in "${SFTVIZ_CHROMIUM:-}" "$(command -v chromium 2>/dev/null || true)" /usr/bin/chromium; do
    if [ -n "$c" ] && [ -x "$c" ] && [ -f "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}
cannot() {
  say "Chromium is missing and cannot be installed here: $*"
  say "install it yourself (Debian/Ubuntu: sudo apt-get install -y chromium), or set SFTVIZ_CHROMIUM to a Chromium binary"
  if in_ci; then say "CI is set: the browser tests need Chromium, failing"; exit 1; fi
  say "the browser tests will be skipped"
  exit 0
}

if path="$(found)"; then
  say "Chromium present: $path ($("$path" --version 2>/dev/null | tail -n 1 || echo 'version unknown'))"
  exit 0
fi
[ "$(id -u)" = "0" ] || cannot "not running as root (apt-get needs root)"
command -v apt-get >/dev/null 2>&1 || cannot "no apt-get on this machine"

say "installing Debian's chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || { say "apt-get update failed"; exit 1; }
apt-get install -y -qq chromium >/dev/null || { say "apt-get install chromium failed"; exit 1; }
if path="$(found)"; then
  say "installed: $path ($("$path" --version 2>/dev/null | tail -n 1 || echo 'version unknown'))"
else
  say "apt-get installed chromium but no chromium binary was found afterwards"
  exit 1
fi
