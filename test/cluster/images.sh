#!/usr/bin/env bash
# Assembles the e2e rig's container images without a Docker engine and writes
# each as a docker-archive tarball into $E2E_IMAGES (up.sh imports them into
# the rig's containerd):
#
#   webhook  ghcr.io/dumpcatcher/dumpcatcher-webhook:e2e  }  bin/ of `make build`, laid out as
#   sidecar  ghcr.io/dumpcatcher/dumpcatcher:e2e          }  Dockerfile.webhook / .sidecar say
#   pause    local/pause:e2e   the pods' sandbox (test/tools/pause)
#   jre      local/jre17:e2e   a jlink'd JRE 17 from this machine's JDK, the OOM example and Hold (a long-running JVM) compiled in, no shell
#   minio    local/minio:e2e   the MinIO server test/tools/install.sh builds
#
# With --certmanager it assembles, instead of all those, the images of
# cert-manager's controller, webhook and cainjector (test/tools/install.sh
# certmanager builds them; certmanager.sh installs them with cert-manager's
# chart): static binaries on the same base, run as nonroot (65532), each at
# the path cert-manager's own images have it (/app/cmd/NAME/NAME; the chart
# gives only the arguments):
#
#   cm-controller  local/cert-manager-controller:e2e
#   cm-webhook     local/cert-manager-webhook:e2e
#   cm-cainjector  local/cert-manager-cainjector:e2e
#
# The two project images take their user, entrypoint, binary path, exposed
# ports and labels from the final stage of their Dockerfile (parsed below),
# on a base like distroless/static:nonroot (CA bundle, passwd with nonroot
# 65532, /tmp, /home/nonroot); test/cluster/images_test.go checks the result
# against the Dockerfiles with a parser of its own.
#
#   test/cluster/images.sh [TAG]                # TAG of the project images, default e2e
#   test/cluster/images.sh --certmanager [TAG]  # the cert-manager images, TAG default e2e
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/env.sh"

certmanager=
if [[ ${1:-} == --certmanager ]]; then
	certmanager=1
	shift
fi
tag=${1:-e2e}
repo=$E2E_REPO
if [[ -n $certmanager ]]; then
	tools=$(bash "$repo/test/tools/install.sh" mkimg certmanager | tail -n1)
else
	for b in dumpcatcher-webhook dumpcatcher; do
		[[ -x $repo/bin/$b ]] || e2e_die "no bin/$b: run make build first"
	done
	command -v jlink >/dev/null && command -v javac >/dev/null || e2e_die "jlink and javac (a JDK 17) are needed for the JRE image"
	tools=$(bash "$repo/test/tools/install.sh" mkimg pause minio | tail -n1)
fi

