#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a lent GPU machine (see README, "On a GPU").
#   OUT=/some/dir bash scripts/gpu-checks.sh
# 1. environment; 2. python -m train.bench on CUDA: fp32, bf16 autocast, bf16 + torch.compile;
# 3. python -m train.informed for INFORMED_MINUTES each, the bundled decoder with and without FiLM
#    side by side (batch 16): told every generating factor and trained far longer than the CPU's
#    10 minutes, can the architecture learn to draw the earrings at all?
# 4. a sweep of training settings for the bundled model's recipe (v10: gates, beta = 1, the
#    intervention term over the last fifth): v10's decoder and the FiLM decoder side by side on the
#    one GPU. Its question (do the earrings reach 0.90 in resamples with FiLM over v10's 50 epochs?)
#    was answered on an H200 on 2026-11-30: no (README, "More epochs do not draw the earrings
#    either"). A short calibration sets the epochs to as many as fit SWEEP_MINUTES (at most
#    SWEEP_EPOCHS), so the schedule and the term always run to their end; DEADLINE=S instead gives
#    the sweep what is left of S seconds. Logs, metrics and (SWEEP_EVAL=0) models land in $OUT.
# Within the device tool's 10 minutes per command, run one part per command. Next to run:
#   SKIP_BENCH=1 SKIP_SWEEP=1 INFORMED_MINUTES=7 bash scripts/gpu-checks.sh          # train.informed
#   SKIP_INFORMED=1 SKIP_SWEEP=1 bash scripts/gpu-checks.sh                           # benchmarks
#   SKIP_BENCH=1 SKIP_INFORMED=1 SWEEP_EVAL=0 DEADLINE=560 bash scripts/gpu-checks.sh # the sweep
# Sizes can be shrunk for a dry run on the CPU:
#   DEVICE=cpu SWEEP_LIMIT=256 SWEEP_MINUTES=1 SWEEP_EVAL_LIMIT=50 SKIP_BENCH=1 PY=.venv/bin/python bash scripts/gpu-checks.sh
set -u
OUT=${OUT:-runs/gpu-checks}; mkdir -p "$OUT"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
SWEEP_EPOCHS=${SWEEP_EPOCHS:-50}
SWEEP_MINUTES=${SWEEP_MINUTES:-7}
SWEEP_LIMIT=${SWEEP_LIMIT:-50000}
SWEEP_EVAL_LIMIT=${SWEEP_EVAL_LIMIT:-1000}
BENCH_STEPS=${BENCH_STEPS:-30}
# SWEEP_EVAL=0: the runs skip the final evaluation (their models come back in sweep-runs.tgz, to
# be evaluated on the CPU with `python -m train.evaluate`), so that the GPU's minutes go to training.
SWEEP_EVAL=${SWEEP_EVAL:-1}
EVAL_RESERVE=${EVAL_RESERVE:-$([ "$SWEEP_EVAL" = 1 ] && echo 150 || echo 30)}
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

if [ "${SKIP_INFORMED:-0}" = 1 ] && [ "${SKIP_SWEEP:-0}" = 1 ]; then stamp "all done"; exit 0; fi
stamp "rendering the synthetic splits once (shared cache)"
$PY -c "
from train.data import load_dataset
for split, n in (('train', $SWEEP_LIMIT), ('val', 500), ('test', 1000), ('test', None)):
    print(split, len(load_dataset('synthetic', split, limit=n, progress=False)))" 2>&1 | tail -4

if [ "${SKIP_INFORMED:-0}" != 1 ]; then
  # The decoder told every generating factor (python -m train.informed), trained far longer than the
  # CPU's 10 minutes: can the bundled architecture, with and without FiLM, learn to draw the earrings
  # at all? (45 epochs of the VAE did not draw them more often than 31: README, "More epochs".)
  stamp "train.informed, ${INFORMED_MINUTES:=6} min each, paper decoder and FiLM side by side (batch 16)"
  pids=()
  for film in --no-decoder-film --decoder-film; do
    timeout $(( INFORMED_MINUTES * 60 + 300 )) $PY -m train.informed $film --batch-size 16 --minutes "$INFORMED_MINUTES" \
        --device "$DEVICE" > "$OUT/informed$film.txt" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  for film in --no-decoder-film --decoder-film; do tr '\r' '\n' < "$OUT/informed$film.txt" | grep -v -e Warning -e rendering | tail -18; done
fi

if [ "${SKIP_SWEEP:-0}" = 1 ]; then stamp "all done (sweep skipped)"; exit 0; fi


# name | extra flags; common: the bundled recipe (v10): f = 1, batch 64, lr 1e-3 cosine, K = 100,
# alpha = 300, Gaussian likelihood, label gates, style KL 1, the intervention term (gamma = 300,
# compatible flips) over the last fifth of the epochs; the sweep asks whether the FiLM decoder's
# earring gain (v12) holds over the recipe's full epochs. Two runs, so that sharing the GPU slows
# each little (the levers tested on the CPU changed nothing: a style-KL warm-up (v13), more style
# latents (v11), a 1024-wide layer between the convolutions and the latents (v15)).
configs=(
  "v10|"
  "film|--decoder-film"
)
common=(--dataset synthetic --sup-frac 1 --batch-size 64 --lr 1e-3 --lr-schedule cosine --k 100
        --classification-weight 300 --likelihood gaussian --style-kl-weight 1 --label-gates
        --intervention-weight 300 --intervention-batch 16 --device "$DEVICE" --threads 2 --no-figures)

