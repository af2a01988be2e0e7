#!/usr/bin/env bash
# bench/gpu.py on a machine whose Python has PyTorch, transformers and peft but none of our other
# packages, and no network: what is missing is installed from wheels/ into a temporary folder
# (nothing in the Python's own environment changes), then bench/gpu.py runs with the arguments given.
#
#     bash bench/gpu.sh --out results/                 # on the GPU machine
#     PYTHON=/path/to/python bash bench/gpu.sh ...     # another interpreter than python3
#
# wheels/ is filled beforehand on a machine with PyPI (README, "A GPU"); it is ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
site="${TMPDIR:-/tmp}/clip_min_gpu_site"
rm -rf "$site"

# module:package pairs; a package is installed only if its module does not import already.
missing=()
for pair in ftfy:ftfy wcwidth:wcwidth regex:regex tqdm:tqdm PIL:pillow clip:openai-clip; do
    module=${pair%%:*}
    "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    echo "installing from wheels/: ${missing[*]}"
    # --no-deps: openai-clip would ask for torchvision, which clip_min never imports.
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --find-links wheels \
        --target "$site" "${missing[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" bench/gpu.py "$@"
