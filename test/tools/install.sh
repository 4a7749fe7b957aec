#!/usr/bin/env bash
# Builds the pinned test binaries (kube-apiserver, etcd, minio, helm,
# helm-docs, mc, registry, actionlint) and imgbuild (make images, make push)
# from the small Go modules next to this script and prints the
# directory holding them as the LAST line of stdout; everything else goes to
# stderr:
#
#   KUBEBUILDER_ASSETS=$(test/tools/install.sh)         # all of them
#   test/tools/install.sh etcd helm                      # just these
#   test/tools/install.sh cluster                        # the e2e rig's (cluster_tools)
#   test/tools/install.sh certmanager                    # cert-manager for the rig (certmanager_tools)
#
# Binaries live in ${DUMPCATCHER_TOOLS:-$(go env GOMODCACHE)/../dumpcatcher-tools}/bin.
# Each tool has a stamp ($CACHE/stamps/<tool>) holding a hash of everything
# that decides its build (go.mod, go.sum, package, ldflags, Go version, ...);
# a tool is rebuilt only when its binary or stamp is missing or the hash
# changed, so a warm run does no Go work at all. Binaries are written under a
# temporary name and renamed into place, so an interrupted build never leaves
# a half-written binary behind.
#
# One entry is not a binary: crds copies the CustomResourceDefinitions the
# chart tests install into envtest (cert-manager's, from its Go module's
# deploy/crds/, and prometheus-operator's ServiceMonitor) into $bin/crds/.
set -euo pipefail

exec 3>&1 1>&2 # stdout is reserved for the final bin-dir line

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
all_tools=(kube-apiserver etcd minio helm helm-docs mc crds imgbuild registry actionlint)
# The single-node cluster of test/cluster needs these on top of etcd and
# kube-apiserver. They are not in all_tools: `make test` does not run a
# cluster, and the four of them cost about 4 minutes of 2 cores to build
# once kube-apiserver is (its packages are in the build cache then).
# `cluster` names the whole group. mkimg assembles images without Docker,
# pause is the pods' sandbox process, cri talks CRI to the rig's containerd
# (crictl is not on the module proxy).
cluster_tools=(kube-apiserver etcd kubelet kube-controller-manager kube-scheduler kube-proxy minio mc helm mkimg pause cri)
# cert-manager's controller, webhook and cainjector, which test/cluster/certmanager.sh
# installs on the rig for the chart's certManager.enabled=true. Not in
# cluster_tools either: the rig's tests bring their own certificate, and
# the three cost about 7 minutes of 2 cores to build once (cert-manager's
# issuers bring the Vault, Venafi and cloud DNS clients).
certmanager_tools=(cm-controller cm-webhook cm-cainjector)

