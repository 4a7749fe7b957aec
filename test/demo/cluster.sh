#!/usr/bin/env bash
# make demo: dumpcatcher on a real single-node Kubernetes on this machine
# (root). It starts the e2e rig (test/cluster/up.sh; kept running if it is
# up already), installs MinIO, the chart with Helm, an opted-in namespace with
# the credentials Secret and a Java Deployment that runs out of memory, and
# narrates what the webhook injected, the OOM, the upload and the object in
# the bucket. The cluster stays up for exploring until `make demo-down`.
#
# The webhook's TLS comes from cert-manager, for real: cert-manager v1.20.2
# built from its Go module (test/tools/install.sh certmanager, about 6 minutes
# once on 2 cores) and installed with its own chart
# (test/cluster/certmanager.sh install), then the chart with
# certManager.enabled=true. If cert-manager cannot be built, or with
# DEMO_CERT_MANAGER=0, it takes the chart's no-cert-manager path instead: a
# CA and serving certificate made with openssl (tls.secretName, tls.caBundle).
# Either path can follow the other on a running cluster (helm upgrade
# --install with the other values; cert-manager, once installed, stays).
#
# Running it again on a running cluster reinstalls: helm upgrade --install,
# kubectl apply, and the previous oom-app is deleted so that a fresh JVM runs
# out of memory. Every wait is bounded; a step that times out says which
# command shows why.
#
#   test/demo/cluster.sh                       # after make build; cert-manager
#   DEMO_CERT_MANAGER=0 test/demo/cluster.sh   # without cert-manager (openssl CA)
set -euo pipefail
cd "$(dirname "$0")/../.."
# E2E_ROOT, E2E_RUN, E2E_LOG, E2E_KUBECONFIG; exports KUBECACHEDIR into E2E_ROOT.
source test/cluster/env.sh

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
indent() { sed 's/^/   /'; }
kc=$E2E_KUBECONFIG
k="kubectl --kubeconfig=$kc" # for the commands this script prints

fail() { # WHAT [COMMAND THAT SHOWS WHY]
	printf '\n\033[1;31m== make demo failed: %s\033[0m\n' "$1" >&2
	[[ -z ${2:-} ]] || printf '   to see why: %s\n' "$2" >&2
	printf '   component logs: %s/; make demo-down removes the cluster\n' "$E2E_LOG" >&2
	exit 1
}
trap 'fail "line $LINENO: $BASH_COMMAND exited with $?"' ERR

if [[ $(id -u) != 0 ]]; then
	echo "make demo needs root: it starts a real Kubernetes node on this machine (a kubelet and containerd that own" >&2
	echo "network interfaces, mounts, nft tables and cgroups). Run it with sudo, or try 'make demo-local' (no cluster, no root)." >&2
	exit 1
fi
for b in dumpcatcher-webhook dumpcatcher; do
	[[ -x bin/$b ]] || fail "no bin/$b" "make build"
done
for c in kubectl openssl go; do command -v "$c" >/dev/null || fail "$c not found on PATH"; done

case ${DEMO_CERT_MANAGER:=1} in
0 | 1) ;;
*) fail "DEMO_CERT_MANAGER=$DEMO_CERT_MANAGER: 1 (cert-manager, the default) or 0 (an openssl CA)" ;;
esac

t0=$SECONDS
elapsed() { echo "$((SECONDS - t0))s"; }

# wait_until SECONDS WHAT HINT COMMAND...: polls COMMAND every second.
wait_until() {
	local deadline=$((SECONDS + $1)) what=$2 hint=$3
	shift 3
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || fail "$what: not within $(($1))s" "$hint"
		sleep 1
	done
}
# Commands against the cluster never hang: a kubectl, helm or mc call gets
# at most 5 minutes (waits inside them have shorter timeouts of their own).
kctl() { timeout 300 kubectl --kubeconfig="$kc" "$@"; }

# The demo's own files (certificates, chart values, helm's and mc's caches)
# live in the rig's state directory, which down.sh removes.
state=$E2E_ROOT/demo

