package inject

import (
	"strings"

	"github.com/dumpcatcher/dumpcatcher/internal/contract"

	corev1 "k8s.io/api/core/v1"
)

// JVM options dumpcatcher owns: user values of these are replaced by ours.
const (
	optDumpOnOOM   = contract.OptHeapDumpOnOOM
	optNoDumpOnOOM = contract.OptNoHeapDumpOnOOM
	optDumpPath    = contract.OptHeapDumpPath
)

// How JAVA_TOOL_OPTIONS was handled in a container (recorded in the status).
const (
	jtoAdded     = "added"     // the container had none
	jtoMerged    = "merged"    // literal value: user options kept, ours added
	jtoValueFrom = "valueFrom" // user value kept in OriginalJTOEnv
	jtoEnvFrom   = "envFrom"   // may come from envFrom: referenced through OriginalJTOEnv
)

// isOurOption reports whether a JAVA_TOOL_OPTIONS token sets one of the
// options dumpcatcher owns. Quotes around (parts of) the token are ignored.
func isOurOption(token string) bool {
	t := token
	if strings.ContainsAny(t, `"'`) {
		t = strings.Map(func(r rune) rune {
			if r == '"' || r == '\'' {
				return -1
			}
			return r
		}, t)
	}
	return t == optDumpOnOOM || t == optNoDumpOnOOM || strings.HasPrefix(t, optDumpPath)
}

// splitOptions splits a JAVA_TOOL_OPTIONS value into tokens the way the JVM
// does: white space separates, single or double quotes group (JDK 9+).
func splitOptions(s string) []string {
	var tokens []string
	var cur strings.Builder
	var quote rune
	inToken := false
	for _, r := range s {
		switch {
		case quote != 0:
			cur.WriteRune(r)
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
			inToken = true
			cur.WriteRune(r)
		case r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v':
			if inToken {
				tokens = append(tokens, cur.String())
				cur.Reset()
				inToken = false
			}
		default:
			inToken = true
			cur.WriteRune(r)
		}
	}
	if inToken {
		tokens = append(tokens, cur.String())
	}
	return tokens
}

// mergeLiteral keeps every user option of a literal JAVA_TOOL_OPTIONS value,
// drops the ones dumpcatcher owns and appends ours (last wins in HotSpot).
func mergeLiteral(value, ours string) string {
	var kept []string
	for _, t := range splitOptions(value) {
		if !isOurOption(t) {
			kept = append(kept, t)
		}
	}
	return strings.Join(append(kept, ours), " ")
}

// isOptional reports whether a valueFrom may leave the variable undefined:
// the kubelet skips an optional reference whose object or key is missing.
func isOptional(src *corev1.EnvVarSource) bool {
	switch {
	case src.ConfigMapKeyRef != nil:
		return src.ConfigMapKeyRef.Optional != nil && *src.ConfigMapKeyRef.Optional
	case src.SecretKeyRef != nil:
		return src.SecretKeyRef.Optional != nil && *src.SecretKeyRef.Optional
	case src.FileKeyRef != nil:
		return src.FileKeyRef.Optional != nil && *src.FileKeyRef.Optional
	}
	return false
}

// mergeJavaToolOptions returns the container's new env with ours in
// JAVA_TOOL_OPTIONS, and how the user's value was kept.
//
// The kubelet expands $(NAME) only when NAME is defined earlier in env (or by
// envFrom); an undefined reference reaches the JVM verbatim and the JVM
// refuses to start. So a reference to the user's value is emitted only where
// the referenced variable is always defined: for a reference that may be
// skipped (optional, or a key envFrom may not have), an empty definition of
// the same name comes first and the reference, when it resolves, replaces it.
func mergeJavaToolOptions(env []corev1.EnvVar, envFrom []corev1.EnvFromSource, ours string) ([]corev1.EnvVar, string) {
	last := -1
	for i := range env {
		if env[i].Name == JTOEnv {
			last = i
		}
	}
	merged := corev1.EnvVar{Name: JTOEnv, Value: "$(" + OriginalJTOEnv + ") " + ours}
	if last >= 0 {
		v := env[last]
		if v.ValueFrom == nil {
			out := cloneEnv(env)
			out[last].Value = mergeLiteral(v.Value, ours)
			return out, jtoMerged
		}
		var repl []corev1.EnvVar
		if isOptional(v.ValueFrom) {
			repl = append(repl, corev1.EnvVar{Name: OriginalJTOEnv})
		}
		repl = append(repl, corev1.EnvVar{Name: OriginalJTOEnv, ValueFrom: v.ValueFrom.DeepCopy()}, merged)
		out := make([]corev1.EnvVar, 0, len(env)+len(repl))
		out = append(out, cloneEnv(env[:last])...)
		out = append(out, repl...)
		out = append(out, cloneEnv(env[last+1:])...)
		return out, jtoValueFrom
	}
	var refs []corev1.EnvVar
	for _, src := range envFrom {
		if !strings.HasPrefix(JTOEnv, src.Prefix) {
			continue
		}
		key := strings.TrimPrefix(JTOEnv, src.Prefix)
		yes := true
		switch {
		case src.ConfigMapRef != nil:
			refs = append(refs, corev1.EnvVar{Name: OriginalJTOEnv, ValueFrom: &corev1.EnvVarSource{
				ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: src.ConfigMapRef.LocalObjectReference, Key: key, Optional: &yes}}})
		case src.SecretRef != nil:
			refs = append(refs, corev1.EnvVar{Name: OriginalJTOEnv, ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: src.SecretRef.LocalObjectReference, Key: key, Optional: &yes}}})
		}
	}
	if len(refs) == 0 {
		return append([]corev1.EnvVar{{Name: JTOEnv, Value: ours}}, cloneEnv(env)...), jtoAdded
	}
	out := append([]corev1.EnvVar{{Name: OriginalJTOEnv}}, refs...)
	out = append(out, merged)
	return append(out, cloneEnv(env)...), jtoEnvFrom
}

func cloneEnv(env []corev1.EnvVar) []corev1.EnvVar {
	out := make([]corev1.EnvVar, len(env))
	for i := range env {
		env[i].DeepCopyInto(&out[i])
	}
	return out
}

// overridingFlags lists command-line or environment settings that beat
// JAVA_TOOL_OPTIONS and would send OOM dumps elsewhere.
func overridingFlags(c *corev1.Container) []string {
	var found []string
	check := func(where, s string) {
		if strings.Contains(s, optDumpPath) || strings.Contains(s, optNoDumpOnOOM) {
			found = append(found, where)
		}
	}
	for _, s := range c.Command {
		check("command", s)
	}
	for _, s := range c.Args {
		check("args", s)
	}
	for _, e := range c.Env {
		if e.Name == "JDK_JAVA_OPTIONS" || e.Name == "_JAVA_OPTIONS" {
			check("env "+e.Name, e.Value)
		}
	}
	return dedupe(found)
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
