package v1alpha1

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func full() *Dump {
	yes := true
	return &Dump{
		TypeMeta:   metav1.TypeMeta{Kind: "Dump", APIVersion: SchemeGroupVersion.String()},
		ObjectMeta: metav1.ObjectMeta{Name: "n", Namespace: "ns", Labels: map[string]string{LabelPod: "p"}, CreationTimestamp: metav1.NewTime(time.Unix(1, 0))},
		Workload:   "deployment/web", Pod: "p", PodUID: "u", Node: "n", Container: "c", Reason: "oom", File: "f",
		Complete: &yes, Encoding: "gzip", OriginalSize: 2, Size: 1, SHA256: "s", URL: "file:///x", Destination: "d",
		Time: metav1.NewTime(time.Unix(1, 0)),
	}
}

func TestDeepCopy(t *testing.T) {
	in := full()
	out := in.DeepCopy()
	if diff := cmp.Diff(in, out); diff != "" {
		t.Fatalf("copy differs (-in +out):\n%s", diff)
	}
	*out.Complete = false
	out.Labels[LabelPod] = "other"
	if !*in.Complete || in.Labels[LabelPod] != "p" {
		t.Errorf("copy shares memory with the original: %+v", in)
	}
	list := &DumpList{Items: []Dump{*full()}}
	lc := list.DeepCopyObject().(*DumpList)
	if diff := cmp.Diff(list, lc); diff != "" {
		t.Fatalf("list copy differs:\n%s", diff)
	}
	*lc.Items[0].Complete = false
	if !*list.Items[0].Complete {
		t.Error("list copy shares items")
	}
}

func TestScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []runtime.Object{&Dump{}, &DumpList{}} {
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil || len(gvks) != 1 || gvks[0].GroupVersion() != SchemeGroupVersion {
			t.Errorf("ObjectKinds(%T) = %v, %v", obj, gvks, err)
		}
	}
}