# Calibration: two short epochs of each config side by side with the term on from the start (its
# steps are the slow ones), the second one timed. The sweep then runs as many epochs as fit
# 75 % of SWEEP_MINUTES (at most SWEEP_EPOCHS), so its schedule always ends and the term always
# runs; a fixed 50 would be cut short by the time cap, before the term starts, if the GPU is slower.
# The quarter spare is for the runs' validation and saving, which slow the others more than the
# calibration sees (a CPU dry run that kept 15 % spare was cut off in its last fifth).
CAL=$(( SWEEP_LIMIT < 6400 ? SWEEP_LIMIT : 6400 ))
stamp "calibration: 2 epochs of $CAL faces per config, side by side"
rm -rf runs/sweep-cal runs/sweep
pids=()
for c in "${configs[@]}"; do
  name=${c%%|*}; flags=${c#*|}
  timeout 300 $PY -m train "${common[@]}" --limit "$CAL" --epochs 2 --intervention-start 0 --val-limit 100 \
      --no-eval --out "runs/sweep-cal/$name" $flags > "$OUT/calibration-$name.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
for c in "${configs[@]}"; do  # a run that cannot train stops the script here, its error shown
  name=${c%%|*}
  if [ ! -s "runs/sweep-cal/$name/log.jsonl" ]; then
    stamp "calibration run $name failed:"; grep -v Warning "$OUT/calibration-$name.log" | tail -25; exit 1
  fi
done
if [ -n "${DEADLINE:-}" ]; then
  # Fit the sweep into one command: what is left of DEADLINE seconds, less EVAL_RESERVE for the
  # runs' final evaluations, becomes the runs' time cap.
  SWEEP_MINUTES=$($PY -c "print(round(max(1.0, ($DEADLINE - $(( $(date +%s) - t0 )) - $EVAL_RESERVE) / 60), 2))")
  stamp "deadline ${DEADLINE} s: the sweep gets $SWEEP_MINUTES min of training"
fi
EPOCHS=$($PY - "$SWEEP_LIMIT" "$CAL" "$SWEEP_MINUTES" "$SWEEP_EPOCHS" <<'PYEOF'
import json, math, pathlib, sys
limit, cal, minutes, most = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
per = []  # seconds for one epoch of `limit` faces with the term, per config
for log in sorted(pathlib.Path("runs/sweep-cal").glob("*/log.jsonl")):
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    if len(rows) >= 2:
        per.append((rows[-1]["seconds"] - rows[-2]["seconds"]) * limit / cal)
if not per:
    print(f"calibration failed (no run logged 2 epochs); running {most} epochs", file=sys.stderr)
    print(most); sys.exit()
epochs = max(1, min(most, math.floor(0.75 * 60 * minutes / max(per))))
print(f"calibration: {max(per):.1f} s per epoch of {limit} faces with the term (slowest config); "
      f"{epochs} epochs fit 75% of {minutes:g} min", file=sys.stderr)
print(epochs)
PYEOF
)
START=$(( EPOCHS * 4 / 5 ))
stamp "sweep: ${#configs[@]} runs side by side, $EPOCHS epochs of $SWEEP_LIMIT faces (the term from epoch $START), at most $SWEEP_MINUTES min each"
pids=()
for c in "${configs[@]}"; do
  name=${c%%|*}; flags=${c#*|}
  ( timeout $($PY -c "print(int($SWEEP_MINUTES * 60 + $EVAL_RESERVE))") $PY -m train "${common[@]}" --limit "$SWEEP_LIMIT" \
      --epochs "$EPOCHS" --intervention-start "$START" --max-minutes "$SWEEP_MINUTES" \
      --val-limit 500 --eval-limit "$SWEEP_EVAL_LIMIT" $([ "$SWEEP_EVAL" = 1 ] || echo --no-eval) --out "runs/sweep/$name" $flags > "$OUT/sweep-$name.log" 2>&1
    echo "exit $?" >> "$OUT/sweep-$name.log" ) &
  pids+=($!)
done
wait "${pids[@]}"
stamp "sweep done"
$PY - "$OUT" "$START" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); start = int(sys.argv[2]); rows = {}
for run in sorted(pathlib.Path("runs/sweep").iterdir()):
    m = run / "metrics.json"
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").is_file() else []
    if not m.is_file():
        print(run.name, "no metrics", log[-1] if log else ""); continue
    m = json.loads(m.read_text())
    worst = lambda d: min(d.values()) if d else float("nan")
    r = {"epochs": log[-1]["epoch"] if log else None, "term_epochs": max(0.0, log[-1]["epoch"] - start) if log else None,
         "seconds": log[-1]["seconds"] if log else None,
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
tar czf "$OUT/sweep-runs.tgz" runs/sweep/*/log.jsonl runs/sweep/*/args.json runs/sweep/*/metrics.json \
    runs/sweep/*/model/config.json runs/sweep/*/model/model.safetensors 2>/dev/null
(cd "$OUT" && tar czf sweep-logs.tgz sweep-*.log calibration-*.log && rm sweep-*.log calibration-*.log)
stamp "all done"
