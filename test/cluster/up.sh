#!/usr/bin/env bash
# Starts the e2e rig: one real Kubernetes node on this machine (root).
#
#   test/cluster/up.sh      # prints the admin kubeconfig's path as the LAST line of stdout
#   test/cluster/down.sh    # removes all of it again
#
# Components, all under $E2E_ROOT (env.sh) and started as background
# processes whose pids go to $E2E_RUN: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler (built by test/tools/install.sh),
# a containerd of its own with Debian's runc and CNI plugins, the kubelet and
# kube-proxy (nftables). Images are assembled by images.sh from `make build`
# output and imported, never pulled; there is no cluster DNS (reach Services
# by ClusterIP). Safe to run again: running components and existing
# certificates are kept. Any failure tears everything down (down.sh); the
# logs stay in $E2E_LOG.
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"
e2e_require_root
exec 3>&1 1>&2 # stdout is reserved for the kubeconfig line

t0=$(date +%s%N)
ts() { printf 'e2e: [%5.1fs] %s\n' "$(( ($(date +%s%N) - t0) / 1000000 ))e-3" "$*"; }

ok=
on_exit() {
	local rc=$?
	[[ -z $ok ]] || return 0
	e2e_log "up failed (exit $rc); tearing down. Logs: $E2E_LOG"
	bash "$E2E_REPO/test/cluster/down.sh" || true
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM # through on_exit too

# Debian's containerd, runc and CNI plugins; nft for kube-proxy's rules.
missing=()
for c in containerd:containerd runc:runc nft:nftables "$E2E_CNI_BIN/bridge:containernetworking-plugins"; do
	command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}")
