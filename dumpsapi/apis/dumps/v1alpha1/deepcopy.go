package v1alpha1

import "k8s.io/apimachinery/pkg/runtime"

// Hand-written in the shape deepcopy-gen produces (the generator is not a
// dependency of this module); TestDeepCopy checks that no field is shared.

// DeepCopyInto copies in into out.
func (in *Dump) DeepCopyInto(out *Dump) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if in.Complete != nil {
		c := *in.Complete
		out.Complete = &c
	}
	in.Time.DeepCopyInto(&out.Time)
}

// DeepCopy returns a copy of in.
func (in *Dump) DeepCopy() *Dump {
	if in == nil {
		return nil
	}
	out := new(Dump)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *Dump) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopyInto copies in into out.
func (in *DumpList) DeepCopyInto(out *DumpList) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	if in.Items != nil {
		out.Items = make([]Dump, len(in.Items))
		for i := range in.Items {
			in.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopy returns a copy of in.
func (in *DumpList) DeepCopy() *DumpList {
	if in == nil {
		return nil
	}
	out := new(DumpList)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *DumpList) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}
