# Settings shared by the e2e rig's scripts (up.sh, down.sh, images.sh) and
# read by the e2e tests through the files up.sh writes. Sourced, not run.
#
# The rig is one Kubernetes node on this machine, all of it under $E2E_ROOT:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a containerd
# of its own (never the system's socket, state or runc root), the kubelet and
# kube-proxy. It listens on 127.0.0.1 and on NODE_IP, the address of a bridge
# interface it creates (dc-node), never on the machine's own addresses: the
# kubelet refuses a loopback node IP, and pods must reach the API server
# (10.96.0.1 is DNATed by kube-proxy to NODE_IP:6443).

E2E_REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
E2E_ROOT=${DUMPCATCHER_E2E_ROOT:-/var/lib/dumpcatcher-e2e}
E2E_RUN=$E2E_ROOT/run   # pid files, saved sysctls and host state before up
E2E_LOG=$E2E_ROOT/logs  # one log per component
E2E_PKI=$E2E_ROOT/pki
E2E_CONF=$E2E_ROOT/conf # configuration rendered from test/cluster/conf
E2E_IMAGES=$E2E_ROOT/images
E2E_KUBECONFIG=$E2E_ROOT/admin.kubeconfig

E2E_NODE_NAME=dumpcatcher-e2e
# dc-node carries NODE_IP only (a /32: no route is added for anything else).
# The kernel here has no dummy driver; an empty bridge works as well.
E2E_NODE_IF=dc-node
E2E_NODE_IP=10.255.0.1
# Pods live on the CNI bridge (its gateway is the first address).
E2E_CNI_IF=dc-cni0
E2E_POD_CIDR=10.244.0.0/24
E2E_SERVICE_CIDR=10.96.0.0/16
E2E_API_CLUSTER_IP=10.96.0.1
# etcd off its default ports, so that it never meets another etcd (envtest
# picks free ports; a developer's etcd uses 2379).
E2E_ETCD_CLIENT=127.0.0.1:32379
E2E_ETCD_PEER=127.0.0.1:32380

E2E_CTRD_SOCK=$E2E_ROOT/containerd/containerd.sock
# kubectl's discovery and HTTP caches, kept out of ~/.kube.
export KUBECACHEDIR=$E2E_ROOT/kube-cache
E2E_CNI_BIN=/usr/lib/cni # Debian's containernetworking-plugins

# Host settings the kubelet (vm.*, kernel.*), the CNI bridge plugin
# (ip_forward, for a gateway bridge) and kube-proxy change when they start;
# up.sh saves them and down.sh puts them back.
E2E_SYSCTLS=(
	vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes
	net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
	net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
)

# The component binaries: test/tools/install.sh cluster prints their
# directory (built once, about 9 minutes on 2 cores).
e2e_tools() { bash "$E2E_REPO/test/tools/install.sh" cluster | tail -n1; }

e2e_log() { printf 'e2e: %s\n' "$*" >&2; }
e2e_die() { e2e_log "error: $*"; exit 1; }
e2e_require_root() {
	[[ $(id -u) == 0 ]] || e2e_die "$(basename -- "$0") needs root: the rig runs a kubelet and containerd and owns network interfaces, mounts, nft tables and cgroups (run it with sudo)"
}