mkdir -p "$E2E_IMAGES"
work=$(mktemp -d "$E2E_IMAGES/.work.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# layer DIR OUT: DIR as an image layer, every entry owned by root and dated
# 1970 so that the same content gives the same layer digest.
layer() {
	tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 --format=gnu -C "$1" -cf "$2" .
}

# The base all images share: what distroless/static:nonroot has and the
# binaries expect (a CA bundle for https endpoints, a passwd that names the
# uids, a world-writable /tmp). /home/nonroot belongs to nonroot, so it goes
# into a layer of its own, owned by 65532.
base=$work/base
mkdir -p "$base"/{etc/ssl/certs,tmp} "$work/home/home/nonroot"
chmod 1777 "$base/tmp"
chmod 0700 "$work/home/home/nonroot"
cp /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/ca-certificates.crt"
cat >"$base/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$base/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
printf 'hosts: files dns\n' >"$base/etc/nsswitch.conf"
layer "$base" "$work/base.tar"
tar --sort=name --mtime=@0 --numeric-owner --owner=65532 --group=65532 --format=gnu \
	-C "$work/home" -cf "$work/home.tar" .
base_env=(-env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)

# cert-manager: one image per binary, nothing else.
if [[ -n $certmanager ]]; then
	for c in controller webhook cainjector; do
		mkdir -p "$work/cm-$c/app/cmd/$c"
		cp "$tools/cm-$c" "$work/cm-$c/app/cmd/$c/$c"
		chmod 0755 "$work/cm-$c/app/cmd/$c/$c"
		layer "$work/cm-$c" "$work/cm-$c.tar"
		"$tools/mkimg" -tag "local/cert-manager-$c:$tag" -out "$E2E_IMAGES/cm-$c.tar" \
			-layer "$work/base.tar" -layer "$work/home.tar" -layer "$work/cm-$c.tar" "${base_env[@]}" \
			-user 65532:65532 -workdir /home/nonroot -entrypoint "[\"/app/cmd/$c/$c\"]"
	done
	e2e_log "cert-manager images in $E2E_IMAGES: $(cd "$E2E_IMAGES" && du -h -- cm-*.tar | tr '\t\n' '  ')"
	exit 0
fi

# final_stage DOCKERFILE: the instructions of the last stage, one a line,
# continuations joined, comments dropped.
final_stage() {
	awk '
		/^[ \t]*#/ { next }
		{ line = line $0 }
		/\\$/ { sub(/\\$/, "", line); next }
		{ if (line ~ /[^ \t]/) print line; line = "" }
	' "$1" | awk 'toupper($1) == "FROM" { n = NR } { l[NR] = $0 } END { for (i = n + 1; i <= NR; i++) print l[i] }'
}

# project_image DOCKERFILE NAME: the image of a project Dockerfile.
project_image() {
	local df=$repo/$1 name=$2 stage ins args src dst args_json
	stage=$(final_stage "$df")
	local flags=(-layer "$work/base.tar" -layer "$work/home.tar" "${base_env[@]}" -workdir /home/nonroot)
	local bin=$work/$name-bin
	mkdir -p "$bin"
	while IFS= read -r line; do
		ins=$(awk '{ print toupper($1) }' <<<"$line")
		args=$(sed -E 's/^[ \t]*[A-Za-z]+[ \t]+//' <<<"$line")
		case $ins in
		USER) flags+=(-user "$args") ;;
		ENTRYPOINT) flags+=(-entrypoint "$args") ;;
		CMD) flags+=(-cmd "$args") ;;
		EXPOSE) for p in $args; do flags+=(-expose "$p"); done ;;
		LABEL)
			# key="value" pairs; $VERSION is the image tag here.
			while [[ $args =~ ^[[:space:]]*([A-Za-z0-9._-]+)=\"([^\"]*)\"(.*)$ ]]; do
				flags+=(-label "${BASH_REMATCH[1]}=${BASH_REMATCH[2]//\$VERSION/$tag}")
				args=${BASH_REMATCH[3]}
			done
			;;
		COPY)
			# COPY --from=build /out/NAME /path: NAME is what make build
			# writes to bin/.
			read -r src dst < <(sed -E 's/--[a-z]+=[^ ]+//g' <<<"$args")
			mkdir -p "$bin$(dirname -- "$dst")"
			cp "$repo/bin/$(basename -- "$src")" "$bin$dst"
			chmod 0755 "$bin$dst"
			;;
		ARG) ;; # VERSION: the tag stands for it
		ENV | WORKDIR | RUN | ADD) e2e_die "$1: images.sh does not handle $ins in the final stage yet" ;;
		esac
	done <<<"$stage"
	layer "$bin" "$work/$name-bin.tar"
	"$tools/mkimg" -tag "$3" -out "$E2E_IMAGES/$name.tar" "${flags[@]}" -layer "$work/$name-bin.tar"
}

project_image Dockerfile.webhook webhook "ghcr.io/dumpcatcher/dumpcatcher-webhook:$tag"
project_image Dockerfile.sidecar sidecar "ghcr.io/dumpcatcher/dumpcatcher:$tag"

# pause: the sandbox image containerd.toml names.
mkdir -p "$work/pause"
cp "$tools/pause" "$work/pause/pause"
layer "$work/pause" "$work/pause.tar"
"$tools/mkimg" -tag local/pause:e2e -out "$E2E_IMAGES/pause.tar" -layer "$work/pause.tar" \
	-entrypoint '["/pause"]' -user 65535:65535

