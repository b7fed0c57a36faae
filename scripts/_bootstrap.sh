# Sourced by scripts/demo and scripts/test: a project-local virtualenv with the package installed,
# with the extras named in $EXTRAS (a variable: the caller's own arguments are not ours).
# Needs only python3 (3.10+) and, on Debian/Ubuntu without ensurepip, the python3-venv package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "error: Python 3.10 or newer is required ($("$PY" --version 2>&1) found)" >&2; exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    echo "python3 -m venv failed; installing python3-venv with apt-get" >&2
    as_root apt-get install -y python3-venv >/dev/null || {
      echo "error: install the python3-venv package (apt-get install python3-venv) and retry" >&2; exit 1; }
    "$PY" -m venv "$VENV"
  fi
fi
extras="${EXTRAS:-}"
spec="$ROOT"; [ -n "$extras" ] && spec="$ROOT[$extras]"
stamp="$VENV/.installed-${extras:-core}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$spec"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
