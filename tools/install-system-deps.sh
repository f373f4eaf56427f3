#!/usr/bin/env bash
# The system packages the test suite needs besides Python, installed when missing:
#   chromium    Debian's /usr/bin/chromium, driven by the browser tests (tests/e2e/test_console_browser.py)
#   prometheus  for promtool, which checks deploy/observability (tests/unit/test_deploy.py)
# `make test`, `make test-unit`, `make test-e2e` and `make coverage` call it (so .ci/run does
# too); arguments narrow it to the packages a tier needs. A machine that has them pays one
# check each and nothing else. It installs with apt-get as root (Debian, as in CI); anywhere
# else it stops with one line saying what to run.
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(chromium prometheus)

missing=()
for package in "${wanted[@]}"; do
  case "$package" in
    chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
    prometheus) command -v promtool >/dev/null 2>&1 || missing+=(prometheus) ;;
    *) echo "tools/install-system-deps.sh: unknown package '$package' (known: chromium prometheus)" >&2; exit 2 ;;
  esac
done
[ ${#missing[@]} -gt 0 ] || exit 0

command="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "The tests need ${missing[*]} (/usr/bin/chromium, promtool on PATH) and this machine has no apt-get: install Debian's packages by hand, or run the tests in Debian." >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need ${missing[*]}; run as root: sudo sh -c '$command'" >&2
  exit 1
fi
echo "Installing ${missing[*]} for the tests (once per machine): $command"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
