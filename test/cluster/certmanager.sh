#!/usr/bin/env bash
# cert-manager on the e2e rig (up.sh), for the chart's certManager.enabled=true
# (root, the rig up):
#
#   test/cluster/certmanager.sh install    # build, images, import, helm install, wait until the API server calls its webhook
#   test/cluster/certmanager.sh check      # the dumpcatcher chart with certManager.enabled=true (release dumpcatcher,
#                                          # namespace dumpcatcher): Certificate Ready, caBundle injected, a
#                                          # dry-run pod injected; then the chart and its namespaces removed again
#   test/cluster/certmanager.sh uninstall  # cert-manager, its CRDs, namespace and leader election leases
#
# install builds cert-manager's controller, webhook and cainjector from the
# module test/tools/certmanager pins (test/tools/install.sh certmanager,
# about 7 minutes once on 2 cores), assembles their images (images.sh
# --certmanager) and imports them into the rig's containerd, then installs
# cert-manager's own Helm chart from that module (deploy/charts/cert-manager,
# with its CRDs; Chart.yaml filled in from its template) with those images
# and imagePullPolicy Never, release and namespace cert-manager. The chart's startupapicheck Job is off (its image,
# cmctl, is another project); install waits instead until a dry-run Issuer
# passes cert-manager's webhook, which the API server calls through its
# Service's ClusterIP (the rig has no cluster DNS and needs none here).
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"
e2e_require_root

release=cert-manager
ns=cert-manager
tag=e2e
export KUBECONFIG=$E2E_KUBECONFIG
t0=$SECONDS
ts() { e2e_log "[$((SECONDS - t0))s] $*"; }

kubectl get --raw /readyz >/dev/null 2>&1 || e2e_die "the rig is not up (test/cluster/up.sh)"
tools=$(bash "$E2E_REPO/test/tools/install.sh" helm | tail -n1)
helm() { "$tools/helm" "$@"; }

# eventually SECONDS WHAT COMMAND...: runs COMMAND every 2 s until it
# succeeds; its last output in the error.
eventually() {
	local limit=$1 what=$2 out
	shift 2
	local end=$((SECONDS + limit))
	until out=$("$@" 2>&1); do
		((SECONDS < end)) || e2e_die "$what: not within ${limit}s: $out"
		sleep 2
	done
}

# chart DIR: cert-manager's chart from the module test/tools/certmanager
# pins, copied into DIR/cert-manager. The module has it with every template
# but with Chart.template.yaml for Chart.yaml (its release tool fills in the
# version and whether it is a pre-release): filled in here the same way.
chart() {
	local mod version src
	mod=$(cd "$E2E_REPO/test/tools/certmanager" &&
		GOFLAGS=-mod=readonly go mod download -json github.com/cert-manager/cert-manager)
	src=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$mod")/deploy/charts/cert-manager
	version=$(sed -n 's/^\t"Version": "\(.*\)",$/\1/p' <<<"$mod")
	[[ -f $src/Chart.template.yaml || -f $src/Chart.yaml ]] || e2e_die "no deploy/charts/cert-manager in the cert-manager module ($src)"
	cp -r -- "$src" "$1/cert-manager"
	chmod -R u+w "$1/cert-manager"
	if [[ ! -f $1/cert-manager/Chart.yaml ]]; then
		sed -e 's/{{IS_PRERELEASE}}/false/' -e "s/^version: .*/version: $version/" -e "s/^appVersion: .*/appVersion: $version/" \
			"$src/Chart.template.yaml" >"$1/cert-manager/Chart.yaml"
	fi
	printf '%s\n' "$1/cert-manager"
}

issuer_probe='{"apiVersion":"cert-manager.io/v1","kind":"Issuer","metadata":{"name":"probe","namespace":"'$ns'"},"spec":{"selfSigned":{}}}'

install() {
	bash "$E2E_REPO/test/cluster/images.sh" --certmanager "$tag"
	ts "images assembled"
	local c
	for c in controller webhook cainjector; do
		ctr --address "$E2E_CTRD_SOCK" -n k8s.io images import "$E2E_IMAGES/cm-$c.tar" >/dev/null
	done
	ts "imported local/cert-manager-{controller,webhook,cainjector}:$tag"
	local work chart values
	work=$(mktemp -d)
	# shellcheck disable=SC2064
	trap "rm -rf -- '$work'" RETURN
	chart=$(chart "$work")
	values=$work/values.yaml
	cat >"$values" <<EOF
crds: {enabled: true, keep: false}
imageRegistry: ""
imageNamespace: local
image: {tag: $tag, pullPolicy: Never}
webhook: {image: {tag: $tag, pullPolicy: Never}}
cainjector: {image: {tag: $tag, pullPolicy: Never}}
acmesolver: {image: {tag: $tag}}
startupapicheck: {enabled: false}
EOF
	local start=$SECONDS
	helm upgrade --install "$release" "$chart" -n "$ns" --create-namespace -f "$values" --wait --timeout 5m >/dev/null
	ts "helm release $release (cert-manager's chart $(sed -n 's/^version: //p' "$chart/Chart.yaml")) ready: $(kubectl -n "$ns" get deploy -o jsonpath='{range .items[*]}{.metadata.name}={.status.readyReplicas}/{.spec.replicas} {end}')"
	eventually 120 "the API server calls cert-manager's webhook" \
		kubectl create --dry-run=server -o name -f - <<<"$issuer_probe"
	ts "cert-manager's webhook admits a dry-run Issuer; install to ready took $((SECONDS - start))s"
}

