#!/usr/bin/env bash
# Re-measure every figure in checkpoints/README.md, checkpoints/FINDINGS.md and the model cards with the
# project's own commands. Writes JSON to checkpoints/measurements/, regenerates the cards next to each
# .ckpt and FINDINGS.md (engram-interp findings). Extra seeds of each arm (checkpoints/seeds/ARM-seedN.ckpt)
# are measured too; every analysis then reports the across-seed band.
#
#   bash checkpoints/measure.sh                 # needs the validation token files for the cards:
#   engram-interp data build && engram-interp data tokenize --out .cache/stream-cpu --tokens 16e6 \
#       --real-fraction 0.5 --seed $SEED            # (the stream the CPU recipe trained on)
#   SECTION=cards|lens|cka|gates|ablate|memory|findings bash checkpoints/measure.sh   # one part only
set -euo pipefail
cd "$(dirname "$0")/.."
E=${ENGRAM_INTERP:-engram-interp}
OUT=checkpoints/measurements
DATA=${DATA:-.cache/stream-cpu}
CORPUS=probes/texts/heldout.txt     # held-out validation paragraphs (probes/texts/README.md)
# corpus tokens per analysis, items per task suite (seeded subsample), seed: the shared defaults of
# engram_interp/defaults.py (the CLI, the app and the report use the same); TOKENS=... MEMORY_TOKENS=... ITEMS=... override them
PY=${PYTHON:-$(command -v python3)}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
eval "D_$($PY -m engram_interp.defaults | sed 's/ / D_/g')"
TOKENS=${TOKENS:-$D_TOKENS}
MEMORY_TOKENS=${MEMORY_TOKENS:-$D_MEMORY_TOKENS} # corpus positions hashed for the memory tables
ITEMS=${ITEMS:-$D_ITEMS}
SEED=${SEED:-$D_SEED}
ENTITY_TOKENS=${ENTITY_TOKENS:-300} # entity-final tokens for the gate contrast
SEEDS=${SEEDS:-checkpoints/seeds}   # extra seeds: SEEDS/ARM-seedN.ckpt
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
A=checkpoints/engram.ckpt; B=checkpoints/moe.ckpt; N=checkpoints/engram-null.ckpt
SECTION=${SECTION:-all}             # all | cards | analyses | lens | cka | gates | ablate | memory | findings
S=(); [ -d "$SEEDS" ] && S=(--seeds "$SEEDS")
want() { [ "$SECTION" = all ] || [ "$SECTION" = "$1" ] || { [ "$SECTION" = analyses ] && [ "$1" != cards ]; }; }
mkdir -p "$OUT"
if want cards; then
  for ckpt in $A $B $N "$SEEDS"/*-seed*.ckpt; do
    [ -f "$ckpt" ] || continue
    arm=$(basename "$ckpt" .ckpt)
    if [ -d "$DATA" ]; then
      $E card "$ckpt" --data "$DATA" --max-items $ITEMS --seed $SEED --device cpu --json > "$OUT/card-$arm.json"
    else
      echo "no $DATA: cards keep their stored validation losses; suite scores only" >&2
      $E card "$ckpt" --max-items $ITEMS --seed $SEED --device cpu --json > "$OUT/card-$arm.json"
    fi
  done
fi
if want lens; then
  $E logit-lens $A $B $N "${S[@]}" --twin --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/logit_lens.json"
fi
if want cka; then
  $E cka $A $B --control $N "${S[@]}" --twin --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/cka_all_tokens.json"
  $E cka $A $B --control $N --twin --tokens entities --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/cka_entities.json"
  $E cka $N $B "${S[@]}" --twin --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/cka_null_vs_moe.json"
fi
if want gates; then
  $E gates $A --twin --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/gates_engram.json"
  $E gates $N --corpus $CORPUS --max-tokens $TOKENS --device cpu --quiet --json > "$OUT/gates_engram_null.json"
  $E gates $A --text "Alexander the Great met the Princess of Wales. By the way, the Milky Way is a galaxy." \
    --device cpu --quiet --json > "$OUT/gates_engram_text.json"
  $E gates $A "${S[@]}" --twin --entities --max-tokens $ENTITY_TOKENS --device cpu --quiet --json > "$OUT/gates_entities_engram.json"
  $E gates $N "${S[@]}" --entities --max-tokens $ENTITY_TOKENS --device cpu --quiet --json > "$OUT/gates_entities_null.json"
fi
if want ablate; then
  $E ablate $A $B $N "${S[@]}" --twin --suites probes --max-items $ITEMS --seed $SEED --device cpu --quiet --json > "$OUT/ablate_zero.json"
  $E ablate $A $N --suites probes --max-items $ITEMS --seed $SEED --mode mean --reference $CORPUS --max-tokens $TOKENS --device cpu --quiet \
    --json > "$OUT/ablate_mean.json"
fi
if want memory; then
  $E memory $A --corpus $CORPUS --max-tokens $MEMORY_TOKENS --quiet --json > "$OUT/memory_engram.json"
  $E memory $N --corpus $CORPUS --max-tokens $MEMORY_TOKENS --quiet --json > "$OUT/memory_engram_null.json"
fi
if want findings; then
  # the findings of checkpoints/README.md (each against the Engram-null control) and checkpoints/FINDINGS.md
  # (verdicts across seeds), both from the JSON above
  ${PY} checkpoints/findings.py > /dev/null
  $E findings --measurements "$OUT" --out checkpoints/FINDINGS.md --force
fi
echo "wrote $OUT/*.json"
