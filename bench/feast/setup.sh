#!/usr/bin/env bash
# Create bench/feast/.venv, Feast's own virtual environment, and install requirements.txt there.
# Feast pins versions (pandas, pyarrow, fastapi, ...) that conflict with Rivulet's, so it
# never goes into the repo's .venv. Idempotent: a stamp holding the hash of
# requirements.txt skips the install when nothing changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
stamp="$venv/.installed"
python="${PYTHON:-python3}"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "feast venv up to date: $("$venv/bin/python" -c 'import feast; print(feast.__version__)')"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
"$venv/bin/python" -c 'import feast, redis; print("feast", feast.__version__, "redis", redis.__version__)'
echo "$want" > "$stamp"
