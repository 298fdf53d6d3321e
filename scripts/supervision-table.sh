#!/usr/bin/env bash
# The supervision table: the same short budget (4 epochs over 20,000 synthetic faces of the
# synthetic-faces recipe, without its late intervention term and style-prior fit) at each labelled
# fraction f, then test accuracy on 2,000 held-out faces. Prints one line per f.
# Usage: bash scripts/supervision-table.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/supervision}
mkdir -p "$out"
for f in 0.004 0.06 0.2 1.0; do
  .venv/bin/python -m train --recipe synthetic-faces --sup-frac "$f" --limit 20000 --epochs 4 \
    --intervention-weight 0 --fit-style-prior 0 --no-figures --no-eval --out "$out/f$f" 2> "$out-f$f.log" \
    || { echo "f=$f: training failed, see $out-f$f.log"; exit 1; }
  .venv/bin/python -m train.evaluate "$out/f$f/model" --dataset synthetic --no-oracle --limit 2000 \
    --json "$out/f$f/metrics.json" > /dev/null
  python3 -c "import json,sys; m=json.load(open('$out/f$f/metrics.json')); print(f'f=$f: mean_accuracy {m[\"mean_accuracy\"]:.4f}, psnr {m[\"psnr\"]:.2f} dB')"
done
