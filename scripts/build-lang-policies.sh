#!/usr/bin/env bash
# The Python and JavaScript policies: installs their pinned toolchains into target/toolchains
# and builds them to components from the one wit/policy.wit.
#
#   scripts/build-lang-policies.sh install        the toolchains only (scripts/test.sh runs this)
#   scripts/build-lang-policies.sh build [DIR]    the components into DIR (default target/guests/lang);
#                                                 tests/fixtures/build.rs runs this when the
#                                                 toolchains are installed
#   scripts/build-lang-policies.sh                both
#
# Toolchains (pinned; see tools/lang-toolchains/):
#   Python:     componentize-py 0.25.1 from PyPI, in a venv at target/toolchains/py
#   JavaScript: @bytecodealliance/componentize-js 0.23.0 (and jco 1.35.0) from npm, `npm ci` from
#               tools/lang-toolchains/package-lock.json into target/toolchains/js
# Both are told to leave out every WASI import (componentize-py `--stub-wasi`, componentize-js
# `--disable` of all its WASI features): the components import only mqtt-policy:policy/host.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
pins=tools/lang-toolchains
tools=target/toolchains
marks=$tools/installed

install() {
  mkdir -p "$marks"
  local want_py want_js
  want_py=$(cat "$pins/requirements.txt")
  if [ "$(cat "$marks/py" 2>/dev/null)" != "$want_py" ]; then
    echo "==> installing $want_py from PyPI into $tools/py"
    rm -f "$marks/py"
    python3 -m venv "$tools/py"
    "$tools/py/bin/pip" install --quiet --disable-pip-version-check -r "$pins/requirements.txt"
    echo "$want_py" >"$marks/py"
  fi
  want_js=$(sha256sum "$pins/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$marks/js" 2>/dev/null)" != "$want_js" ]; then
    echo "==> installing componentize-js and jco from npm (tools/lang-toolchains/package-lock.json) into $tools/js"
    rm -f "$marks/js"
    mkdir -p "$tools/js"
    cp "$pins/package.json" "$pins/package-lock.json" "$tools/js/"
    (cd "$tools/js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$want_js" >"$marks/js"
  fi
}

# componentize-py: every WASI import replaced by a trapping stub (its PRNG seed is then fixed at
# build time: a policy must not use `random`, nor the clock: use host.now_millis).
py() { # OUT APP PYTHONPATH...
  local out=$1 app=$2
  shift 2
  local paths=()
  for p in "$@"; do paths+=(-p "$p"); done
  "$tools/py/bin/componentize-py" -q -d wit -w policy componentize --stub-wasi "${paths[@]}" "$app" -o "$out"
}

# componentize-js (StarlingMonkey): with all of its WASI features disabled.
js() { # OUT SOURCE
  "$tools/js/node_modules/.bin/componentize-js" "$2" --wit wit --world-name policy \
    --disable stdio random clocks http fetch-event --out "$1" >/dev/null
}

build() {
  local dir=${1:-target/guests/lang}
  [ -f "$marks/py" ] && [ -f "$marks/js" ] || {
    echo "the Python and JavaScript toolchains are not installed: run scripts/build-lang-policies.sh install" >&2
    exit 1
  }
  mkdir -p "$dir"
  # componentize-py writes its bytecode caches next to the sources: keep them out of the tree.
  export PYTHONDONTWRITEBYTECODE=1 PYTHONPYCACHEPREFIX="$root/$tools/pycache"
  py "$dir/hello_py.wasm" hello_policy policies/hello-py
  py "$dir/throwing_py.wasm" throwing_policy policies/hello-py tests/fixtures/lang-guests/throwing-py
  js "$dir/hello_js.wasm" policies/hello-js/hello.js
  js "$dir/throwing_js.wasm" tests/fixtures/lang-guests/throwing-js/throwing.js
  # What the host must link: only the policy world's own interfaces, no WASI (SECURITY.md).
  for wasm in "$dir"/{hello,throwing}_{py,js}.wasm; do
    local imports
    imports=$("$tools/js/node_modules/.bin/jco" wit "$wasm" | sed -n 's/^ *import \([^;]*\);.*/\1/p')
    if grep -v '^mqtt-policy:policy/' <<<"$imports" | grep -q .; then
      echo "$wasm imports more than mqtt-policy:policy: $(tr '\n' ' ' <<<"$imports")" >&2
      exit 1
    fi
  done
}

case "${1:-all}" in
  install) install ;;
  build) build "${2:-}" ;;
  all) install && build ;;
  *) echo "usage: $0 [install | build [DIR]]" >&2; exit 2 ;;
esac