# ---------------------------------------------------------------------------
say "dumpcatcher on a real single-node Kubernetes on this machine"
tools_dir=${DUMPCATCHER_TOOLS:-$(go env GOMODCACHE)/../dumpcatcher-tools}
cm_version=$(awk '$1 == "github.com/cert-manager/cert-manager" { print $2 }' test/tools/certmanager/go.mod)
if [[ $DEMO_CERT_MANAGER == 1 ]]; then
	cat <<MSG | indent
Steps: the cluster (test/cluster/up.sh), MinIO, cert-manager $cm_version, the chart
with Helm and certManager.enabled=true (cert-manager issues the webhook's
certificate, its cainjector fills in the caBundle), a namespace labelled for
injection with the credentials Secret, and a Java Deployment that runs out of
memory. DEMO_CERT_MANAGER=0 skips cert-manager (an openssl CA instead).
MSG
	if [[ ! -x $tools_dir/bin/cm-controller ]]; then
		echo "   First run on this machine: cert-manager's controller, webhook and cainjector are built from its"
		echo "   Go module first, about 6 minutes on 2 cores (once)."
	fi
else
	cat <<MSG | indent
Steps: the cluster (test/cluster/up.sh), MinIO, the chart with Helm, a namespace
labelled for injection with the credentials Secret, and a Java Deployment that
runs out of memory. DEMO_CERT_MANAGER=0: the webhook's TLS certificate comes
from a CA this script makes with openssl, the chart's no-cert-manager path
(certManager.enabled=false, tls.secretName, tls.caBundle).
MSG
fi

# ---------------------------------------------------------------------------
say "The cluster: etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet, kube-proxy (test/cluster/up.sh)"
if [[ ! -x $tools_dir/bin/kubelet ]]; then
	echo "   First run on this machine: kubelet, kube-apiserver and the other node binaries are built from"
	echo "   pinned Go modules first, with MinIO, Helm and mc about 20 minutes on 2 cores (once; later runs take about a minute)."
fi
if timeout 10 kubectl --kubeconfig="$kc" get --raw /readyz >/dev/null 2>&1; then
	echo "   The cluster is up already: keeping it, and reinstalling the demo on it."
fi
# up.sh narrates on stderr (shown as it goes: the first build takes long)
# and prints the kubeconfig, $E2E_KUBECONFIG, on stdout; it tears down what
# it started when it fails.
timeout 3600 bash test/cluster/up.sh 2>&1 >/dev/null | sed -u 's/^/   /' ||
	fail "test/cluster/up.sh failed (it removed what it had started)" "ls $E2E_LOG; tail -n 30 $E2E_LOG/<component>.log"
mkdir -p "$state"
export MC_CONFIG_DIR=$state/mc HELM_CACHE_HOME=$state/helm/cache HELM_CONFIG_HOME=$state/helm/config \
	HELM_DATA_HOME=$state/helm/data
echo "   up after $(elapsed); KUBECONFIG=$kc"

tools=$(bash test/tools/install.sh helm mc | tail -n1) # built by up.sh already
helm=$tools/helm mc=$tools/mc

# doc FILE KIND: the documents of KIND in a multi-document YAML file.
doc() {
	awk -v k="$2" '
		function flush() { if (d ~ ("(^|\n)kind: " k "\n")) printf "%s---\n", d; d = "" }
		/^---$/ { flush(); next }
		{ d = d $0 "\n" }
		END { flush() }' "$1"
}
# A value of deploy/examples/minio.yaml's root Secret.
minio_secret() { doc deploy/examples/minio.yaml Secret | awk -v k="$1" '$1 == k":" && !n++ { print $2 }'; }

