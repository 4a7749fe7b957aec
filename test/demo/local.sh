#!/usr/bin/env bash
# make demo-local (after offline.sh): the whole path of a heap dump on this
# machine, with the real parts and no cluster: a real MinIO on 127.0.0.1, the uploader
# (`dumpcatcher upload`) configured as the webhook configures it, a real JVM
# with JAVA_TOOL_OPTIONS as the webhook writes it running out of memory, and
# an on-demand dump (`dumpcatcher dump`) of a second JVM. The shared emptyDir
# of a pod is a temporary directory here. Everything stops at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=bin
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Tools: MinIO and mc from pinned Go modules (built once into the cache; a few minutes the first time)"
tools=$(bash test/tools/install.sh minio mc)

work=$(mktemp -d /tmp/dumpcatcher-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

free_port() {
	local p
	for p in $(seq "$1" $(($1 + 200))); do
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
	echo "no free port near $1" >&2
	return 1
}
port=$(free_port 19000)
console=$(free_port $((port + 1)))
export MINIO_ROOT_USER=demo-admin MINIO_ROOT_PASSWORD=demo-admin-secret-1
"$tools/minio" server "$work/minio" --address "127.0.0.1:$port" --console-address "127.0.0.1:$console" --quiet >"$work/minio.log" 2>&1 &
pids+=($!)
export MC_CONFIG_DIR=$work/mc MC_HOST_demo="http://$MINIO_ROOT_USER:$MINIO_ROOT_PASSWORD@127.0.0.1:$port"
for _ in $(seq 100); do "$tools/mc" ready demo >/dev/null 2>&1 && break; sleep 0.2; done
"$tools/mc" mb --quiet demo/heap-dumps >/dev/null
say "MinIO runs on 127.0.0.1:$port with the bucket heap-dumps"

# The shared volume as the uploader sees it, and the credentials Secret as
# the kubelet mounts it.
shared=$work/shared
mkdir -p "$shared" "$work/credentials"
printf '%s' "$MINIO_ROOT_USER" >"$work/credentials/accessKeyID"
printf '%s' "$MINIO_ROOT_PASSWORD" >"$work/credentials/secretAccessKey"
say "The uploader sidecar, with the environment the webhook injects:"
env_vars=(
	DUMPCATCHER_DIR="$shared"
	DUMPCATCHER_DESTINATION="s3://heap-dumps/demo?endpoint=http://127.0.0.1:$port&path-style=true"
	DUMPCATCHER_CREDENTIALS_DIR="$work/credentials"
	DUMPCATCHER_POD_NAME=oom-app-6d4cf56db6-x2k9p DUMPCATCHER_POD_NAMESPACE=oom-demo
	DUMPCATCHER_POD_UID=8b4c0c7e-0000-4000-8000-000000000001 DUMPCATCHER_NODE_NAME="$(hostname)"
	DUMPCATCHER_WORKLOAD=deployment/oom-app DUMPCATCHER_CONTAINERS=app
)
printf '   %s\n' "${env_vars[@]}"
env "${env_vars[@]}" "$bin/dumpcatcher" upload >"$work/uploader.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '"watching for heap dumps"' "$work/uploader.log" && break; sleep 0.1; done
echo "   it copied itself to $shared/bin/dumpcatcher for the preStop hook: $(ls -l "$shared/bin/dumpcatcher" | cut -d' ' -f1)"

say "A JVM runs out of memory, with JAVA_TOOL_OPTIONS as the webhook writes it (the app container's /dumpcatcher/dumps, a subPath mount, is $shared/dumps/app here):"
# The value of JAVA_TOOL_OPTIONS in the injected Deployment (a YAML plain
# scalar the serializer may fold over several lines).
jto=$("$bin/dumpcatcher-webhook" inject -f deploy/examples/oom-app.yaml --config deploy/examples/webhook-config.yaml \
	--namespace-labels dumpcatcher.io/inject=enabled 2>/dev/null | awk '
		found == 1 && /value: / { ind = index($0, "value: "); v = substr($0, ind + 7); found = 2; next }
		found == 2 { if (match($0, /^ */) && RLENGTH >= ind) { sub(/^ */, ""); v = v " " $0; next } print v; exit }
		/name: JAVA_TOOL_OPTIONS$/ { found = 1 }')
jto=${jto//\/dumpcatcher\/dumps\//$shared\/dumps\/app\/}
echo "   JAVA_TOOL_OPTIONS=$jto"
mkdir -p "$work/app"
sed -n '/Oom.java: |/,/^---/p' deploy/examples/oom-app.yaml | sed '1d;$d' | sed 's/^    //' >"$work/app/Oom.java"
(cd "$work/app" && JAVA_TOOL_OPTIONS="$jto" java -Xmx64m Oom.java 2>&1 | sed 's/^/   | /' | head -8) || true

wait_delivered() {
	for _ in $(seq 300); do
		[[ $(grep -c '"msg":"delivered"' "$work/uploader.log") -ge $1 ]] && return 0
		sleep 0.1
	done
	echo "   not delivered within 30s; uploader log:"; sed 's/^/   /' "$work/uploader.log"; return 1
}
wait_delivered 1
say "The uploader's log line for it:"
grep '"msg":"delivered"' "$work/uploader.log" | sed 's/^/   /'

say "An on-demand dump: kubectl exec POD -c app -- /dumpcatcher/bin/dumpcatcher dump (here: of a running JVM)"
cat >"$work/app/Sleep.java" <<'JAVA'
public class Sleep {
    public static void main(String[] args) throws Exception {
        byte[][] keep = new byte[16][];
        for (int i = 0; i < keep.length; i++) keep[i] = new byte[1 << 20];
        System.out.println("ready");
        Thread.sleep(600_000);
    }
}
JAVA
(cd "$work/app" && exec java -Xmx64m Sleep.java >"$work/sleep.log" 2>&1) &
jpid=$!
pids+=("$jpid")
for _ in $(seq 200); do grep -q ready "$work/sleep.log" && break; sleep 0.1; done
mkdir -p "$shared/dumps/app"
# The pid of the java process itself (the subshell exec'd into it).
"$shared/bin/dumpcatcher" dump --dir "$shared/dumps/app" --pid "$jpid" | sed 's/^/   /'
wait_delivered 2

say "The bucket now holds:"
"$tools/mc" ls --recursive demo/heap-dumps | sed 's/^/   /'
key=$("$tools/mc" ls --recursive --json demo/heap-dumps | grep -o '"key":"[^"]*-oom-[^"]*"' | head -1 | cut -d'"' -f4)
say "Its metadata (mc stat):"
"$tools/mc" stat "demo/heap-dumps/$key" | sed 's/^/   /'
say "To download and open it:"
echo "   mc cp demo/heap-dumps/$key . && gunzip $(basename "$key")   # then open the .hprof in Eclipse MAT or VisualVM"

say "Stopping: the uploader drains and says what it delivered"
kill -TERM "${pids[1]}"
for _ in $(seq 100); do grep -q '"stopped' "$work/uploader.log" && break; sleep 0.1; done
grep '"stopped' "$work/uploader.log" | sed 's/^/   /'
