#!/bin/sh
# Stand-in for ssh as Open MPI's rsh launcher agent (--mca plm_rsh_agent): instead of logging in to
# HOST it runs the command inside the network namespace that plays that host.
#   netns_rsh.sh HOST COMMAND...
# KILN_NETNS_HOSTS maps hosts to namespaces and per-host temporary directories, one entry per
# host, separated by spaces: "HOST=NAMESPACE=TMPDIR ...". Like ssh, the command words are joined
# with spaces and run by a shell.
set -eu
if [ "$#" -lt 2 ]; then
  echo "netns_rsh.sh: usage: netns_rsh.sh HOST COMMAND..." >&2
  exit 255
fi
host=$1
shift
for entry in ${KILN_NETNS_HOSTS:-}; do
  name=${entry%%=*}
  rest=${entry#*=}
  if [ "$name" = "$host" ]; then
    ns=${rest%%=*}
    dir=${rest#*=}
    exec ip netns exec "$ns" env TMPDIR="$dir" sh -c "$*"
  fi
done
echo "netns_rsh.sh: no namespace for host '$host' (KILN_NETNS_HOSTS='${KILN_NETNS_HOSTS:-}')" >&2
exit 255
