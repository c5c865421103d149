#!/usr/bin/env bash
# Load failure on one rank: every rank opens its own copy of an HF micro model, one of them
# corrupt. Open MPI's MPMD form (mpirun -np 1 A : -np 1 B) gives each rank its own --model. The
# job must exit non-zero within 20 s, and the output must name the failing rank and its file.
# Cases: rank 1 with a truncated model.safetensors, rank 1 with a garbled header, rank 0 with a
# truncated file; and first a control run where both ranks get the good model and succeed.
#   corrupt_shard.sh KILN_BINARY [MPIEXEC]
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 KILN_BINARY [MPIEXEC]" >&2
  exit 2
fi
kiln=$(readlink -f "$1")
mpirun=${2:-$(command -v mpirun || true)}
limit=20

log() { echo "corrupt_shard: $*"; }
die() { echo "corrupt_shard: FAIL: $*" >&2; exit 1; }

[[ -x $kiln ]] || die "no kiln binary at $kiln"
[[ -n $mpirun && -x $mpirun ]] || die "mpirun not found"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-corrupt-shard.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "writing the micro model (HF) to $work/good"
"$kiln" make-model --preset micro --dtype f32 --format hf --out "$work/good" >/dev/null
good=$work/good/hf
[[ -s $good/model.safetensors ]] || die "make-model wrote no $good/model.safetensors"
size=$(stat -c %s "$good/model.safetensors")

# A copy whose model.safetensors is cut in half.
cp -r "$good" "$work/truncated"
truncate -s $((size / 2)) "$work/truncated/model.safetensors"
# A copy whose JSON header starts with garbage (the 8-byte length in front stays intact).
cp -r "$good" "$work/garbled"
printf 'xxxxxxxxxxxxxxxx' | dd of="$work/garbled/model.safetensors" bs=1 seek=8 conv=notrunc \
  status=none

eval_args=(eval --tokens "1,2,3" --threads 1)
out=$work/out.txt
elapsed=0
rc=0

# run_job MODEL_FOR_RANK0 MODEL_FOR_RANK1: one TP 2 job, rank r loading its own model.
run_job() {
  local start stop
  start=$(date +%s%N)
  set +e
  timeout -k 5 $((limit + 10)) "$mpirun" --allow-run-as-root --oversubscribe \
    -np 1 "$kiln" "${eval_args[@]}" --model "$1" : \
    -np 1 "$kiln" "${eval_args[@]}" --model "$2" >"$out" 2>&1
  rc=$?
  set -e
  stop=$(date +%s%N)
  elapsed=$(((stop - start) / 1000000))
  sed 's/^/    | /' "$out"
}

log "control: both ranks load the good model"
run_job "$good" "$good"
[[ $rc == 0 ]] || die "the control job with two good models exited $rc"
grep -q '^argmax' "$out" || die "the control job printed no argmax line"
log "control passed in ${elapsed} ms"

# expect_failure NAME RANK MODEL0 MODEL1 CORRUPT_FILE
expect_failure() {
  local name=$1 rank=$2 file=$5
  log "$name: rank $rank gets $file"
  run_job "$3" "$4"
  log "$name: exit $rc after ${elapsed} ms"
  [[ $rc != 0 ]] || die "$name: the job exited 0"
  [[ $rc != 124 && $rc != 137 ]] || die "$name: the job did not end (killed after $((limit + 10)) s)"
  ((elapsed < limit * 1000)) || die "$name: the job took ${elapsed} ms (limit ${limit} s)"
  grep -qF "rank $rank (host " "$out" || die "$name: the output does not name 'rank $rank (host ...)'"
  grep "rank $rank (host " "$out" | grep -qF "$file" ||
    die "$name: the rank $rank line does not name $file"
  if grep -q "rank $((1 - rank)) (host " "$out"; then
    die "$name: rank $((1 - rank)) loaded a good model but is reported as failed"
  fi
  log "$name: passed"
}

expect_failure "truncated shard" 1 "$good" "$work/truncated" "$work/truncated/model.safetensors"
expect_failure "garbled header" 1 "$good" "$work/garbled" "$work/garbled/model.safetensors"
expect_failure "truncated shard on rank 0" 0 "$work/truncated" "$good" \
  "$work/truncated/model.safetensors"
log "PASS"
