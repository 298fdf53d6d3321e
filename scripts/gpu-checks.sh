#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a lent GPU machine (see README, "On a GPU").
#   OUT=/some/dir bash scripts/gpu-checks.sh
# 1. environment; 2. python -m train.bench on CUDA: fp32, bf16 autocast, bf16 + torch.compile;
# 3. a sweep of training settings for the bundled model's recipe (v10: gates, beta = 1, the
#    intervention term over the last fifth), several runs side by side on the one GPU, each evaluated
#    with the oracle. It asks the question the CPU cannot: do the earrings reach 0.90 in resamples
#    with a FiLM decoder over v10's full 50 epochs (README, "What is still missing")?
#    Logs and metrics land in $OUT.
# Sizes can be shrunk for a dry run on the CPU: DEVICE=cpu SWEEP_EPOCHS=1 SWEEP_LIMIT=256 ...
set -u
OUT=${OUT:-runs/gpu-checks}; mkdir -p "$OUT"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
SWEEP_EPOCHS=${SWEEP_EPOCHS:-50}
SWEEP_MINUTES=${SWEEP_MINUTES:-7}
SWEEP_LIMIT=${SWEEP_LIMIT:-50000}
BENCH_STEPS=${BENCH_STEPS:-30}
export PYTHONUNBUFFERED=1 CCVAE_CACHE=${CCVAE_CACHE:-/tmp/ccvae-cache}
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

stamp "environment" | tee "$OUT/bench.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee -a "$OUT/bench.txt"

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  for flags in "" "--amp" "--amp --compile"; do
    stamp "train.bench --device $DEVICE $flags" | tee -a "$OUT/bench.txt"
    timeout 150 $PY -m train.bench --device "$DEVICE" --steps "$BENCH_STEPS" $flags 2>&1 | grep -v Warning | tail -8 | tee -a "$OUT/bench.txt"
  done
fi

stamp "rendering the synthetic splits once (shared cache)"
$PY -c "
from train.data import load_dataset
for split, n in (('train', $SWEEP_LIMIT), ('val', 500), ('test', 1000)):
    print(split, len(load_dataset('synthetic', split, limit=n)))" 2>&1 | tail -3

# name | extra flags; common: the bundled recipe (v10): f = 1, batch 64, lr 1e-3 cosine, K = 100,
# alpha = 300, Gaussian likelihood, label gates, style KL 1, the intervention term (gamma = 300,
# compatible flips) over the last fifth of the epochs; the sweep varies the decoder and the style latents
START=$(( SWEEP_EPOCHS * 4 / 5 ))
configs=(
  "v10|"
  "film|--decoder-film"
  "film-warm4|--decoder-film --style-kl-warmup 4"
  "film-d80|--decoder-film --latent-dim 80"
)
stamp "sweep: ${#configs[@]} runs side by side, $SWEEP_EPOCHS epochs of $SWEEP_LIMIT faces, at most $SWEEP_MINUTES min each"
pids=()
for c in "${configs[@]}"; do
  name=${c%%|*}; flags=${c#*|}
  ( timeout $(( SWEEP_MINUTES * 60 + 150 )) $PY -m train --dataset synthetic --sup-frac 1 --limit "$SWEEP_LIMIT" \
      --epochs "$SWEEP_EPOCHS" --batch-size 64 --lr 1e-3 --lr-schedule cosine --k 100 --classification-weight 300 \
      --likelihood gaussian --style-kl-weight 1 --label-gates --intervention-weight 300 --intervention-batch 16 \
      --intervention-start "$START" \
      --device "$DEVICE" --threads 2 --max-minutes "$SWEEP_MINUTES" --no-figures --val-limit 500 --eval-limit 1000 \
      --out "runs/sweep/$name" $flags > "$OUT/sweep-$name.log" 2>&1
    echo "exit $?" >> "$OUT/sweep-$name.log" ) &
  pids+=($!)
done
wait "${pids[@]}"
stamp "sweep done"
$PY - "$OUT" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); rows = {}
for run in sorted(pathlib.Path("runs/sweep").iterdir()):
    m = run / "metrics.json"
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").is_file() else []
    if not m.is_file():
        print(run.name, "no metrics", log[-1] if log else ""); continue
    m = json.loads(m.read_text())
    worst = lambda d: min(d.values()) if d else float("nan")
    r = {"epochs": log[-1]["epoch"] if log else None, "seconds": log[-1]["seconds"] if log else None,
         "acc": m["mean_accuracy"], "acc_min": worst(m["per_label_accuracy"]), "psnr": m["psnr"],
         "interv": m.get("intervention_success_mean"), "interv_min": worst(m.get("intervention_success", {})),
         "interv_feasible_min": worst(m.get("intervention_success_feasible", {})),
         "leak": m.get("intervention_leakage_mean"), "cond": m.get("conditional_accuracy"),
         "present_min": min((d["oracle_present"] for d in m.get("diversity", {}).values()), default=None),
         "present_mean": m.get("diversity_present_mean"), "scale": log[-1].get("sup_likelihood_scale") if log else None,
         "earrings": m.get("diversity", {}).get("Wearing_Earrings", {}).get("oracle_present"),
         "earrings_rec": m.get("reconstruction_present", {}).get("Wearing_Earrings"),
         "interv_n90": sum(v >= 0.9 for v in m.get("intervention_success", {}).values())}
    rows[run.name] = {**r, "per_label": m.get("per_label")}
    print(f"{run.name:10s} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
(out / "sweep.json").write_text(json.dumps(rows, indent=1))
PYEOF
(cd "$OUT" && tar czf sweep-logs.tgz sweep-*.log && rm sweep-*.log)
stamp "all done"
