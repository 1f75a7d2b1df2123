#!/usr/bin/env bash
# The GPU check (docs/scaling.md, "The GPU check"; also `make gpu-check`), for a machine without network:
#   scripts/gpu_check.sh [--wheels DIR] [scripts/gpu_check.py options, e.g. --cpu --small]
# 1. installs, from DIR (default gpu-wheels/, made by `make gpu-wheels`), the packages of
#    scripts/gpu_wheels.txt whose module does not import here, into .gpu-check-site/ (no index, no
#    dependencies; nothing outside the repository is changed);
# 2. runs scripts/gpu_check.py with that folder and the repository on PYTHONPATH: a ~0.5B random-initialised
#    Qwen2 trained by memrl train alone and under torchrun with dist=fsdp2, a SIGKILL and a resume.
# PYTHON (default python3) is the interpreter that has torch; it must be 3.12 for the wheels of make gpu-wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=gpu-wheels
if [[ "${1:-}" == "--wheels" ]]; then
  WHEELS=$2
  shift 2
fi
PY=${PYTHON:-python3}
SITE=$PWD/.gpu-check-site
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled

"$PY" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.cuda.is_available()}")'
missing=()
while read -r req _ module; do
  [[ -z "$req" || "$req" == \#* ]] && continue
  "$PY" -c "import $module" 2>/dev/null || missing+=("$req")
done < <(sed 's/#/ # /' scripts/gpu_wheels.txt | awk '$1 !~ /^#/ && NF {print $1, "#", $NF}')
if ((${#missing[@]})); then
  if [[ ! -d "$WHEELS" ]]; then
    echo "gpu_check: missing ${missing[*]} and no wheel folder $WHEELS: run \`make gpu-wheels\` on a machine with network and bring the folder along" >&2
    exit 2
  fi
  echo "installing from $WHEELS: ${missing[*]}"
  "$PY" -m pip install -q --root-user-action=ignore --disable-pip-version-check --no-index --find-links "$WHEELS" --no-deps --target "$SITE" "${missing[@]}"
fi
exec "$PY" scripts/gpu_check.py "$@"