# minio: the server binary on the base; the pod gives the arguments
# (server /data ...), as with the upstream image.
mkdir -p "$work/minio/usr/bin"
cp "$tools/minio" "$work/minio/usr/bin/minio"
layer "$work/minio" "$work/minio.tar"
"$tools/mkimg" -tag local/minio:e2e -out "$E2E_IMAGES/minio.tar" -layer "$work/base.tar" -layer "$work/home.tar" \
	-layer "$work/minio.tar" "${base_env[@]}" -entrypoint '["/usr/bin/minio"]' -expose 9000 -expose 9001

# jre: the smallest runtime the dump path needs (java.base; attach and
# hsperfdata are in libjvm), made with jlink from this machine's JDK 17, plus
# the C libraries ldd names, and Oom.class compiled from the ConfigMap of
# deploy/examples/oom-app.yaml. No shell and no JDK tools: the preStop dump
# must work with what the webhook brings (/dumpcatcher/bin/dumpcatcher).
java_home=$(dirname -- "$(dirname -- "$(readlink -f -- "$(command -v javac)")")")
jre=$work/jre
mkdir -p "$jre/usr/lib/x86_64-linux-gnu" "$jre/usr/lib64" "$jre/opt/oom" "$jre/opt/hold" "$jre/tmp" "$jre/etc"
chmod 1777 "$jre/tmp"
ln -s usr/lib "$jre/lib"
ln -s usr/lib64 "$jre/lib64"
"$java_home/bin/jlink" --module-path "$java_home/jmods" --add-modules java.base \
	--strip-debug --no-man-pages --no-header-files --compress=2 --output "$jre/opt/java"
cp "$base"/etc/{passwd,group,nsswitch.conf} "$jre/etc/"
libs=$(for f in "$jre/opt/java/bin/java" $(find "$jre/opt/java/lib" -name '*.so'); do ldd "$f"; done 2>/dev/null |
	awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/lib64\// { print $1 }' | grep -v "^$jre" | sort -u)
for l in $libs; do
	case $l in
	/lib64/* | /usr/lib64/*) cp -L "$l" "$jre/usr/lib64/$(basename -- "$l")" ;;
	*) cp -L "$l" "$jre/usr/lib/x86_64-linux-gnu/$(basename -- "$l")" ;;
	esac
done
sed -n '/Oom.java: |/,/^---/p' "$repo/deploy/examples/oom-app.yaml" | sed '1d;$d' | sed 's/^    //' >"$work/Oom.java"
javac --release 17 -d "$jre/opt/oom" "$work/Oom.java"
# Hold: a healthy long-running JVM for the on-demand dump, the rolling update
# and the memory pressure scenarios of test/e2e: the program of the JVM tests
# (sidecar/hprof/hproftest/hold.go), which keeps MiB (argument) reachable,
# collects them into the old generation and sleeps until it is stopped.
sed -n '/^const HoldProgram = `/,/^`/p' "$repo/sidecar/hprof/hproftest/hold.go" |
	sed '1s/^const HoldProgram = `//;$d' >"$work/Hold.java"
grep -q 'class Hold' "$work/Hold.java" || e2e_die "no HoldProgram in sidecar/hprof/hproftest/hold.go"
javac --release 17 -d "$jre/opt/hold" "$work/Hold.java"
[[ ! -e $jre/bin/sh && ! -e $jre/usr/bin/sh ]] || e2e_die "the JRE image must have no shell"
layer "$jre" "$work/jre.tar"
"$tools/mkimg" -tag local/jre17:e2e -out "$E2E_IMAGES/jre.tar" -layer "$work/jre.tar" \
	-env PATH=/opt/java/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -env JAVA_HOME=/opt/java \
	-user 65532:65532 -entrypoint '["/opt/java/bin/java"]' -cmd '["-cp", "/opt/oom", "Oom"]'

e2e_log "images in $E2E_IMAGES: $(cd "$E2E_IMAGES" && du -h -- *.tar | tr '\t\n' '  ')"
