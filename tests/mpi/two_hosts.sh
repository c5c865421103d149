#!/usr/bin/env bash
# Two "hosts" on one machine: two network namespaces joined by a veth pair, one Open MPI job across
# them (one rank per namespace, TP 2), its ranks talking TCP over the veth. The rsh launcher agent
# is netns_rsh.sh, which runs the daemon's command inside the namespace named for the host instead
# of ssh. The job's argmax line must equal a one-process run's and its logits must agree within
# 1e-5 (max |diff|).
#   two_hosts.sh KILN_BINARY TEST_DATA_DIR [MPIEXEC]
# Exit 0: pass; 77: skipped because this machine cannot make network namespaces; else: failure.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 KILN_BINARY TEST_DATA_DIR [MPIEXEC]" >&2
  exit 2
fi
kiln=$(readlink -f "$1")
data=$(readlink -f "$2")
here=$(cd "$(dirname "$0")" && pwd)
agent=$here/netns_rsh.sh
model=$data/golden/kimi-micro-f32.gguf
tokens=$data/golden/rand100_ids.txt
tol=1e-5
skip=77

log() { echo "two_hosts: $*"; }
die() { echo "two_hosts: FAIL: $*" >&2; exit 1; }

for f in "$kiln" "$agent" "$model" "$tokens"; do
  [[ -e $f ]] || die "missing $f"
done
mpirun=${3:-$(command -v mpirun || true)}
[[ -n $mpirun && -x $mpirun ]] || die "mpirun not found"
command -v python3 >/dev/null || die "python3 not found (needed to compare logits)"
if ! command -v ip >/dev/null; then
  log "SKIP: the ip command (iproute2) is not installed, cannot make network namespaces"
  exit $skip
fi

ns1=kiln-h1-$$
ns2=kiln-h2-$$
veth1=kv1-$$
veth2=kv2-$$
ip1=10.231.0.1
ip2=10.231.0.2
subnet=10.231.0.0/24
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-two-hosts.XXXXXX")
made_ns=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local ns pid
  for ns in "${made_ns[@]}"; do
    # Anything this test started that is still inside the namespace (a stuck daemon) goes too.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns delete "$ns" 2>/dev/null || true
  done
  ip link delete "$veth1" 2>/dev/null || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the two hosts -------------------------------------------------------------------------------
log "creating network namespaces $ns1 and $ns2"
if ! err=$(ip netns add "$ns1" 2>&1); then
  log "SKIP: this machine does not allow network namespaces (ip netns add: $err)"
  exit $skip
fi
made_ns+=("$ns1")
ip netns add "$ns2" || die "ip netns add $ns2 failed"
made_ns+=("$ns2")
if ! err=$(ip link add "$veth1" type veth peer name "$veth2" 2>&1); then
  log "SKIP: this machine does not allow veth pairs (ip link add type veth: $err)"
  exit $skip
fi
ip link set "$veth1" netns "$ns1"
ip link set "$veth2" netns "$ns2"
ip -n "$ns1" link set lo up
ip -n "$ns2" link set lo up
ip -n "$ns1" addr add "$ip1/24" dev "$veth1"
ip -n "$ns2" addr add "$ip2/24" dev "$veth2"
ip -n "$ns1" link set "$veth1" up
ip -n "$ns2" link set "$veth2" up
log "$ns1: $veth1 $ip1/24; $ns2: $veth2 $ip2/24"
# The link can take a moment to come up; wait until each side reaches the other.
if command -v ping >/dev/null; then
  ok=0
  for _ in $(seq 50); do
    if ip netns exec "$ns1" ping -c1 -W1 "$ip2" >/dev/null 2>&1 &&
       ip netns exec "$ns2" ping -c1 -W1 "$ip1" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
  done
  [[ $ok == 1 ]] || die "$ip1 and $ip2 cannot reach each other over the veth pair"
else
  for _ in $(seq 50); do
    if ip -n "$ns1" link show "$veth1" | grep -q 'state UP' &&
       ip -n "$ns2" link show "$veth2" | grep -q 'state UP'; then break; fi
    sleep 0.1
  done
fi

# Each host gets its own temporary directory for Open MPI's session files, as separate machines
# would (the namespaces share one file system and one host name).
mkdir -p "$work/tmp1" "$work/tmp2"
export KILN_NETNS_HOSTS="$ip1=$ns1=$work/tmp1 $ip2=$ns2=$work/tmp2"
printf '%s slots=1\n%s slots=1\n' "$ip1" "$ip2" >"$work/hostfile"

