#!/bin/bash
# Test accuracy of the kept search weights of each trial of the given runs (no retraining: export --no-retrain),
# to compare what --choose best and cheapest-tied would have exported, and what the final training adds.
# Each export is recorded in the run's exports.json, as any export is.
# Usage: bench/search_weights_test.sh RUNS_DIR/RUN_NAME ...   (prints run, trial, search val acc, test acc)
mkdir -p "${TMPDIR:-/tmp}/search-weights-test"
CNN=${CNN:-$(dirname "$0")/../.venv/bin/cnnsearch}
for rd in "$@"; do
  runs=$(dirname $rd); name=$(basename $rd)
  for w in $rd/weights/trial_*.pt; do
    [ -f "$w" ] || continue
    n=$(basename $w .pt); n=${n#trial_}
    out=${TMPDIR:-/tmp}/search-weights-test/$name-$n; rm -rf $out
    $CNN export $name --runs-dir $runs --trial $n --no-retrain --format pt --out $out >/dev/null 2>&1
    python3 -c "import json,sys; m=json.load(open('$out/model.json')); print('$name', $n, m.get('search_val_accuracy', m.get('val_accuracy')), m['test_accuracy'])" 2>/dev/null || echo "$name $n export failed"
  done
done