# ---------------------------------------------------------------------------
say "MinIO in namespace minio (deploy/examples/minio.yaml with the rig's image local/minio:e2e)"
echo "   Its setup Job needs a shell and cluster DNS, which the rig has not: this script does the Job's setup"
echo "   from the host with mc over MinIO's ClusterIP (bucket heap-dumps, upload-only policy, user dumpcatcher)."
{
	doc deploy/examples/minio.yaml Namespace
	doc deploy/examples/minio.yaml Secret
	doc deploy/examples/minio.yaml Service
	doc deploy/examples/minio.yaml Deployment | kubectl patch --local -f - --type=json -o yaml -p \
		'[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"local/minio:e2e"},
		  {"op":"add","path":"/spec/template/spec/containers/0/imagePullPolicy","value":"Never"}]'
} | kctl apply -f - | indent
kctl -n minio rollout status deployment/minio --timeout=180s >/dev/null 2>&1 ||
	fail "MinIO not ready within 180s" "$k -n minio describe pods; $k -n minio logs deployment/minio"
minio_ip=$(kctl -n minio get service minio -o jsonpath='{.spec.clusterIP}')
root_user=$(minio_secret MINIO_ROOT_USER) root_password=$(minio_secret MINIO_ROOT_PASSWORD)
upload_user=$(minio_secret UPLOAD_USER) upload_password=$(minio_secret UPLOAD_PASSWORD)
mc_host="http://$root_user:$root_password@$minio_ip:9000"
export MC_HOST_demo=$mc_host
wait_until 60 "MinIO reachable from the host at $minio_ip:9000" "$k -n minio logs deployment/minio" \
	timeout 10 "$mc" ready demo
mcx() { timeout 300 "$mc" "$@"; }
# The policy JSON of the setup Job's heredoc.
sed -n "/<<'EOF'/,/^ *EOF$/p" deploy/examples/minio.yaml | sed '1d;$d' >"$state/policy.json"
mcx mb --ignore-existing demo/heap-dumps >/dev/null
mcx admin policy create demo dumpcatcher-upload "$state/policy.json" >/dev/null
mcx admin user add demo "$upload_user" "$upload_password" >/dev/null
mcx admin policy attach demo dumpcatcher-upload --user "$upload_user" >/dev/null 2>&1 || true # attached on a re-run
echo "   MinIO at http://$minio_ip:9000 (ClusterIP): bucket heap-dumps, user $upload_user with policy dumpcatcher-upload"

