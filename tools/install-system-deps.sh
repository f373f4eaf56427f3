#!/usr/bin/env bash
# The system packages the test suite needs besides Python, installed when missing:
#   chromium    Debian's /usr/bin/chromium, driven by the browser tests (tests/e2e/test_console_browser.py)
#   prometheus  for promtool, which checks deploy/observability (tests/unit/test_deploy.py)
#   postgresql  the PostgreSQL server the suite's PostgreSQL variants run on: none is installed
#               when TOUCHLINE_TEST_POSTGRES_URL names yours, or when one answers on
#               127.0.0.1:5432 (the tests' default URL, postgresql://postgres@127.0.0.1:5432/test);
#               else Debian's postgresql, and a cluster of its own named `touchline` on that
#               port, trusting local connections, with a database `test` (started again
#               when the machine restarted)
#   axe-core    the accessibility engine the browser tests load into each page
#               (tests/e2e/test_console_a11y_browser.py): the version pinned in
#               tools/a11y/package.json and its lock (with the tarball's sha512), installed
#               by `npm ci` into var/a11y/node_modules; npm comes from Debian's npm when missing
# `make test`, `make test-unit`, `make test-integration`, `make test-e2e` and `make coverage` call it (so .ci/run does
# too); arguments narrow it to the packages a tier needs. A machine that has them pays one
# check each and nothing else. It installs with apt-get as root (Debian, as in CI); anywhere
# else it stops with one line saying what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(chromium prometheus postgresql axe-core)

# PostgreSQL for the tests: which server they use, and a cluster of our own when none answers.
pg_wanted() {
  [ -z "${TOUCHLINE_TEST_POSTGRES_URL:-}" ] || return 1  # yours: the tests say so if it does not answer
  case ",${TOUCHLINE_TEST_DATABASES:-sqlite,postgresql}," in *,postgresql,*) return 0 ;; *) return 1 ;; esac
}
pg_answers() { timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432' 2>/dev/null; }
pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }
start_postgres() {
  local version
  version="$(pg_version)"
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}' | grep -qx "$version/touchline"; then
    if pg_lsclusters -h 2>/dev/null | awk '$3 == 5432' | grep -q .; then
      echo "PostgreSQL $version is installed, but nothing answers on 127.0.0.1:5432 and a cluster of its own is configured on that port:" >&2
      echo "start it (pg_ctlcluster $(pg_lsclusters -h | awk '$3 == 5432 {print $1" "$2; exit}') start) and let postgres connect from 127.0.0.1 without a password," >&2
      echo "or set TOUCHLINE_TEST_POSTGRES_URL to a server where the tests may create databases." >&2
      exit 1
    fi
    echo "Creating the PostgreSQL $version cluster 'touchline' for the tests on 127.0.0.1:5432 (trust, local connections only)"
    pg_createcluster --port 5432 "$version" touchline -- --auth=trust >/dev/null
  fi
  pg_ctlcluster "$version" touchline start 2>/dev/null || pg_ctlcluster "$version" touchline status >/dev/null
  for _ in $(seq 1 30); do pg_answers && break; sleep 1; done
  # (from /: postgres may not enter the checkout's directory)
  (cd / && runuser -u postgres -- psql -h 127.0.0.1 -p 5432 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'") | grep -q 1 ||
    (cd / && runuser -u postgres -- createdb -h 127.0.0.1 -p 5432 -U postgres test)
}

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
postgres=0
for package in "${wanted[@]}"; do
  case "$package" in
    chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
    prometheus) command -v promtool >/dev/null 2>&1 || missing+=(prometheus) ;;
    postgresql)
      if pg_wanted && ! pg_answers; then
        postgres=1
        [ -n "$(pg_version)" ] || missing+=(postgresql)
      fi ;;
    axe-core)
      axe=1
      [ "$(axe_installed)" = "$(axe_pinned)" ] || command -v npm >/dev/null 2>&1 || missing+=(npm) ;;
    *) echo "tools/install-system-deps.sh: unknown package '$package' (known: chromium prometheus postgresql axe-core)" >&2; exit 2 ;;
  esac
done
need_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  echo "The tests need $1; run as root: $2" >&2
  exit 1
}
if [ ${#missing[@]} -eq 0 ]; then
  if [ $postgres -eq 1 ]; then
    need_root "a PostgreSQL on 127.0.0.1:5432 (none answers)" "sudo tools/install-system-deps.sh postgresql, or set TOUCHLINE_TEST_POSTGRES_URL to yours"
    start_postgres
  fi
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
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  # Our own cluster, not Debian's default `main` (peer and password auth, also on 5432).
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/touchline-tests.conf
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
[ $postgres -eq 0 ] || start_postgres
[ $axe -eq 0 ] || install_axe