done
if ((${#missing[@]})); then
	ts "installing ${missing[*]} (apt-get)"
	# Without package lists (a fresh image may have none) after an update.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
for c in openssl kubectl envsubst; do command -v "$c" >/dev/null || e2e_die "$c not found"; done
[[ $(stat -fc %T /sys/fs/cgroup) == tmpfs ]] || e2e_log "warning: the rig is only proven on cgroup v1"

tools=$(e2e_tools)
ts "tools in $tools"
mkdir -p "$E2E_RUN" "$E2E_LOG" "$E2E_CONF/cni" "$E2E_PKI" "$E2E_ROOT"/{etcd,containerd,kubelet,cni}

# Host state before the rig touched it, once (a second up.sh must not take
# the rig's own changes for the host's): sysctls, nft tables, network
# namespaces, and the host directories the components write into whatever
# their configuration says (containerd's shim sockets, libcni's cache, the
# kubelet's /var/log/containers links and /var/lib/kubelet/device-plugins).
if [[ ! -f $E2E_RUN/host.saved ]]; then
	for k in "${E2E_SYSCTLS[@]}"; do
		v=$(sysctl -n "$k" 2>/dev/null) && printf '%s=%s\n' "$k" "$v"
	done >"$E2E_RUN/sysctl.orig"
	nft list tables >"$E2E_RUN/nft.orig" 2>/dev/null || true
	ls /run/netns >"$E2E_RUN/netns.orig" 2>/dev/null || true
	for d in /run/containerd /var/lib/cni /var/log/containers /run/netns /var/lib/kubelet; do
		[[ -e $d ]] && echo "$d"
	done >"$E2E_RUN/dirs.orig"
	touch "$E2E_RUN/host.saved"
fi

if ! ip link show "$E2E_NODE_IF" >/dev/null 2>&1; then
	ip link add "$E2E_NODE_IF" type bridge
	ip addr add "$E2E_NODE_IP/32" dev "$E2E_NODE_IF"
	ip link set "$E2E_NODE_IF" up
	ts "interface $E2E_NODE_IF with $E2E_NODE_IP"
fi

# Images: rebuilt when what goes into them changed (content, not times:
# make build rewrites bin/ every time): make build's output, the
# Dockerfiles, the example app, the Hold program, the image script.
inputs=$(cat "$E2E_REPO"/bin/* "$E2E_REPO"/Dockerfile.* "$E2E_REPO/deploy/examples/oom-app.yaml" \
	"$E2E_REPO/sidecar/hprof/hproftest/hold.go" "$E2E_REPO/test/cluster/images.sh" 2>/dev/null | sha256sum | cut -d' ' -f1)
if [[ ! -f $E2E_IMAGES/jre.tar || $(cat "$E2E_IMAGES/inputs.sha256" 2>/dev/null) != "$inputs" ]]; then
	bash "$E2E_REPO/test/cluster/images.sh"
	echo "$inputs" >"$E2E_IMAGES/inputs.sha256"
	ts "images assembled"
fi

# --- PKI: one CA signs everything (openssl only); kept across runs.
pki() {
	cd "$E2E_PKI"
	[[ -f ca.key ]] || {
		openssl genrsa -out ca.key 2048 2>/dev/null
		openssl req -x509 -new -nodes -key ca.key -subj /CN=dumpcatcher-e2e-ca -days 30 -out ca.crt
	}
	[[ -f sa.key ]] || {
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	}
	# cert NAME SUBJECT EKU [SAN]
	cert() {
		[[ -f $1.crt ]] && return 0
		openssl genrsa -out "$1.key" 2048 2>/dev/null
		openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
		{
			echo basicConstraints=CA:FALSE
			echo keyUsage=critical,digitalSignature,keyEncipherment
			echo "extendedKeyUsage=$3"
			[[ -z ${4:-} ]] || echo "subjectAltName=$4"
		} >"$1.ext"
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
		rm -f "$1.csr" "$1.ext"
	}
	cert apiserver /CN=kube-apiserver serverAuth \
		"DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$E2E_API_CLUSTER_IP,IP:$E2E_NODE_IP"
	cert apiserver-kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client clientAuth
	cert admin /O=system:masters/CN=dumpcatcher-e2e-admin clientAuth
	cert controller-manager /CN=system:kube-controller-manager clientAuth
	cert scheduler /CN=system:kube-scheduler clientAuth
	cert kube-proxy /CN=system:kube-proxy clientAuth
	cert kubelet "/O=system:nodes/CN=system:node:$E2E_NODE_NAME" clientAuth
	cert kubelet-serving "/O=system:nodes/CN=system:node:$E2E_NODE_NAME" serverAuth \
		"DNS:$E2E_NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$E2E_NODE_IP"
	local n
	for n in admin controller-manager scheduler kube-proxy kubelet; do
		local kc=$E2E_ROOT/$n.kubeconfig
		[[ -f $kc ]] && continue
		kubectl config --kubeconfig="$kc.tmp" set-cluster e2e --server="https://$E2E_NODE_IP:6443" \
			--certificate-authority=ca.crt --embed-certs >/dev/null
		kubectl config --kubeconfig="$kc.tmp" set-credentials "$n" --client-certificate="$n.crt" \
			--client-key="$n.key" --embed-certs >/dev/null
		kubectl config --kubeconfig="$kc.tmp" set-context e2e --cluster=e2e --user="$n" >/dev/null
		kubectl config --kubeconfig="$kc.tmp" use-context e2e >/dev/null
		mv "$kc.tmp" "$kc"
	done
	cd - >/dev/null
}
pki
ts "PKI and kubeconfigs in $E2E_PKI"

# --- configuration: conf/* with env.sh's settings filled in.
vars='$E2E_ROOT $E2E_PKI $E2E_CONF $E2E_CTRD_SOCK $E2E_CNI_BIN $E2E_CNI_IF $E2E_POD_CIDR $E2E_NODE_IP $E2E_NODE_NAME'
export E2E_ROOT E2E_PKI E2E_CONF E2E_CTRD_SOCK E2E_CNI_BIN E2E_CNI_IF E2E_POD_CIDR E2E_NODE_IP E2E_NODE_NAME
# Rewritten only when the content changes: kube-proxy exits when its
# configuration file is written under it (a second up.sh would leave the
# cluster without Service routing).
render() { # TEMPLATE DEST
	envsubst "$vars" <"$E2E_REPO/test/cluster/conf/$1" >"$2.new"
	if cmp -s "$2.new" "$2"; then rm -f "$2.new"; else mv -f "$2.new" "$2"; fi
}
for f in containerd.toml kubelet.yaml kube-proxy.yaml; do
	render "$f" "$E2E_CONF/$f"
done
render 10-bridge.conflist "$E2E_CONF/cni/10-bridge.conflist"

alive() { [[ -f $E2E_RUN/$1.pid ]] && kill -0 "$(<"$E2E_RUN/$1.pid")" 2>/dev/null; }
start() { # NAME COMMAND...: in its own session, so it outlives this script
	local name=$1
	shift
	if alive "$name"; then
		ts "$name already running (pid $(<"$E2E_RUN/$name.pid"))"
		return
	fi
	echo "=== $(date -u +%FT%TZ) $*" >>"$E2E_LOG/$name.log"
	setsid "$@" >>"$E2E_LOG/$name.log" 2>&1 </dev/null 3>&- &
	echo $! >"$E2E_RUN/$name.pid"
	ts "started $name (pid $!)"
}
wait_for() { # WHAT SECONDS COMMAND...
	local what=$1 deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || e2e_die "$what not ready after $((SECONDS - deadline + $2))s"
		sleep 0.5
	done
	ts "$what ready"
}
export KUBECONFIG=$E2E_KUBECONFIG

start etcd "$tools/etcd" --name e2e --data-dir "$E2E_ROOT/etcd" \
	--listen-client-urls "http://$E2E_ETCD_CLIENT" --advertise-client-urls "http://$E2E_ETCD_CLIENT" \
	--listen-peer-urls "http://$E2E_ETCD_PEER" --initial-advertise-peer-urls "http://$E2E_ETCD_PEER" \
	--initial-cluster "e2e=http://$E2E_ETCD_PEER" --unsafe-no-fsync --log-level warn
start containerd containerd --config "$E2E_CONF/containerd.toml"
wait_for etcd 60 curl -sf "http://$E2E_ETCD_CLIENT/health"

# The API server binds to NODE_IP: pods reach it there through 10.96.0.1.
start kube-apiserver "$tools/kube-apiserver" \
	--etcd-servers="http://$E2E_ETCD_CLIENT" \
	--bind-address="$E2E_NODE_IP" --secure-port=6443 --advertise-address="$E2E_NODE_IP" \
	--tls-cert-file="$E2E_PKI/apiserver.crt" --tls-private-key-file="$E2E_PKI/apiserver.key" \
	--client-ca-file="$E2E_PKI/ca.crt" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$E2E_PKI/sa.pub" --service-account-signing-key-file="$E2E_PKI/sa.key" \
	--service-cluster-ip-range="$E2E_SERVICE_CIDR" \
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
	--kubelet-client-certificate="$E2E_PKI/apiserver-kubelet-client.crt" \
	--kubelet-client-key="$E2E_PKI/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority="$E2E_PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
	--profiling=false --v=1

wait_for containerd 60 ctr --address "$E2E_CTRD_SOCK" version
for img in "$E2E_IMAGES"/*.tar; do
	ctr --address "$E2E_CTRD_SOCK" -n k8s.io images import "$img" >/dev/null
done
ts "imported $(ls "$E2E_IMAGES"/*.tar | wc -l) images"

wait_for kube-apiserver 120 kubectl get --raw /readyz

start kube-controller-manager "$tools/kube-controller-manager" \
	--kubeconfig="$E2E_ROOT/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$E2E_ROOT/controller-manager.kubeconfig" \
	--authorization-kubeconfig="$E2E_ROOT/controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
	--service-account-private-key-file="$E2E_PKI/sa.key" --root-ca-file="$E2E_PKI/ca.crt" \
	--use-service-account-credentials=true \
	--cluster-signing-cert-file="$E2E_PKI/ca.crt" --cluster-signing-key-file="$E2E_PKI/ca.key" \
	--service-cluster-ip-range="$E2E_SERVICE_CIDR" --profiling=false --v=1
start kube-scheduler "$tools/kube-scheduler" \
	--kubeconfig="$E2E_ROOT/scheduler.kubeconfig" \
	--authentication-kubeconfig="$E2E_ROOT/scheduler.kubeconfig" \
	--authorization-kubeconfig="$E2E_ROOT/scheduler.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --profiling=false --v=1
start kubelet "$tools/kubelet" \
	--config="$E2E_CONF/kubelet.yaml" --kubeconfig="$E2E_ROOT/kubelet.kubeconfig" \
	--root-dir="$E2E_ROOT/kubelet/root" --cert-dir="$E2E_ROOT/kubelet/pki" \
	--hostname-override="$E2E_NODE_NAME" --node-ip="$E2E_NODE_IP" --v=1
start kube-proxy "$tools/kube-proxy" --config="$E2E_CONF/kube-proxy.yaml" --v=1

wait_for "node $E2E_NODE_NAME" 180 kubectl wait --for=condition=Ready "node/$E2E_NODE_NAME" --timeout=2s
wait_for "default ServiceAccount" 60 kubectl get serviceaccount default -n default
for c in etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
	alive "$c" || { tail -n 20 "$E2E_LOG/$c.log" >&2; e2e_die "$c exited (log above)"; }
done
ok=1
ts "cluster up: KUBECONFIG=$E2E_KUBECONFIG"
printf '%s\n' "$E2E_KUBECONFIG" >&3
