package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/dustin/go-humanize"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/apis/dumps/v1alpha1"
)

// tableConvertor renders Dumps as the columns NAME, WORKLOAD, POD,
// CONTAINER, REASON, SIZE, COMPLETE, AGE.
type tableConvertor struct{ now func() time.Time }

var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "Name of the dump, derived from its object key"},
	{Name: "Workload", Type: "string", Description: "The pod's workload"},
	{Name: "Pod", Type: "string", Description: "The pod the dump was taken in"},
	{Name: "Container", Type: "string", Description: "The container the dump was taken in"},
	{Name: "Reason", Type: "string", Description: "oom, prestop, manual, crash, core or gc-pressure"},
	{Name: "Size", Type: "string", Description: "Stored size (compressed)"},
	{Name: "Complete", Type: "string", Description: "Whether the dump was complete (unknown in lists from stores without list metadata)"},
	{Name: "Age", Type: "string", Description: "Time since the dump was taken"},
}

// ConvertToTable implements rest.TableConvertor.
func (c tableConvertor) ConvertToTable(_ context.Context, obj runtime.Object, _ runtime.Object) (*metav1.Table, error) {
	t := &metav1.Table{ColumnDefinitions: columns}
	add := func(d *v1alpha1.Dump) {
		complete := "unknown"
		if d.Complete != nil {
			complete = fmt.Sprint(*d.Complete)
		}
		age := "<unknown>"
		if !d.CreationTimestamp.IsZero() {
			age = duration.HumanDuration(c.now().Sub(d.CreationTimestamp.Time))
		}
		t.Rows = append(t.Rows, metav1.TableRow{
			Cells:  []interface{}{d.Name, d.Workload, d.Pod, d.Container, d.Reason, humanize.IBytes(uint64(max(d.Size, 0))), complete, age},
			Object: runtime.RawExtension{Object: d},
		})
	}
	switch o := obj.(type) {
	case *v1alpha1.Dump:
		add(o)
	case *v1alpha1.DumpList:
		for i := range o.Items {
			add(&o.Items[i])
		}
		t.ResourceVersion, t.Continue = o.ResourceVersion, o.Continue
	default:
		return nil, apierrors.NewInternalError(fmt.Errorf("cannot render %T as a table of dumps", obj))
	}
	if m, err := meta.ListAccessor(obj); err == nil {
		t.SelfLink = m.GetSelfLink()
	}
	return t, nil
}
