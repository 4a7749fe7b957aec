// Package registry is the REST storage of the dumps resource: get, list and
// delete of Dumps read from the object stores, and the download and presign
// subresources. The stores are the only source of truth: nothing is cached.
package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/dumpcatcher/dumpcatcher/dumpsapi/apis/dumps/v1alpha1"
	"github.com/dumpcatcher/dumpcatcher/dumpsapi/internal/dumpkey"
	"github.com/dumpcatcher/dumpcatcher/sidecar/storage"
)

// Store is the part of a Bucket the API uses.
type Store interface {
	storage.Lister
	Stat(ctx context.Context, key string) (storage.Info, error)
	Delete(ctx context.Context, key string) error
	URL(key string) string
}

// Destination is one configured store.
type Destination struct {
	// Name as configured; shown in Dump.destination.
	Name  string
	Store Store
	// Presigner is nil when the store cannot presign (file://).
	Presigner storage.Presigner
}

// Stores are the destinations the API serves, the first being the default.
type Stores struct {
	Destinations []Destination
	// PresignExpiry is how long presigned URLs are valid; 0 turns the
	// presign subresource off.
	PresignExpiry time.Duration
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
}

func (s *Stores) salt(i int) string {
	if i == 0 {
		return ""
	}
	return s.Destinations[i].Name
}

var resource = v1alpha1.Resource("dumps")

// unavailable is the 503 of a store error.
func unavailable(d Destination, err error) error {
	return apierrors.NewServiceUnavailable(fmt.Sprintf("the dump store %q is unavailable: %v", d.Name, err))
}

// found is a dump located in a store.
type found struct {
	dest  Destination
	index int
	key   string
	obj   storage.ObjectInfo
}

var errStop = errors.New("stop")

// find lists "<namespace>/" of every destination and returns the object
// called name. A store error is a 503 unless another store has the dump.
func (s *Stores) find(ctx context.Context, namespace, name string) (found, error) {
	prefix, err := dumpkey.Prefix(namespace)
	if err != nil {
		return found{}, apierrors.NewBadRequest(err.Error())
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return found{}, apierrors.NewNotFound(resource, name)
	}
	var storeErr error
	for i, d := range s.Destinations {
		var f found
		err := d.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
			if _, ok := dumpkey.Match(s.salt(i), namespace, name, oi.Key); ok {
				f = found{dest: d, index: i, key: oi.Key, obj: oi}
				return errStop
			}
			return nil
		})
		switch {
		case errors.Is(err, errStop):
			return f, nil
		case err != nil && storeErr == nil:
			storeErr = unavailable(d, err)
		}
	}
	if storeErr != nil {
		return found{}, storeErr
	}
	return found{}, apierrors.NewNotFound(resource, name)
}

// dump is the Dump of f, with the metadata Stat returns (a listing may not
// have it).
func (s *Stores) dump(ctx context.Context, namespace string, f found) (*v1alpha1.Dump, error) {
	info, err := f.dest.Store.Stat(ctx, f.key)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return nil, apierrors.NewNotFound(resource, dumpkey.Name(s.salt(f.index), strings.TrimPrefix(f.key, namespace+"/")))
	case err != nil:
		return nil, unavailable(f.dest, err)
	}
	d, ok := dumpkey.Dump(namespace, dumpkey.Object{
		Key: f.key, Size: info.Size, LastModified: f.obj.LastModified, Metadata: info.Metadata,
		URL: f.dest.Store.URL(f.key), Destination: f.dest.Name, Salt: s.salt(f.index), ContentEncoding: info.ContentEncoding,
	})
	if !ok {
		return nil, apierrors.NewInternalError(fmt.Errorf("key %q is not a dump of namespace %q", f.key, namespace))
	}
	return &d, nil
}

// REST is the storage of the dumps resource.
type REST struct {
	stores *Stores
	table  rest.TableConvertor
}

// NewREST returns the storage of dumps.
func NewREST(stores *Stores) *REST {
	return &REST{stores: stores, table: tableConvertor{now: stores.now}}
}

