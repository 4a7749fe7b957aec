package inject

import (
	"path"
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
	t := unquote(token)
	return t == optDumpOnOOM || t == optNoDumpOnOOM || strings.HasPrefix(t, optDumpPath)
}

// unquote drops the quotes in a JAVA_TOOL_OPTIONS token.
func unquote(token string) string {
	if !strings.ContainsAny(token, `"'`) {
		return token
	}
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\'' {
			return -1
		}
		return r
	}, token)
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
	return flagSources(c, func(s string) bool {
		return strings.Contains(s, optDumpPath) || strings.Contains(s, optNoDumpOnOOM)
	})
}

// errorFileFlags lists command-line or environment settings that set
// -XX:ErrorFile to anything but the crash log pattern in dumpDir, and so
// beat ours in JAVA_TOOL_OPTIONS.
func errorFileFlags(c *corev1.Container, dumpDir string) []string {
	return flagSources(c, func(s string) bool {
		for _, t := range splitOptions(s) {
			if v, ok := strings.CutPrefix(unquote(t), contract.OptErrorFile); ok && !inDumpDir(v, dumpDir) {
				return true
			}
		}
		return false
	})
}

// flagSources lists where, beyond JAVA_TOOL_OPTIONS, a JVM option that
// matches is set: the command, the args, JDK_JAVA_OPTIONS or _JAVA_OPTIONS.
func flagSources(c *corev1.Container, match func(string) bool) []string {
	var found []string
	check := func(where, s string) {
		if match(s) {
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

// literalErrorFile returns the -XX:ErrorFile value of the container's own
// literal JAVA_TOOL_OPTIONS (the last one, which HotSpot uses); ok is false
// when there is no such value or JAVA_TOOL_OPTIONS comes from valueFrom.
func literalErrorFile(env []corev1.EnvVar) (file string, ok bool) {
	last := -1
	for i := range env {
		if env[i].Name == JTOEnv {
			last = i
		}
	}
	if last < 0 || env[last].ValueFrom != nil {
		return "", false
	}
	for _, t := range splitOptions(env[last].Value) {
		if v, found := strings.CutPrefix(unquote(t), contract.OptErrorFile); found {
			file, ok = v, true
		}
	}
	return file, ok
}

// inDumpDir says that an -XX:ErrorFile value names the crash log file
// pattern in dumpDir, where the uploader finds and recognises the logs.
func inDumpDir(file, dumpDir string) bool {
	return path.Clean(file) == contract.ErrorFilePath(dumpDir)
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
