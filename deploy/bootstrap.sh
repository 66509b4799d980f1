#!/usr/bin/env bash
# Prepare a checkout: .venv with the project (editable) and its dev tools, the Kafka jars, redis-server.
# Idempotent and quick when nothing changed: pip runs only when pyproject.toml is newer than the stamp.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
STAMP=.venv/.klantreis-installed
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1  # the browser tests use Debian's chromium, never a downloaded one

fail() { echo "bootstrap: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 \
    || fail "Python 3.11 or newer is needed: install it with \`apt-get install python3 python3-venv\`"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "Python 3.11 or newer is needed, $PYTHON is $("$PYTHON" -V 2>&1)"

if [ ! -x .venv/bin/python ]; then
    echo "creating .venv …"
    "$PYTHON" -m venv .venv || fail "could not create .venv: install \`python3-venv\`"
fi
.venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail ".venv has $(.venv/bin/python -V 2>&1), 3.11 or newer is needed: remove .venv and run again"

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ requirements.lock -nt "$STAMP" ]; then
    echo "installing the project and its dev tools into .venv …"
    # requirements.lock pins what CI and every checkout get; pyproject.toml says what is allowed.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
    touch "$STAMP"
fi

# The browser tests drive Debian's chromium: installed for `make test` (bootstrap.sh --tests), not for `make run`.
if [ "${1:-}" = "--tests" ] && [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium with apt-get (for the browser tests) …"
    SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
    { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
        || fail "chromium is needed for the browser tests: install it with \`sudo apt-get install chromium\`"
fi

# The web tracker (clients/web): its npm packages as the lockfile pins them, and its build (identity serves
# dist/tracker.js). npm ci runs only when the lockfile changed, the build only when a source did.
WEB=clients/web
command -v npm >/dev/null 2>&1 || fail "Node.js 20 and npm are needed for the web tracker: \`apt-get install nodejs npm\`"
if [ ! -f $WEB/node_modules/.package-lock.json ] || [ $WEB/package-lock.json -nt $WEB/node_modules/.package-lock.json ]; then
    echo "installing the web tracker's npm packages (npm ci) …"
    (cd $WEB && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in $WEB failed"
fi
if [ ! -f $WEB/dist/tracker.js ] || [ -n "$(find $WEB/src $WEB/package-lock.json -newer $WEB/dist/tracker.js)" ]; then
    (cd $WEB && npm run --silent build >/dev/null) || fail "the web tracker does not build: cd $WEB && npm run build"
fi

exec .venv/bin/python -m deploy prepare
