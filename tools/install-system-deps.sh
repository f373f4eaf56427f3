#!/usr/bin/env bash
# The system packages the test suite needs besides Python, installed when missing:
#   chromium    Debian's /usr/bin/chromium, driven by the browser tests (tests/e2e/test_console_browser.py)
#   prometheus  for promtool, which checks deploy/observability (tests/unit/test_deploy.py)
#   axe-core    the accessibility engine the browser tests load into each page
#               (tests/e2e/test_console_a11y_browser.py): the version pinned in
#               tools/a11y/package.json and its lock (with the tarball's sha512), installed
#               by `npm ci` into var/a11y/node_modules; npm comes from Debian's npm when missing
# `make test`, `make test-unit`, `make test-e2e` and `make coverage` call it (so .ci/run does
# too); arguments narrow it to the packages a tier needs. A machine that has them pays one
# check each and nothing else. It installs with apt-get as root (Debian, as in CI); anywhere
# else it stops with one line saying what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(chromium prometheus axe-core)

# The pinned axe-core, read from tools/a11y/package.json; installed when var/a11y holds another (or none).
axe_pinned() { sed -n 's/.*"axe-core": *"\([^"]*\)".*/\1/p' tools/a11y/package.json; }
axe_installed() { sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' var/a11y/node_modules/axe-core/package.json 2>/dev/null | head -1; }
install_axe() {
  [ "$(axe_installed)" = "$(axe_pinned)" ] && return 0
  echo "Installing axe-core $(axe_pinned) for the browser tests into var/a11y (npm ci, tools/a11y/package-lock.json)"
  mkdir -p var/a11y
  cp tools/a11y/package.json tools/a11y/package-lock.json var/a11y/
  npm ci --prefix var/a11y --ignore-scripts --no-audit --no-fund --loglevel=error
  [ "$(axe_installed)" = "$(axe_pinned)" ] || { echo "axe-core $(axe_pinned) did not install into var/a11y" >&2; exit 1; }
}

missing=()
axe=0
for package in "${wanted[@]}"; do
  case "$package" in
    chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
    prometheus) command -v promtool >/dev/null 2>&1 || missing+=(prometheus) ;;
    axe-core)
      axe=1
      [ "$(axe_installed)" = "$(axe_pinned)" ] || command -v npm >/dev/null 2>&1 || missing+=(npm) ;;
    *) echo "tools/install-system-deps.sh: unknown package '$package' (known: chromium prometheus axe-core)" >&2; exit 2 ;;
  esac
done
if [ ${#missing[@]} -eq 0 ]; then
  [ $axe -eq 0 ] || install_axe
  exit 0
fi

command="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "The tests need ${missing[*]} (/usr/bin/chromium, promtool and npm on PATH) and this machine has no apt-get: install Debian's packages by hand, or run the tests in Debian." >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need ${missing[*]}; run as root: sudo sh -c '$command'" >&2
  exit 1
fi
echo "Installing ${missing[*]} for the tests (once per machine): $command"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
[ $axe -eq 0 ] || install_axe