uninstall() {
	helm uninstall "$release" -n "$ns" --wait --timeout 2m --ignore-not-found >/dev/null
	# crds.keep=false: the release owns them; these go in any case.
	kubectl delete crd --ignore-not-found --wait --timeout 2m \
		certificates.cert-manager.io certificaterequests.cert-manager.io issuers.cert-manager.io \
		clusterissuers.cert-manager.io orders.acme.cert-manager.io challenges.acme.cert-manager.io >/dev/null
	kubectl -n kube-system delete lease --ignore-not-found cert-manager-controller cert-manager-cainjector-leader-election >/dev/null
	kubectl delete namespace "$ns" --ignore-not-found --wait --timeout 3m >/dev/null
	ts "cert-manager uninstalled (release, CRDs, leases, namespace $ns)"
}

# check: what certManager.enabled=true gives on a real cluster, with the
# chart installed as test/e2e and the demo install it (release and namespace
# dumpcatcher, the project images). It refuses to run while a release of the
# chart is installed (someone else's: it is never touched) and removes what
# it installed, also after a failure. The destination need not exist: no
# pod here uploads.
check() {
	local rel=dumpcatcher wns=dumpcatcher app=dumpcatcher-cm-check
	kubectl get crd certificates.cert-manager.io >/dev/null 2>&1 || e2e_die "cert-manager is not installed (certmanager.sh install)"
	local others
	others=$(helm list -A -q --filter '^dumpcatcher'; kubectl get mutatingwebhookconfiguration -l app.kubernetes.io/name=dumpcatcher -o name)
	if [[ -n $others ]] || kubectl get namespace "$wns" "$app" >/dev/null 2>&1; then
		e2e_die "the dumpcatcher chart or its namespace is already on the rig (helm releases, webhooks: ${others//$'\n'/ }); check installs its own and touches no one else's: remove them first"
	fi
	# shellcheck disable=SC2064
	trap "check_cleanup $rel $wns $app" EXIT
	local start=$SECONDS
	helm install "$rel" "$E2E_REPO/charts/dumpcatcher" -n "$wns" --create-namespace \
		--set certManager.enabled=true --set replicaCount=1 \
		--set image.tag=e2e --set image.pullPolicy=Never \
		--set config.sidecar.image.tag=e2e --set config.sidecar.imagePullPolicy=Never \
		--set-string 'config.destination=s3://heap-dumps/e2e?endpoint=http://127.0.0.1:9000' \
		--wait --timeout 3m >/dev/null
	ts "chart $rel installed with certManager.enabled=true (its pods started with the Secret cert-manager issued)"
	kubectl -n "$wns" wait --for=condition=Ready certificate --all --timeout 2m >/dev/null
	ts "Certificates Ready: $(kubectl -n "$wns" get certificate -o jsonpath='{range .items[*]}{.metadata.name} {end}')"
	local webhook
	webhook=$(kubectl get mutatingwebhookconfiguration -l "app.kubernetes.io/instance=$rel" -o name)
	[[ -n $webhook ]] || e2e_die "no MutatingWebhookConfiguration of release $rel"
	eventually 60 "caBundle of $webhook" \
		bash -c "[[ -n \$(kubectl get $webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}') ]]"
	local ca
	ca=$(kubectl get "$webhook" -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | base64 -d |
		openssl x509 -noout -subject 2>/dev/null)
	ts "cainjector filled the caBundle of $webhook ($ca)"
	kubectl create namespace "$app" >/dev/null
	kubectl label namespace "$app" dumpcatcher.io/inject=enabled >/dev/null
	local probe='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"probe","namespace":"'$app'"},"spec":{"containers":[{"name":"app","image":"local/jre17:e2e"}]}}'
	eventually 120 "a dry-run pod in $app injected" \
		bash -c "kubectl create --dry-run=server -o json -f - <<<'$probe' | grep -q 'dumpcatcher.io/status'"
	ts "a dry-run pod in namespace $app (dumpcatcher.io/inject=enabled) comes back injected; chart install to injecting took $((SECONDS - start))s"
}

# check_cleanup REL WNS APP: what check installed.
check_cleanup() {
	helm uninstall "$1" -n "$2" --wait --timeout 2m --ignore-not-found >/dev/null || true
	kubectl delete namespace "$3" "$2" --ignore-not-found --wait --timeout 3m >/dev/null || true
	ts "chart $1 and namespaces $2, $3 removed"
}

case ${1:-} in
install) install ;;
check) check ;;
uninstall) uninstall ;;
*) e2e_die "usage: $(basename -- "$0") install|check|uninstall" ;;
esac
