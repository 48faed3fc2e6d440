#!/usr/bin/env bash
# Re-measure every figure in checkpoints/README.md and the model cards with the project's own
# commands. Writes JSON to checkpoints/measurements/ and regenerates the cards next to each .ckpt.
#
#   bash checkpoints/measure.sh                 # needs the validation token files for the cards:
#   engram-interp data build && engram-interp data tokenize --out .cache/stream-cpu --tokens 16e6 \
#       --real-fraction 0.5 --seed 0            # (the stream the CPU recipe trained on)
set -euo pipefail
cd "$(dirname "$0")/.."
E=${ENGRAM_INTERP:-engram-interp}
OUT=checkpoints/measurements
DATA=${DATA:-.cache/stream-cpu}
CORPUS=probes/texts/heldout.txt     # held-out validation paragraphs (probes/texts/README.md)
TOKENS=${TOKENS:-4000}              # corpus tokens per analysis (sized for a 2-core CPU)
ITEMS=${ITEMS:-50}                  # items per task suite (seeded subsample)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
A=checkpoints/engram.ckpt; B=checkpoints/moe.ckpt; N=checkpoints/engram-null.ckpt
SECTION=${SECTION:-all}               # all | cards | analyses (the two halves can run side by side)
mkdir -p "$OUT"
[ "$SECTION" = analyses ] || for arm in engram moe engram-null; do
  if [ -d "$DATA" ]; then
    $E card checkpoints/$arm.ckpt --data "$DATA" --max-items $ITEMS --seed 0 --device cpu --json > "$OUT/card-$arm.json"
  else
    echo "no $DATA: cards keep their stored validation losses; suite scores only" >&2
    $E card checkpoints/$arm.ckpt --max-items $ITEMS --seed 0 --device cpu --json > "$OUT/card-$arm.json"
  fi
done
[ "$SECTION" = cards ] && exit 0
$E logit-lens $A $B $N --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/logit_lens.json"
$E cka $A $B --control $N --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/cka_all_tokens.json"
$E cka $A $B --control $N --tokens entities --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/cka_entities.json"
$E cka $N $B --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/cka_null_vs_moe.json"
$E gates $A --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/gates_engram.json"
$E gates $N --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/gates_engram_null.json"
$E gates $A --text "Alexander the Great met the Princess of Wales. By the way, the Milky Way is a galaxy." \
  --device cpu --quiet --json > "$OUT/gates_engram_text.json"
$E ablate $A $B $N --suites probes --max-items $ITEMS --seed 0 --device cpu --quiet --json > "$OUT/ablate_zero.json"
$E ablate $A $N --suites probes --max-items $ITEMS --seed 0 --mode mean --reference $CORPUS --max-tokens $TOKENS --device cpu --quiet \
  --json > "$OUT/ablate_mean.json"
$E memory $A --corpus $CORPUS --max-tokens $TOKENS --quiet --json > "$OUT/memory_engram.json"
$E memory $N --corpus $CORPUS --max-tokens $TOKENS --quiet --json > "$OUT/memory_engram_null.json"
# the findings of checkpoints/README.md, each against the Engram-null control, from the JSON above
python3 checkpoints/findings.py > /dev/null
echo "wrote $OUT/*.json"