# ---------------------------------------------------------------------------
# The webhook's serving certificate: cert-manager (DEMO_CERT_MANAGER=1, the
# default) or, with DEMO_CERT_MANAGER=0 or when cert-manager cannot be built,
# a CA made with openssl. Both set chart_tls, the chart arguments for it.
#
# cm_build: cert-manager's binaries (test/tools/install.sh certmanager; cached
# after the first build). Fails when they cannot be built: the demo then goes
# on without cert-manager.
cm_build() {
	cat <<MSG | indent
Its controller, webhook and cainjector are built from github.com/cert-manager/cert-manager $cm_version
with three small mains of ours (test/tools/certmanager: cert-manager's own cmd/* modules are not on
the Go module proxy), as images local/cert-manager-{controller,webhook,cainjector}:e2e assembled
without Docker, and installed with cert-manager's own chart from that module (release and namespace
cert-manager, its CRDs included).
MSG
	if [[ ! -x $tools_dir/bin/cm-controller ]]; then
		echo "   First run on this machine: building them, about 6 minutes on 2 cores (once; cached afterwards)."
	fi
	timeout 1800 bash test/tools/install.sh certmanager 2>&1 >/dev/null | sed -u 's/^/   /' && return
	echo "   cert-manager could not be built from its Go module (see above): the demo goes on without it, on the"
	echo "   chart's no-cert-manager path (as DEMO_CERT_MANAGER=0 does)."
	return 1
}
# cm_install: cert-manager on the cluster, or upgraded in place on a re-run.
cm_install() {
	local start=$SECONDS
	if timeout 30 "$helm" --kubeconfig "$kc" status cert-manager -n cert-manager >/dev/null 2>&1; then
		echo "   cert-manager is installed already: helm upgrade --install keeps it (same images, nothing restarts)."
	fi
	# certmanager.sh narrates on stderr; it waits until cert-manager's webhook
	# admits a dry-run Issuer (bounded: helm --wait 5m, the probe 2m).
	timeout 900 bash test/cluster/certmanager.sh install 2>&1 >/dev/null | sed -u 's/^/   /' ||
		fail "test/cluster/certmanager.sh install failed (DEMO_CERT_MANAGER=0 make demo runs without cert-manager)" \
			"$k -n cert-manager get pods; $k -n cert-manager describe pods; $k -n cert-manager logs deployment/cert-manager"
	kctl -n cert-manager get deployments | indent
	echo "   cert-manager $cm_version ready after $((SECONDS - start))s: its webhook admits a dry-run Issuer."
}
webhook_tls_cert_manager() {
	chart_tls=(--set certManager.enabled=true)
	echo "   TLS from cert-manager (certManager.enabled=true): the chart makes a self-signed Issuer, a CA Certificate"
	echo "   dumpcatcher-ca with its Issuer, and the serving Certificate dumpcatcher-tls (Secret dumpcatcher/dumpcatcher-tls);"
	echo "   cert-manager's cainjector copies that CA into the webhook configuration's caBundle."
}
webhook_tls_own_ca() {
	local d=$state/tls svc=dumpcatcher.dumpcatcher.svc
	mkdir -p "$d"
	# Kept while the cluster lives (down.sh removes $state): a re-run keeps
	# the certificate the running webhook already serves.
	if [[ ! -f $d/tls.crt ]]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" \
			-subj /CN=dumpcatcher-demo-webhook-ca -days 30 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/tls.key" -out "$d/tls.csr" \
			-subj "/CN=$svc" 2>/dev/null
		printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth \
			"subjectAltName=DNS:dumpcatcher,DNS:dumpcatcher.dumpcatcher,DNS:$svc,DNS:$svc.cluster.local" >"$d/ext"
		openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
			-extfile "$d/ext" -out "$d/tls.crt" 2>/dev/null
	fi
	kctl -n dumpcatcher create secret tls dumpcatcher-demo-tls --cert "$d/tls.crt" --key "$d/tls.key" \
		--dry-run=client -o yaml | kctl apply -f - >/dev/null
	echo "   TLS without cert-manager: a CA and the serving certificate for $svc made with openssl"
	echo "   ($d), in the Secret dumpcatcher/dumpcatcher-demo-tls; the CA goes into the chart's tls.caBundle."
	if timeout 30 "$helm" --kubeconfig "$kc" status cert-manager -n cert-manager >/dev/null 2>&1; then
		echo "   cert-manager, installed by an earlier run, stays on the cluster; the chart no longer uses it."
	fi
	chart_tls=(--set certManager.enabled=false --set tls.secretName=dumpcatcher-demo-tls --set-file "tls.caBundle=$d/ca.crt")
}

# After the chart with certManager.enabled=true: its Certificates Ready, and
# the caBundle the CA of the serving certificate's Secret.
ca_fingerprint() { base64 -d | openssl x509 -noout -fingerprint -sha256 2>/dev/null; }
ca_injected() {
	local want got
	want=$(kctl -n dumpcatcher get secret dumpcatcher-tls -o jsonpath='{.data.ca\.crt}' | ca_fingerprint) &&
		got=$(kctl get mutatingwebhookconfiguration dumpcatcher -o jsonpath='{.webhooks[0].clientConfig.caBundle}' |
			ca_fingerprint) && [[ -n $want && $got == "$want" ]]
}
cert_manager_issued() {
	kctl -n dumpcatcher wait --for=condition=Ready certificate --all --timeout=120s >/dev/null 2>&1 ||
		fail "the chart's Certificates not Ready within 120s" \
			"$k -n dumpcatcher describe certificates,certificaterequests,issuers; $k -n cert-manager logs deployment/cert-manager"
	echo "   \$ kubectl -n dumpcatcher get certificates"
	kctl -n dumpcatcher get certificates | indent
	kctl -n dumpcatcher get secret dumpcatcher-tls -o jsonpath='{.data.tls\.crt}' | base64 -d |
		openssl x509 -noout -issuer -enddate -ext subjectAltName 2>/dev/null | sed 's/^ *//' | indent
	wait_until 60 "cainjector filling in the caBundle of mutatingwebhookconfiguration/dumpcatcher" \
		"$k -n cert-manager logs deployment/cert-manager-cainjector; $k get mutatingwebhookconfiguration dumpcatcher -o yaml" ca_injected
	echo "   cainjector filled in the caBundle of mutatingwebhookconfiguration/dumpcatcher: the CA" \
		"$(kctl get mutatingwebhookconfiguration dumpcatcher -o jsonpath='{.webhooks[0].clientConfig.caBundle}' |
			base64 -d | openssl x509 -noout -subject 2>/dev/null | sed 's/^subject=//'),"
	echo "   the ca.crt of Secret dumpcatcher/dumpcatcher-tls (annotation cert-manager.io/inject-ca-from: dumpcatcher/dumpcatcher-tls)"
}