log() { printf 'tools: %s\n' "$*"; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go not found on PATH"
{ read -r gomodcache; read -r goversion; read -r goos; read -r goarch; } < <(go env GOMODCACHE GOVERSION GOOS GOARCH)
cache=${DUMPCATCHER_TOOLS:-$gomodcache/../dumpcatcher-tools}
mkdir -p "$cache/bin" "$cache/stamps"
cache=$(cd -- "$cache" && pwd -P)
bin=$cache/bin

# modver DIR MODULE: the version DIR/go.mod requires for MODULE (both the
# one-line and the block form of require).
modver() {
	awk -v m="$2" '
		$1 == "require" && $2 == m { print $3; exit }
		$1 == m && $2 ~ /^v/ && !/=>/ { print $2; exit }
	' "$here/$1/go.mod"
}

# spec TOOL: sets dir, pkg and ldflags for TOOL. Versions come from the
# modules' go.mod files, so each is written down exactly once.
spec() {
	local v
	ldflags="-s -w"
	case $1 in
	kube-apiserver | kubelet | kube-controller-manager | kube-scheduler | kube-proxy)
		# All from test/tools/k8s, with the version the module pins stamped
		# in: without it they report v0.0.0-master (the node's version, and
		# the API server's that the webhook's nativeSidecar=auto reads).
		dir=k8s pkg=k8s.io/kubernetes/cmd/$1
		v=$(modver k8s k8s.io/kubernetes)
		[[ $v =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "cannot parse k8s.io/kubernetes version '$v'"
		ldflags+=" -X k8s.io/component-base/version.gitVersion=$v"
		ldflags+=" -X k8s.io/component-base/version.gitMajor=${BASH_REMATCH[1]}"
		ldflags+=" -X k8s.io/component-base/version.gitMinor=${BASH_REMATCH[2]}"
		ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
		ldflags+=" -X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z"
		;;
	cm-controller | cm-webhook | cm-cainjector)
		# test/tools/certmanager: our mains around the pinned cert-manager
		# module (its go.mod says why), one package each; the version is
		# the module's, as cert-manager's release build stamps it.
		dir=certmanager pkg=./${1#cm-}
		v=$(modver certmanager github.com/cert-manager/cert-manager)
		ldflags+=" -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$v"
		ldflags+=" -X github.com/cert-manager/cert-manager/pkg/util.AppGitState=clean"
		;;
	mkimg | pause | cri | imgbuild)
		# Small tools of the e2e rig and imgbuild (make images, make push), each its own module (test/tools/<name>)
		# with its source next to go.mod (hashed into the stamp).
		dir=$1 pkg=.
		;;
	registry)
		# The distribution registry the push test (test/images) pushes to
		# on 127.0.0.1.
		dir=registry pkg=github.com/distribution/distribution/v3/cmd/registry
		v=$(modver registry github.com/distribution/distribution/v3)
		ldflags+=" -X github.com/distribution/distribution/v3/version.version=$v"
		;;
	actionlint)
		# Checks .github/workflows (test/ci).
		dir=actionlint pkg=github.com/rhysd/actionlint/cmd/actionlint
		# (it reports its version from the build info).
		;;
	etcd)
		# etcd's version is a constant in go.etcd.io/etcd/api/v3/version.
		dir=etcd pkg=go.etcd.io/etcd/server/v3
		;;
	minio)
		# MinIO has no tags on the proxy; the pseudo-version carries the
		# commit time and hash, which its own build turns into these flags.
		dir=minio pkg=github.com/minio/minio
		v=$(modver minio github.com/minio/minio)
		[[ $v =~ -([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})-([0-9a-f]{12})$ ]] ||
			die "cannot parse github.com/minio/minio version '$v'"
		local r=("${BASH_REMATCH[@]}")
		ldflags+=" -X github.com/minio/minio/cmd.Version=${r[1]}-${r[2]}-${r[3]}T${r[4]}:${r[5]}:${r[6]}Z"
		ldflags+=" -X github.com/minio/minio/cmd.ReleaseTag=DEVELOPMENT.${r[1]}-${r[2]}-${r[3]}T${r[4]}-${r[5]}-${r[6]}Z"
		ldflags+=" -X github.com/minio/minio/cmd.CopyrightYear=${r[1]}"
		ldflags+=" -X github.com/minio/minio/cmd.CommitID=${r[7]}"
		ldflags+=" -X github.com/minio/minio/cmd.ShortCommitID=${r[7]}"
		;;
	mc)
		# MinIO's client, the peer the uploader benchmarks compare with. Like
		# the server it has no tags on the proxy; same flags from the
		# pseudo-version.
		dir=mc pkg=github.com/minio/mc
		v=$(modver mc github.com/minio/mc)
		[[ $v =~ -([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})-([0-9a-f]{12})$ ]] ||
			die "cannot parse github.com/minio/mc version '$v'"
		local c=("${BASH_REMATCH[@]}")
		ldflags+=" -X github.com/minio/mc/cmd.Version=${c[1]}-${c[2]}-${c[3]}T${c[4]}:${c[5]}:${c[6]}Z"
		ldflags+=" -X github.com/minio/mc/cmd.ReleaseTag=DEVELOPMENT.${c[1]}-${c[2]}-${c[3]}T${c[4]}-${c[5]}-${c[6]}Z"
		ldflags+=" -X github.com/minio/mc/cmd.CopyrightYear=${c[1]}"
		ldflags+=" -X github.com/minio/mc/cmd.CommitID=${c[7]}"
		ldflags+=" -X github.com/minio/mc/cmd.ShortCommitID=${c[7]}"
		;;
	crds)
		# Not built: files copied out of the modules test/tools/crds pins.
		dir=crds pkg=crds
		ldflags=$(printf '%s ' "${crd_files[@]}")
		;;
	helm)
		dir=helm pkg=helm.sh/helm/v3/cmd/helm
		v=$(modver helm helm.sh/helm/v3)
		ldflags+=" -X helm.sh/helm/v3/internal/version.version=$v"
		ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
		;;
	helm-docs)
		# Generates charts/dumpcatcher/README.md (make generate; TestReadme
		# fails when it is stale). The version shows in the README's footer,
		# without the v as helm-docs' own release build stamps it.
		dir=helm-docs pkg=github.com/norwoodj/helm-docs/cmd/helm-docs
		v=$(modver helm-docs github.com/norwoodj/helm-docs)
		ldflags+=" -X main.version=${v#v}"
		;;
	*) return 1 ;;
	esac
}

