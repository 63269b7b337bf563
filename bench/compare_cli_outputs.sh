#!/bin/bash
# usage: PYTHON=.venv/bin/python bash bench/compare_cli_outputs.sh REPO OUTDIR
# Runs one small digits search and every reading command with the code of the checkout REPO
# (PYTHONPATH), writing their outputs to OUTDIR; run it for two checkouts and diff the folders.
set -u
REPO=$1; FINAL=$2; OUT=${TMPDIR:-/tmp}/cnnsearch-compare; rm -rf $OUT $FINAL; mkdir -p $OUT; cd $OUT
export PYTHONPATH=$REPO; CNN="${PYTHON:-python3} -m cnnsearch"
export OMP_NUM_THREADS=1 CNNSEARCH_RUNS_DIR=$OUT/runs
$CNN search --space tiny --data digits --name g --trials 4 --epochs 2 --seed 0 --device cpu > search.out 2> search.err; echo "rc=$?" >> search.err
$CNN leaderboard g > lb.out 2> lb.err
$CNN leaderboard g --all --format csv > lb_all.csv 2>&1
$CNN leaderboard g --format json > lb.json 2>&1
$CNN show g 0 > show0.out 2>&1
$CNN show g 1 > show1.out 2>&1
$CNN runs > runs.out 2>&1
$CNN report g > report.out 2>&1
$CNN export g --out $OUT/model --retrain-epochs 1 --device cpu > export.out 2> export.err; echo "rc=$?" >> export.err
$CNN space show tiny > space_show.out 2>&1
$CNN space sample default --n 5 > space_sample.out 2>&1
$CNN space check default --sample 50 > space_check.out 2>&1
$CNN leaderboard nosuch > unknown.out 2>&1; echo "rc=$?" >> unknown.out
cp -r $OUT $FINAL
