#!/usr/bin/env bash
# Removes the e2e rig (up.sh) and whatever it left on the host, also after a
# failed or partial up.sh: processes by the pids up.sh recorded, pod sandboxes
# (over CRI, so the CNI plugins release their addresses and veths), leftover
# container processes (by the rig's kubepods cgroups), mounts under
# $E2E_ROOT and the network namespaces it created, kube-proxy's nft tables,
# the two bridges, the kubepods cgroups, the host sysctls the kubelet and the
# CNI plugin changed, and the cluster state. The images and logs stay for the
# next run (--purge removes them too).
#
#   test/cluster/down.sh [--purge]
set -uo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"
e2e_require_root
purge=
[[ ${1:-} != --purge ]] || purge=1
t0=$SECONDS
export KUBECONFIG=$E2E_KUBECONFIG
tools=$(bash "$E2E_REPO/test/tools/install.sh" cri | tail -n1)

pid_of() { [[ -f $E2E_RUN/$1.pid ]] && cat "$E2E_RUN/$1.pid"; }
alive() { local p; p=$(pid_of "$1") && kill -0 "$p" 2>/dev/null; }
stop() { # NAME [SECONDS]: SIGTERM, then SIGKILL after SECONDS
	local name=$1 p i
	if ! alive "$name"; then
		rm -f "$E2E_RUN/$name.pid"
		return
	fi
	p=$(pid_of "$name")
	local start=$SECONDS
	kill -TERM "$p"
	for ((i = 0; i < ${2:-20} * 10; i++)); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$p" 2>/dev/null; then
		e2e_log "$name ($p) still running, SIGKILL"
		kill -KILL "$p"
	fi
	rm -f "$E2E_RUN/$name.pid"
	e2e_log "stopped $name ($p) in $((SECONDS - start))s"
}

# 1. Nothing recreates pods once the controllers are gone; pods deleted
#    through the API while the kubelet runs get their preStop hooks and a
#    clean volume and network teardown.
stop kube-controller-manager
stop kube-scheduler
if alive kube-apiserver && alive kubelet; then
	kubectl delete pods --all --all-namespaces --wait --timeout=60s 2>&1 | tail -n3 >&2 || true
fi
stop kube-proxy
stop kubelet
# 2. What is left, through CRI: stops containers, releases the CNI setup.
if alive containerd; then
	timeout 90 "$tools/cri" "$E2E_CTRD_SOCK" rm-all >&2 || e2e_log "warning: not every sandbox removed over CRI"
fi
stop kube-apiserver
stop containerd
stop etcd
# 3. Processes that outlived their manager: shims of this containerd (their
#    command line names its socket) and anything still in the rig's kubepods
#    cgroups.
for d in /proc/[0-9]*; do
	cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
	if [[ $cmd == *containerd-shim*"-address $E2E_CTRD_SOCK "* ]]; then
		e2e_log "killing shim ${d#/proc/}"
		kill -KILL "${d#/proc/}" 2>/dev/null
	fi
done
for p in $(cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
	/sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs 2>/dev/null | sort -u); do
	e2e_log "killing container process $p"
	kill -KILL "$p" 2>/dev/null
done
sleep 0.5

# 4. Mounts: everything below E2E_ROOT (deepest first), and the network
#    namespaces that were not there before up.sh.
mapfile -t mounts < <(awk -v r="$E2E_ROOT/" 'index($5, r) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
for m in "${mounts[@]}"; do
	umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || e2e_log "warning: cannot unmount $m"
done
for ns in /run/netns/*; do
	[[ -e $ns ]] || continue
	grep -qxF "$(basename -- "$ns")" "$E2E_RUN/netns.orig" 2>/dev/null && continue
	umount "$ns" 2>/dev/null
	rm -f -- "$ns" && e2e_log "removed network namespace $ns"
done

# 5. Network: kube-proxy's nft tables (only kube-proxy names them so), the
#    CNI bridge and the node interface.
for fam in ip ip6; do
	nft delete table "$fam" kube-proxy 2>/dev/null && e2e_log "deleted nft table $fam kube-proxy"
done
for ifc in "$E2E_CNI_IF" "$E2E_NODE_IF"; do
	ip link del "$ifc" 2>/dev/null && e2e_log "deleted interface $ifc"
done
if [[ -f $E2E_RUN/nft.orig ]] && ! diff -q <(nft list tables 2>/dev/null) "$E2E_RUN/nft.orig" >/dev/null; then
	e2e_log "warning: nft tables differ from before up.sh:"
	diff <(nft list tables 2>/dev/null) "$E2E_RUN/nft.orig" >&2
fi

# 6. The kubelet's cgroups (cgroupfs driver: kubepods under each v1
#    hierarchy), innermost first.
for c in /sys/fs/cgroup/*/kubepods; do
	[[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
done
for c in /sys/fs/cgroup/*/kubepods; do
	[[ -d $c ]] && e2e_log "warning: cgroup $c left"
done

# 7. Host sysctls back to what up.sh found.
if [[ -f $E2E_RUN/sysctl.orig ]]; then
	while IFS='=' read -r k v; do
		[[ $(sysctl -n "$k" 2>/dev/null) == "$v" ]] && continue
		sysctl -q -w "$k=$v" && e2e_log "restored $k=$v"
	done <"$E2E_RUN/sysctl.orig"
fi

# 8. Host directories the components wrote into: the kubelet's
#    /var/log/containers links into E2E_ROOT, libcni's cache entries of the
#    rig's network, containerd's shim socket directory, the kubelet's
#    device-plugins directory; each directory goes only if up.sh did not find
#    it, and only when nothing but sockets and empty directories is left.
for l in /var/log/containers/*; do
	[[ -L $l && $(readlink -- "$l") == "$E2E_ROOT"/* ]] && rm -f -- "$l"
done
rm -f /var/lib/cni/results/dumpcatcher-e2e-* 2>/dev/null
for d in /var/log/containers /var/lib/cni /run/containerd /run/netns /var/lib/kubelet; do
	grep -qxF "$d" "$E2E_RUN/dirs.orig" 2>/dev/null && continue
	[[ -d $d ]] || continue
	# sockets of stopped processes (the kubelet's device-plugins/kubelet.sock)
	find "$d" -depth \( -type s -o -type d -empty \) -delete 2>/dev/null
	[[ -e $d ]] && e2e_log "warning: $d left (not empty)"
done

# 9. Cluster state; never through a mount that is still there.
if awk -v r="$E2E_ROOT/" 'index($5, r) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
	e2e_log "error: mounts left under $E2E_ROOT; state kept"
	exit 1
fi
keep=(images logs)
[[ -z $purge ]] || keep=()
if [[ -d $E2E_ROOT ]]; then
	for f in "$E2E_ROOT"/* "$E2E_ROOT"/.[!.]*; do
		[[ -e $f ]] || continue
		[[ " ${keep[*]} " == *" $(basename -- "$f") "* ]] && continue
		rm -rf --one-file-system -- "$f"
	done
	[[ -z $purge ]] || rmdir "$E2E_ROOT"
fi
e2e_log "down in $((SECONDS - t0))s"
