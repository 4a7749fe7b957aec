#!/usr/bin/env bash
# make demo-local (offline part): runs the webhook's own injection over a sample
# Java Deployment, the way `dumpcatcher-webhook inject` does in CI or GitOps,
# and narrates what a pod of it gets when it is created in a namespace
# labelled dumpcatcher.io/inject=enabled.
set -euo pipefail
webhook=${1:?usage: offline.sh path/to/dumpcatcher-webhook}
cd "$(dirname "$0")/../.."
app=deploy/examples/oom-app.yaml
cfg=deploy/examples/webhook-config.yaml
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "The app: $app (a Java Deployment that runs out of memory)"
grep -E '^(kind|  name):' "$app" | sed 's/^/   /'

say "The webhook configuration: $cfg"
grep -v '^#' "$cfg" | sed 's/^/   /'

say "Injecting, as the webhook would in a namespace labelled dumpcatcher.io/inject=enabled:"
echo "   \$ $webhook inject -f $app --config $cfg --namespace oom-demo --namespace-labels dumpcatcher.io/inject=enabled"
"$webhook" inject -f "$app" --config "$cfg" --namespace oom-demo \
	--namespace-labels dumpcatcher.io/inject=enabled >"$out/injected.yaml" 2>"$out/warnings.txt"

say "What the webhook adds (diff of the Deployment, - before, + after):"
diff -u --label before --label after "$app" "$out/injected.yaml" | sed 's/^/   /' || true

say "Warnings the user would see (kubectl prints them on apply):"
if [[ -s $out/warnings.txt ]]; then sed 's/^/   /' "$out/warnings.txt"; else echo "   (none)"; fi

say "Re-injecting the output changes nothing (idempotent):"
"$webhook" inject -f "$out/injected.yaml" --config "$cfg" --namespace oom-demo \
	--namespace-labels dumpcatcher.io/inject=enabled 2>/dev/null | cmp -s - "$out/injected.yaml" &&
	echo "   identical" || { echo "   DIFFERENT: this is a bug"; exit 1; }

cat <<MSG

What happens in a cluster: the JVM writes its heap dump into the shared
emptyDir on OutOfMemoryError, the preStop hook (dumpcatcher dump) takes one
before a kill when the JVM is short of memory, and the uploader sidecar
(dumpcatcher upload) streams each finished dump to the destination above.
Next, that whole way on this machine with a real MinIO and real JVMs, no
cluster (make demo, as root, shows it on a real single-node Kubernetes).
MSG
