package inject

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestOriginalPreStop(t *testing.T) {
	httpGet := func(port intstr.IntOrString) *corev1.LifecycleHandler {
		return &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/stop", Port: port}}
	}
	ports := []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}, {Name: "http", ContainerPort: 8080}}
	exec := &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "stop"}}}
	tests := []struct {
		name     string
		c        corev1.Container
		want     *corev1.LifecycleHandler
		warnings []string
	}{
		{name: "no lifecycle", c: corev1.Container{Name: "app"}},
		{name: "postStart only", c: corev1.Container{Name: "app", Lifecycle: &corev1.Lifecycle{PostStart: exec}}},
		{name: "exec", c: corev1.Container{Name: "app", Lifecycle: &corev1.Lifecycle{PreStop: exec}}, want: exec},
		{name: "number", c: corev1.Container{Name: "app", Lifecycle: &corev1.Lifecycle{PreStop: httpGet(intstr.FromInt32(8080))}}, want: httpGet(intstr.FromInt32(8080))},
		{name: "named", c: corev1.Container{Name: "app", Ports: ports, Lifecycle: &corev1.Lifecycle{PreStop: httpGet(intstr.FromString("http"))}},
			want: httpGet(intstr.FromInt32(8080))},
		{name: "number as a string", c: corev1.Container{Name: "app", Lifecycle: &corev1.Lifecycle{PreStop: httpGet(intstr.FromString("8081"))}},
			want: httpGet(intstr.FromInt32(8081))},
		{name: "unknown name", c: corev1.Container{Name: "app", Ports: ports, Lifecycle: &corev1.Lifecycle{PreStop: httpGet(intstr.FromString("admin"))}},
			want:     httpGet(intstr.FromString("admin")),
			warnings: []string{`dumpcatcher: container "app": its preStop httpGet port "admin" names none of the container's ports, so that hook fails (in the kubelet too); it still runs after the dump as it is: name a containerPort "admin" or give the number`}},
		{name: "another container's port does not count", c: corev1.Container{Name: "app", Lifecycle: &corev1.Lifecycle{PreStop: httpGet(intstr.FromString("http"))}},
			want:     httpGet(intstr.FromString("http")),
			warnings: []string{`dumpcatcher: container "app": its preStop httpGet port "http" names none of the container's ports, so that hook fails (in the kubelet too); it still runs after the dump as it is: name a containerPort "http" or give the number`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.c.DeepCopy()
			var w warnings
			got := originalPreStop(&tt.c, &w)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("handler (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.warnings, []string(w)); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, &tt.c); diff != "" {
				t.Errorf("the container changed:\n%s", diff)
			}
		})
	}
}

func TestSetDumpOptionsErrorFile(t *testing.T) {
	const dir = "/dc/dumps"
	const dump = "-XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath=/dc/dumps/"
	const ours = "-XX:ErrorFile=/dc/dumps/hs_err_pid%p.log"
	jto := func(v string) []corev1.EnvVar { return []corev1.EnvVar{{Name: JTOEnv, Value: v}} }
	cm := &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "k"}}
	tests := []struct {
		name     string
		c        corev1.Container
		wantEnv  []corev1.EnvVar
		warnings []string
	}{
		{name: "none: ours added", c: corev1.Container{Name: "app"}, wantEnv: jto(dump + " " + ours)},
		{name: "literal without ErrorFile: ours added", c: corev1.Container{Name: "app", Env: jto("-Xmx1g")}, wantEnv: jto("-Xmx1g " + dump + " " + ours)},
		{name: "literal ErrorFile elsewhere: kept, warned", c: corev1.Container{Name: "app", Env: jto(`-XX:ErrorFile="/var/log/e %p.log" -Xmx1g`)},
			wantEnv:  jto(`-XX:ErrorFile="/var/log/e %p.log" -Xmx1g ` + dump),
			warnings: []string{`dumpcatcher: container "app" sets its own -XX:ErrorFile=/var/log/e %p.log in JAVA_TOOL_OPTIONS; it is kept, but JVM crash logs are uploaded only when it is /dc/dumps/hs_err_pid%p.log: change it to that or remove it`}},
		{name: "literal ErrorFile in the dump dir: kept, no warning", c: corev1.Container{Name: "app", Env: jto("-XX:ErrorFile=/dc/dumps/./hs_err_pid%p.log")},
			wantEnv: jto("-XX:ErrorFile=/dc/dumps/./hs_err_pid%p.log " + dump)},
		{name: "valueFrom: ours last, so ours wins", c: corev1.Container{Name: "app", Env: []corev1.EnvVar{{Name: JTOEnv, ValueFrom: cm}}},
			wantEnv: []corev1.EnvVar{{Name: OriginalJTOEnv, ValueFrom: cm}, {Name: JTOEnv, Value: "$(" + OriginalJTOEnv + ") " + dump + " " + ours}}},
		{name: "command line ErrorFile into the dump dir: no warning", c: corev1.Container{Name: "app", Args: []string{"-XX:ErrorFile=/dc/dumps/hs_err_pid%p.log"},
			Env: []corev1.EnvVar{{Name: "_JAVA_OPTIONS", Value: "-Xmx1g '-XX:ErrorFile=/dc/dumps/hs_err_pid%p.log'"}}},
			wantEnv: append(jto(dump+" "+ours), corev1.EnvVar{Name: "_JAVA_OPTIONS", Value: "-Xmx1g '-XX:ErrorFile=/dc/dumps/hs_err_pid%p.log'"})},
		{name: "JDK_JAVA_OPTIONS ErrorFile elsewhere: warned", c: corev1.Container{Name: "app", Env: []corev1.EnvVar{{Name: "JDK_JAVA_OPTIONS", Value: "-Xmx1g -XX:ErrorFile=/tmp/e.log"}}},
			wantEnv:  append(jto(dump+" "+ours), corev1.EnvVar{Name: "JDK_JAVA_OPTIONS", Value: "-Xmx1g -XX:ErrorFile=/tmp/e.log"}),
			warnings: []string{`dumpcatcher: container "app" sets -XX:ErrorFile in its env JDK_JAVA_OPTIONS, which overrides JAVA_TOOL_OPTIONS: JVM crash logs are uploaded only when it is /dc/dumps/hs_err_pid%p.log; change it to that or remove it`}},
		{name: "command line ErrorFile: warned", c: corev1.Container{Name: "app", Args: []string{"-XX:ErrorFile=/tmp/x.log"}},
			wantEnv:  jto(dump + " " + ours),
			warnings: []string{`dumpcatcher: container "app" sets -XX:ErrorFile in its args, which overrides JAVA_TOOL_OPTIONS: JVM crash logs are uploaded only when it is /dc/dumps/hs_err_pid%p.log; change it to that or remove it`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w warnings
			setDumpOptions(&tt.c, dir, &w)
			if diff := cmp.Diff(tt.wantEnv, tt.c.Env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.warnings, []string(w)); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}