tls_path=own-ca
if [[ $DEMO_CERT_MANAGER == 1 ]]; then
	say "cert-manager $cm_version, built from its Go module (test/cluster/certmanager.sh install)"
	start=$SECONDS
	if cm_build; then
		echo "   built (or found in the cache) in $((SECONDS - start))s"
		cm_install
		tls_path=cert-manager
	fi
fi

say "The webhook: the chart charts/dumpcatcher with Helm, release dumpcatcher in namespace dumpcatcher"
chart_tls=()
kctl create namespace dumpcatcher --dry-run=client -o yaml | kctl apply -f - >/dev/null
if [[ $tls_path == cert-manager ]]; then webhook_tls_cert_manager; else webhook_tls_own_ca; fi
destination="s3://heap-dumps/demo?endpoint=http://$minio_ip:9000&path-style=true"
# The webhook's binary is in the image under the tag e2e whatever it is: its
# checksum in a pod annotation rolls the webhook when make build changed it.
build=$(sha256sum bin/dumpcatcher-webhook | cut -c1-12)
cat >"$state/values.yaml" <<VALUES
# The rig's images (imported into its containerd, never pulled) and the demo MinIO.
replicaCount: 1
image:
  tag: e2e
  pullPolicy: Never
podAnnotations:
  demo.dumpcatcher.io/webhook-binary: "$build"
config:
  destination: "$destination"
  credentialsSecret: dumpcatcher-s3
  sidecar:
    image:
      tag: e2e
    imagePullPolicy: Never
VALUES
echo "   \$ helm upgrade --install dumpcatcher charts/dumpcatcher -n dumpcatcher -f $state/values.yaml ${chart_tls[*]} --wait"
grep -v '^#' "$state/values.yaml" | indent
timeout 300 "$helm" --kubeconfig "$kc" upgrade --install dumpcatcher charts/dumpcatcher -n dumpcatcher \
	-f "$state/values.yaml" "${chart_tls[@]}" --wait --timeout 3m >"$state/helm.out" 2>&1 ||
	{ indent <"$state/helm.out"; fail "helm upgrade --install failed or did not finish within 3m (its output above)" \
		"$k -n dumpcatcher describe pods; $k -n dumpcatcher logs deployment/dumpcatcher"; }
grep -E '^(STATUS|REVISION):' "$state/helm.out" | indent
[[ $tls_path != cert-manager ]] || cert_manager_issued

# ---------------------------------------------------------------------------
say "The app namespace oom-demo: labelled dumpcatcher.io/inject=enabled, with the credentials Secret dumpcatcher-s3"
kctl create namespace oom-demo --dry-run=client -o yaml | kctl apply -f - >/dev/null
kctl label namespace oom-demo dumpcatcher.io/inject=enabled --overwrite >/dev/null
kctl -n oom-demo apply -f deploy/examples/credentials-secret.yaml | indent
kctl get namespace oom-demo --show-labels | indent