# crd_files: MODULE:PATH of each CustomResourceDefinition crds copies.
crd_files=(
	github.com/cert-manager/cert-manager:deploy/crds/cert-manager.io_certificates.yaml
	github.com/cert-manager/cert-manager:deploy/crds/cert-manager.io_certificaterequests.yaml
	github.com/cert-manager/cert-manager:deploy/crds/cert-manager.io_issuers.yaml
	github.com/cert-manager/cert-manager:deploy/crds/cert-manager.io_clusterissuers.yaml
	github.com/prometheus-operator/prometheus-operator:example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
)

# install_crds TMPDIR: downloads the modules test/tools/crds pins (checked
# against its go.sum) and copies crd_files into TMPDIR.
install_crds() {
	local out=$1 f mod file dir
	mkdir -p "$out"
	for f in "${crd_files[@]}"; do
		mod=${f%%:*} file=${f#*:}
		dir=$(cd "$here/crds" && env "${build_env[@]}" go mod download -json "$mod" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
		[[ -n $dir && -f $dir/$file ]] || die "$mod (test/tools/crds/go.mod) has no $file"
		cp -- "$dir/$file" "$out/"
	done
	chmod -R u+w "$out"
}

# Fixed build environment: static binaries, go.mod/go.sum never rewritten.
build_env=(CGO_ENABLED=0 GOFLAGS=-mod=readonly)

stamp_of() { # TOOL -> hash of all build inputs
	spec "$1"
	{
		cat "$here/$dir/go.mod"
		[[ ! -f $here/$dir/go.sum ]] || cat "$here/$dir/go.sum" # none without dependencies
		[[ $pkg != . ]] || cat "$here/$dir"/*.go                 # the tool's own source
		[[ $pkg != ./* ]] || find "$here/$dir" -name '*.go' -print0 | sort -z | xargs -0 cat
		printf '%s\n' "$pkg" "$ldflags" "$goversion" "$goos/$goarch" "${build_env[@]}"
	} | sha256sum | cut -d' ' -f1
}

fresh() { # TOOL HASH
	[[ -x $bin/$1 && -f $cache/stamps/$1 && $(<"$cache/stamps/$1") == "$2" ]]
}

tools=()
for t in "$@"; do
	case $t in
	cluster) tools+=("${cluster_tools[@]}") ;;
	certmanager) tools+=("${certmanager_tools[@]}") ;;
	*) tools+=("$t") ;;
	esac
done
((${#tools[@]})) || tools=("${all_tools[@]}")

declare -A want=()
stale=()
for t in "${tools[@]}"; do
	spec "$t" || die "unknown tool '$t' (known: ${all_tools[*]}; cluster: ${cluster_tools[*]}; certmanager: ${certmanager_tools[*]})"
	want[$t]=$(stamp_of "$t")
	fresh "$t" "${want[$t]}" || stale+=("$t")
done

tmp=
cleanup() { [[ -z $tmp ]] || rm -rf -- "$tmp"; }
trap cleanup EXIT

if ((${#stale[@]})); then
	# Serialise concurrent installers (make -j, parallel CI steps).
	if command -v flock >/dev/null; then
		exec 9>"$cache/.lock"
		flock 9
		rm -rf -- "$bin"/.*.tmp.* # left by killed builds
	fi
	for t in "${stale[@]}"; do
		fresh "$t" "${want[$t]}" && continue # built meanwhile by another installer
		spec "$t"
		log "building $t ($pkg) from test/tools/$dir ..."
		tmp=$bin/.$t.tmp.$$
		start=$SECONDS
		if [[ $t == crds ]]; then
			install_crds "$tmp"
		else
			env "${build_env[@]}" go build -C "$here/$dir" -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg"
		fi
		rm -f -- "$cache/stamps/$t"
		rm -rf -- "${bin:?}/$t"
		mv -f -- "$tmp" "$bin/$t"
		tmp=
		printf '%s\n' "${want[$t]}" >"$cache/stamps/$t"
		log "built $t in $((SECONDS - start))s ($(du -h -- "$bin/$t" | cut -f1))"
	done
fi

# envtest may look for kubectl next to kube-apiserver.
if [[ ! -e $bin/kubectl ]] && kubectl=$(command -v kubectl); then
	ln -sf -- "$kubectl" "$bin/kubectl"
fi

printf '%s\n' "$bin" >&3