func (s *Stores) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

var (
	_ rest.Storage              = (*REST)(nil)
	_ rest.Getter               = (*REST)(nil)
	_ rest.Lister               = (*REST)(nil)
	_ rest.GracefulDeleter      = (*REST)(nil)
	_ rest.Scoper               = (*REST)(nil)
	_ rest.SingularNameProvider = (*REST)(nil)
)

// New implements rest.Storage.
func (r *REST) New() runtime.Object { return &v1alpha1.Dump{} }

// Destroy implements rest.Storage.
func (r *REST) Destroy() {}

// NamespaceScoped implements rest.Scoper.
func (r *REST) NamespaceScoped() bool { return true }

// GetSingularName implements rest.SingularNameProvider.
func (r *REST) GetSingularName() string { return "dump" }

// NewList implements rest.Lister.
func (r *REST) NewList() runtime.Object { return &v1alpha1.DumpList{} }

// ConvertToTable implements rest.TableConvertor.
func (r *REST) ConvertToTable(ctx context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	return r.table.ConvertToTable(ctx, obj, opts)
}

// Get implements rest.Getter.
func (r *REST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return nil, apierrors.NewBadRequest("a namespace is required to get a dump")
	}
	f, err := r.stores.find(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return r.stores.dump(ctx, ns, f)
}

// List implements rest.Lister: the dumps of the request's namespace, or of
// all namespaces, filtered by label and field selectors (metadata.name,
// metadata.namespace).
func (r *REST) List(ctx context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	prefix := ""
	if ns != "" {
		p, err := dumpkey.Prefix(ns)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		prefix = p
	}
	labelSel, fieldSel := labels.Everything(), fields.Everything()
	if opts != nil && opts.LabelSelector != nil {
		labelSel = opts.LabelSelector
	}
	if opts != nil && opts.FieldSelector != nil {
		fieldSel = opts.FieldSelector
		for _, req := range fieldSel.Requirements() {
			if req.Field != "metadata.name" && req.Field != "metadata.namespace" {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("field selector %q: dumps support only metadata.name and metadata.namespace", req.Field))
			}
		}
	}
	list := &v1alpha1.DumpList{Items: []v1alpha1.Dump{}}
	for i, d := range r.stores.Destinations {
		err := d.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
			dns := ns
			if dns == "" {
				dns, _, _ = strings.Cut(oi.Key, "/")
			}
			dump, ok := dumpkey.Dump(dns, dumpkey.Object{
				Key: oi.Key, Size: oi.Size, LastModified: oi.LastModified, Metadata: oi.Metadata,
				URL: d.Store.URL(oi.Key), Destination: d.Name, Salt: r.stores.salt(i), ContentEncoding: oi.ContentEncoding,
			})
			if !ok || !labelSel.Matches(labels.Set(dump.Labels)) ||
				!fieldSel.Matches(fields.Set{"metadata.name": dump.Name, "metadata.namespace": dump.Namespace}) {
				return nil
			}
			list.Items = append(list.Items, dump)
			return nil
		})
		if err != nil {
			return nil, unavailable(d, err)
		}
	}
	return list, nil
}

// Delete implements rest.GracefulDeleter: it removes the object from the
// store. Deleting a dump that is gone is a 404.
func (r *REST) Delete(ctx context.Context, name string, validate rest.ValidateObjectFunc, _ *metav1.DeleteOptions) (runtime.Object, bool, error) {
	ns, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || ns == "" {
		return nil, false, apierrors.NewBadRequest("a namespace is required to delete a dump")
	}
	f, err := r.stores.find(ctx, ns, name)
	if err != nil {
		return nil, false, err
	}
	d, err := r.stores.dump(ctx, ns, f)
	if err != nil {
		return nil, false, err
	}
	if validate != nil {
		if err := validate(ctx, d); err != nil {
			return nil, false, err
		}
	}
	if err := f.dest.Store.Delete(ctx, f.key); err != nil {
		return nil, false, unavailable(f.dest, err)
	}
	return d, true, nil
}
