#!/usr/bin/env bash
# The device kit: everything a lent GPU machine needs offline, prepared here, run there in one call.
#
#   scripts/device_check.sh prepare   # here, with PyPI: .kit/ (wheels + host tarball), checks, the call
#   scripts/device_check.sh run       # on the lent machine: install, unpack, benchmarks.gpu_check -> $OUT
#   scripts/device_check.sh rehearse  # here: `run` with .venv's Python, the machine's packages simulated,
#                                     # on this CPU (gpu_check --cpu --simulate-device); no pip install
#
# prepare: downloads the cp312 manylinux x86-64 wheels of what ComfyUI 0.33 needs beyond what the
# machine has (benchmarks/device_bundle.py lists them and why; --no-deps, pinned) into .kit/wheels,
# copies the host's release tarball into .kit/ (checked against SHA256SUMS), checks every wheel
# installs on CPython 3.12 x86-64 and has its requirements on the machine or in the bundle, imports
# them under a local Python 3.12 when there is one, checks that the tree plus .kit fits the 64 MiB a
# call carries (with a margin), and prints the call to make. .kit/ is git-ignored.
# run: pip-installs the wheels into /tmp/kit-site, unpacks the host to /tmp/kit-host, puts the av
# stand-in (scripts/device/stubs) on PYTHONPATH, and runs benchmarks.gpu_check within the budget
# (KIT_BUDGET_S, default 440 s for the whole script); gpu_check builds the fixtures there and starts
# main.py itself (a one-page --front-end-root: the frontend package does not travel). It writes
# $OUT/gpu_check.json (rewritten after each section), $OUT/comfyui-server.log and $OUT/device_check.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
KIT=.kit
HOST_VERSION=0.33.0
TARBALL="ComfyUI-$HOST_VERSION.tar.xz"
RUN_TIMEOUT_S=480 # the device call's timeout_s: the issue's 8 minutes

hosts_dirs() { # where the release tarballs are (as scripts/setup_env.sh looks for them)
  [ -n "${PERFUSION_HOSTS_DIR:-}" ] && echo "$PERFUSION_HOSTS_DIR"
  echo "$root/../shared/hosts"
  local origin
  origin=$(git -C "$root" config --get remote.origin.url 2>/dev/null || true)
  if [ -n "$origin" ] && [ -d "$origin" ]; then echo "$origin/../shared/hosts"; fi
}

python312() { # a local CPython 3.12 to import the wheels with, if there is one
  local candidate
  for candidate in "${PY312:-}" python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

prepare() {
  local PY=${PYTHON:-.venv/bin/python}
  [ -x "$PY" ] || PY=python3
  local platforms=() p
  for p in $("$PY" -c 'from benchmarks.device_bundle import PLATFORMS; print(*PLATFORMS)'); do
    platforms+=(--platform "$p")
  done
  local fresh
  fresh=$(mktemp -d)
  echo "[kit] downloading the wheels (cp312, --no-deps)"
  # shellcheck disable=SC2046
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp "${platforms[@]}" -d "$fresh" \
    $("$PY" -m benchmarks.device_bundle requirements) 2> >(grep -v "is ignored: it is neither" >&2)
  # shellcheck disable=SC2046
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform any -d "$fresh" \
    $("$PY" -m benchmarks.device_bundle requirements --pure) 2> >(grep -v "is ignored: it is neither" >&2)
  chmod 755 "$fresh" && rm -rf "$KIT/wheels" && mkdir -p "$KIT" && mv "$fresh" "$KIT/wheels"

  local dir found=""
  for dir in $(hosts_dirs); do
    [ -f "$dir/$TARBALL" ] || continue
    if [ -f "$dir/SHA256SUMS" ] && ! (cd "$dir" && grep " $TARBALL\$" SHA256SUMS | sha256sum -c --quiet -); then
      echo "[kit] $dir/$TARBALL does not match its SHA256SUMS: not used" >&2
      continue
    fi
    install -m 644 "$dir/$TARBALL" "$KIT/$TARBALL"
    found=$dir
    break
  done
  [ -n "$found" ] || { echo "[kit] $TARBALL not found in: $(hosts_dirs | tr '\n' ' ')" >&2; exit 1; }
  echo "[kit] host: $found/$TARBALL"

  local py312
  if py312=$(python312); then
    local site
    export PIP_ROOT_USER_ACTION=ignore
    site=$(mktemp -d)
    "$py312" -m pip install -q --disable-pip-version-check --no-index --no-deps \
      --no-compile --target "$site" "$KIT"/wheels/*.whl
    "$py312" scripts/device/import_check.py "$site"
    rm -rf "$site"
  else
    echo "[kit] no local Python 3.12: the wheels were checked by their tags and requirements only"
  fi

  "$PY" -m benchmarks.device_bundle check --carry "$KIT"
  cat <<EOF
[kit] ready. The device call (one, <= 8 minutes):
  run(command="bash scripts/device_check.sh run", carry=["$KIT"], timeout_s=$RUN_TIMEOUT_S)
Then commit \$OUT's gpu_check.json as benchmarks/results/gpu_check.json.
EOF
}

run_on_device() { # [rehearse]
  local started=$SECONDS rehearse=${1:-}
  local out=${OUT:-/tmp/kit-out} # never inside .kit: it would travel with the next call
  mkdir -p "$out"
  exec > >(tee "$out/device_check.log") 2>&1
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_ROOT_USER_ACTION=ignore
  local PY=${PYTHON:-python3} mode=()
  if [ -n "$rehearse" ]; then
    PY=${PYTHON:-.venv/bin/python}
    mode=(--cpu --simulate-device)
  fi
  echo "[kit] $(uname -m), $("$PY" --version), $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
  [ -d "$KIT/wheels" ] && [ -f "$KIT/$TARBALL" ] || {
    echo "[kit] $KIT/ is missing or incomplete: run 'scripts/device_check.sh prepare' here and carry $KIT" >&2
    exit 2
  }
  if [ -z "$rehearse" ]; then # (a rehearsal's .venv has them; the cp312 wheels would not install in it)
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
      --no-compile --no-cache-dir --upgrade --target /tmp/kit-site "$KIT"/wheels/*.whl
  fi
  rm -rf /tmp/kit-host && mkdir -p /tmp/kit-host
  tar -xJf "$KIT/$TARBALL" -C /tmp/kit-host
  export COMFYUI_PATH=/tmp/kit-host/ComfyUI-$HOST_VERSION
  export PYTHONPATH="/tmp/kit-site:$root/scripts/device/stubs${PYTHONPATH:+:$PYTHONPATH}"
  local budget=$((${KIT_BUDGET_S:-440} - (SECONDS - started)))
  echo "[kit] installed and unpacked in $((SECONDS - started)) s; gpu_check gets $budget s"
  local rc=0
  "$PY" -m benchmarks.gpu_check "${mode[@]}" --out "$out/gpu_check.json" --budget-s "$budget" \
    --server-log "$out/comfyui-server.log" || rc=$?
  echo "[kit] done in $((SECONDS - started)) s (exit $rc)"
  return "$rc"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run_on_device ;;
  rehearse) run_on_device rehearse ;;
  *) echo "usage: scripts/device_check.sh prepare|run|rehearse" >&2; exit 2 ;;
esac
