package podjson

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMarks(t *testing.T) {
	var pod map[string]any
	if err := json.Unmarshal([]byte(`{"spec":{
		"initContainers":[{"name":"init"}],
		"containers":[{"name":"app","env":[{"name":"A"},{"name":"A"},{"name":"B"}],"volumeMounts":[{"name":"v","mountPath":"/v"}]}],
		"volumes":[{"name":"v"}]}}`), &pod); err != nil {
		t.Fatal(err)
	}
	Mark(pod, "x-future")
	want := []string{
		"spec: spec",
		"initContainers/init: initContainers/init",
		"containers/app: containers/app",
		"containers/app/env/A#0: containers/app/env/A#0",
		"containers/app/env/A#1: containers/app/env/A#1",
		"containers/app/env/B#0: containers/app/env/B#0",
		"containers/app/volumeMounts//v: containers/app/volumeMounts//v",
		"volumes/v: volumes/v",
	}
	if diff := cmp.Diff(want, Marks(pod, "x-future")); diff != "" {
		t.Errorf("marks (-want +got):\n%s", diff)
	}
	delete(pod["spec"].(map[string]any), "x-future")
	if got := Marks(pod, "x-future"); len(got) != len(want)-1 {
		t.Errorf("after removing one: %d marks, want %d", len(got), len(want)-1)
	}
}
