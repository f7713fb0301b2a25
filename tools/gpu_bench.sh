#!/usr/bin/env bash
# The prepared GPU check of issue #26: `sslray bench gpu` part by part, each under its own timeout,
# every row appended to $OUT/rows.jsonl as it finishes (a part cut short loses only itself), then
# the table. Run on the lent H200 from the project root, after installing .whl/ (../shared/gpu):
#   OUT=... bash tools/gpu_bench.sh
# Dry run on CPU at tiny sizes first: SMOKE=1 OUT=/tmp/x bash tools/gpu_bench.sh
set -u
OUT=${OUT:?set OUT to a folder}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ "${SMOKE:-0}" = 1 ]; then
  SIZE="--cpu --images 160 --sizes 64,80 --size 64 --batch 4 --steps 3 --warmup 2 --arch resnet18 --width 0.125 --cpus 1 --backend aot_eager --threads 2"
  SHM=$(mktemp -d)
else
  SIZE="--images 15000 --steps 50 --warmup 5"  # 256 x 56 = 14,336 images a streamed epoch
  SHM=/dev/shm
fi
B="$PY -m sslray bench gpu $SIZE --folder $SHM/photos --jsonl $OUT/rows.jsonl"
part() {  # part SECONDS ARGS...: one part under its own timeout; its log under $OUT
  local s=$1; shift
  echo "=== $* (timeout ${s}s) $(date +%T)"
  echo "=== $* $(date +%T)" >> "$OUT/log.txt"
  timeout "$s" $B "$@" >> "$OUT/log.txt" 2>&1
  echo "=== exit $? $(date +%T)" | tee -a "$OUT/log.txt"
}
# a 64-px resnet18 smoke of every part first: if the environment is broken, stop before the long parts
$PY -m sslray bench gpu --images 40 --sizes 64,80 --size 64 --batch 4 --steps 2 --warmup 1 --arch resnet18 \
  --width 0.125 --cpus 2 --backend aot_eager --folder "$SHM/tiny" --methods simclr --parts ceiling,memory,pipeline,stream $( [ "${SMOKE:-0}" = 1 ] && echo --cpu ) \
  > "$OUT/log.txt" 2>&1 || { echo "SMOKE FAILED"; tail -40 "$OUT/log.txt"; exit 1; }
echo "smoke ok $(date +%T)"
# measured on 2026-12-04 (reports/gpu): ceilings and compiled simclr from memory, streamed simclr, the
# pipeline and the profile. Still to measure there: device idle (time/device_idle), rotation streamed,
# sslray's eager steps (against compiled), and moco and jigsaw eager and compiled (last, if time is left)
part 100 --parts stream --methods simclr
part 100 --parts stream --methods rotation
part 120 --parts memory --methods simclr,rotation --no-compile
part 120 --parts memory --methods rotation
part 90 --parts pipeline --methods simclr
part 150 --parts ceiling --methods simclr,rotation
$PY -m sslray bench gpu --report "$OUT/rows.jsonl" --json "$OUT/gpu.json" > "$OUT/table.txt" 2>&1
cat "$OUT/table.txt"
# if device time is left: issue 26's eager-against-compiled for moco and jigsaw (the loop from memory;
# each compile took about 2 minutes for ResNet-50 on the H200), the table written again after each
if [ "${EXTRA:-1}" = 1 ]; then
  part 120 --parts memory --methods moco,jigsaw --no-compile
  $PY -m sslray bench gpu --report "$OUT/rows.jsonl" --json "$OUT/gpu.json" > "$OUT/table.txt" 2>&1
  part 300 --parts memory --methods moco,jigsaw
  $PY -m sslray bench gpu --report "$OUT/rows.jsonl" --json "$OUT/gpu.json" > "$OUT/table.txt" 2>&1
  cat "$OUT/table.txt"
fi