# The API server calls the webhook through its Service's ClusterIP; with
# failurePolicy Ignore a pod created before that is admitted uninjected, so
# wait until a dry-run pod comes back injected.
probe='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"probe","namespace":"oom-demo"},
	"spec":{"containers":[{"name":"app","image":"local/jre17:e2e"}]}}'
injected_probe() {
	local out
	out=$(kctl create --dry-run=server -o yaml -f - <<<"$probe" 2>/dev/null) && [[ $out == *dumpcatcher.io/status* ]]
}
wait_until 120 "the API server calling the webhook" \
	"$k -n dumpcatcher logs deployment/dumpcatcher; $k get mutatingwebhookconfigurations -o yaml" injected_probe
echo "   the API server calls the webhook (a dry-run pod in oom-demo comes back injected)"

# ---------------------------------------------------------------------------
say "The app: deploy/examples/oom-app.yaml, with the rig's JRE image (local/jre17:e2e, Oom compiled in, no JDK)"
if kctl -n oom-demo get deployment oom-app >/dev/null 2>&1; then
	echo "   deleting the oom-app of an earlier run, so that a fresh JVM runs out of memory"
	kctl -n oom-demo delete deployment oom-app --wait=true --timeout=120s >/dev/null ||
		fail "the old oom-app not deleted within 120s" "$k -n oom-demo get pods"
	kctl -n oom-demo wait --for=delete pod -l app=oom-app --timeout=120s >/dev/null 2>&1 ||
		fail "the old oom-app pods not gone within 120s" "$k -n oom-demo describe pods -l app=oom-app"
fi
{
	doc deploy/examples/oom-app.yaml ConfigMap
	doc deploy/examples/oom-app.yaml Deployment | kubectl patch --local -f - --type=json -o yaml -p \
		'[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"local/jre17:e2e"},
		  {"op":"add","path":"/spec/template/spec/containers/0/imagePullPolicy","value":"Never"},
		  {"op":"replace","path":"/spec/template/spec/containers/0/command","value":["java","-Xmx64m","-cp","/opt/oom","Oom"]}]'
} | kctl -n oom-demo apply -f - | indent
echo "   the app container runs: java -Xmx64m -cp /opt/oom Oom (JAVA_TOOL_OPTIONS=-XX:+UseSerialGC -Dfile.encoding=UTF-8)"

# ---------------------------------------------------------------------------
# The pod of the Deployment's template as the API server admits it without
# dumpcatcher (namespace default: not opted in) and with it (oom-demo), both
# with --dry-run=server, so that the API server's own defaults are in both and
# the diff is the webhook's alone.
say "What the webhook injected: a pod of oom-app's template, admitted in namespace default (not opted in) vs oom-demo"
tmpl=$(kctl -n oom-demo get deployment oom-app -o jsonpath='{.spec.template}')
printf '{"apiVersion":"v1","kind":"Pod",%s' "${tmpl#\{}" |
	kubectl patch --local -f - --type=merge -p '{"metadata":{"name":"oom-app"}}' -o json >"$state/pod.json"
# clean: the admitted pod without what differs between any two pods (uid,
# timestamps, namespace, status, the service account token volume's suffix).
clean() {
	awk '
		/^status:/ { skip = 1; next }
		/^[a-z]/ { skip = 0 }
		skip { next }
		/^  (creationTimestamp|uid|resourceVersion|namespace|generation):/ { next }
		{ print }' | sed -E 's/kube-api-access-[a-z0-9]+/kube-api-access-xxxxx/'
}
kctl -n default create --dry-run=server -o yaml -f "$state/pod.json" 2>/dev/null | clean >"$state/pod.plain.yaml"
kctl -n oom-demo create --dry-run=server -o yaml -f "$state/pod.json" 2>"$state/warnings.txt" | clean >"$state/pod.injected.yaml"
echo "   \$ kubectl -n oom-demo create --dry-run=server -o yaml -f pod.json    (and the same with -n default)"
echo "   (a bare pod, hence --workload=pod/oom-app; the Deployment's pods get deployment/oom-app)"
diff -u --label "pod in default (no dumpcatcher)" --label "pod in oom-demo (injected)" \
	"$state/pod.plain.yaml" "$state/pod.injected.yaml" | indent || true
