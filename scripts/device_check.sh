#!/usr/bin/env bash
# The GPU check, one command on a fresh device machine (one H100/H200; torch 2.11 there, no
# registry): install the project and the carried wheels, run the gpu-marked tests, then the
# speed table (the paper's rows through pipeline.generate) at full size eager and with the best
# runtime options, publishing
# docs/results/<gpu>-<date>.json and the table in docs/performance.md after every step, so a
# run cut off still reports what it finished. Sized for 8 minutes. See docs/performance.md.
#
#   bash scripts/device_check.sh                          # on the device machine
#   bash scripts/device_check.sh --device cpu --arch tiny # dry run on a CPU (tests/test_device_check.py)
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda ARCH=full OUT=docs
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --arch) ARCH=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "device_check.sh: unknown option $1 (expected --device, --arch, --out)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
START=$(date +%s)
log() { echo "[device_check $(( $(date +%s) - START ))s] $*" >&2; }

# The speed table's options are Hydra overrides (configs/speed.yaml): each experiment is a
# configs/experiment/ row run through pipeline.generate on random weights made on the device.
if [ "$ARCH" = full ]; then
  # The paper's three rows (5 s clips: base, SR, turbo decode, audio decode), one warm-up and one timed
  # generation each, eager and with the best runtime we can compile inside the budget (identical layers
  # share one compiled graph; compile=model recompiles the 40-layer graph per token count).
  TABLE=(model.arch=full device="$DEVICE" warmup=1 repeats=1 "experiments=[paper_256p,paper_540p,paper_1080p]")
  BEST=(runtime=fast runtime.compile=layers)
else
  # One frame at 540p SR (base, SR and decode all run); the tiny Wan decoder (the tiny turbo decoder
  # takes half a minute a frame on a CPU).
  TABLE=(model.arch=tiny device="$DEVICE" duration=0.04 warmup=0 repeats=1 "experiments=[paper_540p]" decoder=wan)
  BEST=(runtime.attn_backend=flex)  # CPU: no CUDA graphs; a compile would take minutes here
fi

if [ "$DEVICE" != cpu ]; then
  log "install: the project (--no-deps) and the carried pure-Python wheels (scripts/fetch_wheels.sh)"
  [ -d wheels ] || { echo "wheels/ missing: run scripts/fetch_wheels.sh here and carry wheels" >&2; exit 2; }
  "$PY" -m pip install --no-index --no-deps --no-build-isolation --quiet wheels/* || log "some wheels did not install"
  "$PY" -m pip install --no-index --no-deps --no-build-isolation --quiet -e . || export PYTHONPATH=$PWD
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
fi
GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_') if torch.cuda.is_available() else 'cpu')")
STAMP=$(date -u +%Y-%m-%d)
RESULTS="$OUT/results/$GPU-$STAMP.json"
WORK=$(mktemp -d)
publish() {
  "$PY" -c "import sys; from magihuman.harness.speed import publish; publish(sys.argv[1:-2], sys.argv[-2], sys.argv[-1])" \
    "$@" "$RESULTS" "$OUT/performance.md" >&2 || log "publish failed"
}

log "gpu-marked tests (files whose imports need the media stack are reported, not fatal)"
golden=${MAGIHUMAN_GOLDEN_DIR:-shared/golden}
MAGIHUMAN_GOLDEN_DIR=$golden timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors \
  tests/test_gpu_parity.py tests/test_quant.py tests/test_offload.py tests/test_memory_planner.py \
  > "$WORK/gpu_tests.txt" 2>&1
echo "gpu tests exit $?" >> "$WORK/gpu_tests.txt"
tail -5 "$WORK/gpu_tests.txt" >&2

log "speed table, eager"
timeout 220 "$PY" -m magihuman.harness.speed "${TABLE[@]}" out="$WORK/eager.json" || log "eager table stopped early"
publish "$WORK/eager.json"
log "speed table, best runtime: ${BEST[*]}"
timeout 220 "$PY" -m magihuman.harness.speed "${TABLE[@]}" "${BEST[@]}" out="$WORK/best.json" || log "best table stopped early"
publish "$WORK/eager.json" "$WORK/best.json"
cp "$WORK/gpu_tests.txt" "$OUT/results/$GPU-$STAMP-gpu-tests.txt"
log "done: $RESULTS, $OUT/performance.md"
