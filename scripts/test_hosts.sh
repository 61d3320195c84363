#!/usr/bin/env bash
# Runs the host compatibility subset (`pytest -m hosts`) on each ComfyUI host named, after setting it up.
#
#   scripts/test_hosts.sh [HOST ...]     HOST: 0.33.0, 0.16.4, 0.3.75, 2024-12 (default: all four)
#
# Each host is set up by scripts/setup_env.sh (idempotent): 0.33.0 runs with .venv/ and .comfyui/, the
# others with .hosts/<HOST>-venv/ and .hosts/<HOST>/. A host setup_env.sh cannot reach (exit 3: no
# tarball and offline) is reported as skipped, not failed. Extra pytest arguments: $HOSTS_PYTEST_ARGS.
# Prints a summary table; exits non-zero when any host failed (its setup or its tests).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ $# -eq 0 ]; then set -- 0.33.0 0.16.4 0.3.75 2024-12; fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

names=() results=() counts=() times=()
any_failed=0
for host in "$@"; do
  echo
  echo "==================== host $host ===================="
  start=$(date +%s)
  # setup_env.sh sets up the named host only when COMFYUI_PATH is unset
  env -u COMFYUI_PATH bash scripts/setup_env.sh "$host"
  rc=$?
  result="" count=""
  if [ $rc -eq 3 ]; then
    result=skipped count="host unreachable (setup_env.sh exit 3)"
  elif [ $rc -ne 0 ]; then
    result=FAILED count="setup_env.sh exit $rc"
  else
    if [ "$host" = 0.33.0 ]; then
      py=$root/.venv/bin/python comfy=$root/.comfyui
    else
      py=$root/.hosts/$host-venv/bin/python comfy=$root/.hosts/$host
    fi
    echo "[hosts] $host: $(cat "$comfy/.perfusion-host" 2>/dev/null || echo "$comfy"), python $py"
    log="$logs/$host.log"
    # shellcheck disable=SC2086 # HOSTS_PYTEST_ARGS is a list of words
    COMFYUI_PATH=$comfy "$py" -m pytest -m hosts ${HOSTS_PYTEST_ARGS:-} 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    count=$(grep -E '^=+ .* in [0-9.]+s' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*$//')
    if [ $rc -eq 0 ]; then
      result=passed
    else
      result=FAILED
      [ $rc -eq 5 ] && count="no tests collected"
      [ -n "$count" ] || count="pytest exit $rc"
    fi
  fi
  [ "$result" = FAILED ] && any_failed=1
  names+=("$host") results+=("$result") counts+=("$count") times+=("$(($(date +%s) - start))")
done

echo
echo "==================== host matrix ===================="
printf '%-10s %-8s %8s  %s\n' host result seconds tests
for i in "${!names[@]}"; do
  printf '%-10s %-8s %8s  %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}" "${counts[$i]}"
done
exit $any_failed