echo
echo "   Warnings the API server returned (kubectl prints them):"
if [[ -s $state/warnings.txt ]]; then indent <"$state/warnings.txt"; else echo "   (none)"; fi

# ---------------------------------------------------------------------------
say "The Deployment's pod"
pod=
get_pod() { pod=$(kctl -n oom-demo get pods -l app=oom-app -o jsonpath='{.items[0].metadata.name}' 2>/dev/null) && [[ -n $pod ]]; }
wait_until 120 "the oom-app pod created" "$k -n oom-demo describe deployment oom-app; $k -n oom-demo get events" get_pod
kctl -n oom-demo get pod "$pod" -o jsonpath='   {.metadata.name}: init container {.spec.initContainers[0].name} with restartPolicy {.spec.initContainers[0].restartPolicy} (a native sidecar), container {.spec.containers[0].name}{"\n"}'
echo "   status annotation: $(kctl -n oom-demo get pod "$pod" -o jsonpath='{.metadata.annotations.dumpcatcher\.io/status}')"

# ---------------------------------------------------------------------------
say "The JVM runs out of memory (the app container's log, kubectl logs $pod -c app --previous)"
restarted() { [[ $(kctl -n oom-demo get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="app")].restartCount}') -ge 1 ]]; }
wait_until 240 "the app container ending (restartCount >= 1)" \
	"$k -n oom-demo describe pod $pod; $k -n oom-demo logs $pod -c app" restarted
kctl -n oom-demo logs "$pod" -c app --previous | indent
kctl -n oom-demo get pod "$pod" -o jsonpath='{range .status.containerStatuses[?(@.name=="app")]}   the container exited with code {.lastState.terminated.exitCode} ({.lastState.terminated.reason}) and the kubelet restarted it (restartCount {.restartCount}){end}{"\n"}'

# ---------------------------------------------------------------------------
say "The uploader sidecar delivers the dump (kubectl logs $pod -c dumpcatcher)"
uploader_log=
delivered() {
	uploader_log=$(kctl -n oom-demo logs "$pod" -c dumpcatcher 2>/dev/null) && [[ $uploader_log == *'"msg":"delivered"'* ]]
}
wait_until 180 "the uploader's \"delivered\" log line" "$k -n oom-demo logs $pod -c dumpcatcher" delivered
awk '/"msg":"delivered"/ && !n++' <<<"$uploader_log" | indent

# ---------------------------------------------------------------------------
prefix=heap-dumps/demo/oom-demo/deployment-oom-app/$pod/app/
say "The object in MinIO (mc ls, mc stat)"
objects=$(mcx ls --recursive "demo/$prefix")
indent <<<"$objects"
key=$(awk '$NF ~ /-oom-/ && !n++ { print $NF }' <<<"$objects")
[[ -n $key ]] || fail "no -oom- object under $prefix" "$k -n oom-demo logs $pod -c dumpcatcher"
mcx stat "demo/$prefix$key" | indent

say "To download it (MinIO's root user at its ClusterIP; paste as root on this machine):"
file=$(basename "$key" .gz)
echo "   MC_HOST_demo=$mc_host $mc cat demo/$prefix$key | gunzip > $file"
echo "   # then open $file in Eclipse MAT or VisualVM"

# ---------------------------------------------------------------------------
say "Done in $(elapsed). The cluster stays up for exploring:"
cat <<MSG | indent
export KUBECONFIG=$kc
kubectl -n oom-demo get pods            # the app keeps running out of memory; each restart adds a dump
kubectl -n oom-demo logs deploy/oom-app -c dumpcatcher
kubectl -n dumpcatcher logs deploy/dumpcatcher   # one JSON line per admission
MC_HOST_demo=$mc_host $mc ls --recursive demo/heap-dumps

make demo-down   # removes the cluster and everything it changed on this machine
MSG