# --- one process ---------------------------------------------------------------------------------
log "one process: kiln eval (reference)"
"$kiln" eval --model "$model" --tokens-file "$tokens" --threads 1 --dump-logits "$work/one.bin" \
  >"$work/one.out" 2>&1 || { cat "$work/one.out" >&2; die "the one-process eval failed"; }

# --- one job across the two hosts ---------------------------------------------------------------
# mpirun runs in the first namespace: its daemon is the first host, and the second host's daemon
# (started through the agent) connects back to it over the veth. The environment of the other MPI
# tests selects shared memory; this job must use TCP.
unset OMPI_MCA_btl OMPI_MCA_btl_vader_single_copy_mechanism
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi_args=(
  --allow-run-as-root
  --hostfile "$work/hostfile" -np 2 --map-by node
  --mca plm rsh
  --mca plm_rsh_agent "$agent"
  --mca plm_rsh_no_tree_spawn 1
  --mca orte_keep_fqdn_hostnames 1
  --mca oob tcp
  --mca oob_tcp_if_include "$subnet"
  --mca btl "tcp,self"
  --mca btl_tcp_if_include "$subnet"
  --mca pml ob1
)
# First make sure the job really spans the namespaces: each rank reports its network namespace.
log "two hosts: where do the ranks run?"
ns_id() { stat -L -c %i "$1"; }
id1=$(ns_id "/var/run/netns/$ns1")
id2=$(ns_id "/var/run/netns/$ns2")
set +e
# shellcheck disable=SC2016  # $OMPI_COMM_WORLD_RANK is for the rank's shell
timeout -k 5 30 ip netns exec "$ns1" env TMPDIR="$work/tmp1" "$mpirun" "${mpi_args[@]}" \
  sh -c 'echo "rank $OMPI_COMM_WORLD_RANK netns $(stat -L -c %i /proc/self/ns/net)"' \
  >"$work/where.out" 2>&1
rc=$?
set -e
cat "$work/where.out"
[[ $rc == 0 ]] || die "mpirun across the two namespaces exited $rc"
grep -qx "rank 0 netns $id1" "$work/where.out" || die "rank 0 did not run in $ns1 (netns $id1)"
grep -qx "rank 1 netns $id2" "$work/where.out" || die "rank 1 did not run in $ns2 (netns $id2)"
log "rank 0 runs in $ns1, rank 1 in $ns2"

log "two hosts: mpirun ${mpi_args[*]} kiln eval ..."
start=$(date +%s.%N)
set +e
timeout -k 5 45 ip netns exec "$ns1" env TMPDIR="$work/tmp1" "$mpirun" "${mpi_args[@]}" \
  "$kiln" eval --model "$model" --tokens-file "$tokens" --threads 1 --dump-logits "$work/two.bin" \
  >"$work/two.out" 2>&1
rc=$?
set -e
stop=$(date +%s.%N)
cat "$work/two.out"
[[ $rc == 0 ]] || die "the two-host job exited $rc"
log "two-host job took $(python3 -c "print(f'{$stop - $start:.1f}')") s"

# --- compare -------------------------------------------------------------------------------------
a1=$(grep '^argmax' "$work/one.out") || die "no argmax line from the one-process eval"
a2=$(grep '^argmax' "$work/two.out") || die "no argmax line from the two-host job"
[[ $a1 == "$a2" ]] || die "argmax differs: one process: $a1 / two hosts: $a2"
log "argmax lines are identical"
python3 - "$work/one.bin" "$work/two.bin" "$tol" <<'PY'
import math, sys
from array import array

def load(path):
    a = array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    return a

one, two, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
if len(one) == 0 or len(one) != len(two):
    sys.exit(f"two_hosts: FAIL: logits sizes differ: {len(one)} vs {len(two)} floats")
worst, at = 0.0, 0
for i, (x, y) in enumerate(zip(one, two)):
    d = abs(x - y)
    if math.isnan(d):
        sys.exit(f"two_hosts: FAIL: NaN in the logits at element {i}")
    if d > worst:
        worst, at = d, i
print(f"two_hosts: {len(one)} logits, max |diff| {worst:.3g} (element {at}), tolerance {tol:g}")
if worst > tol:
    sys.exit("two_hosts: FAIL: logits differ by more than the tolerance")
PY
log "PASS"
