package fetch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// HeaderSHA256 carries the stored checksum on a download answer.
const HeaderSHA256 = "X-Dumpcatcher-Sha256"

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// HTTP fetches ranges of URL (a dumps/NAME/download path of the
// kube-apiserver) with Client, which carries the kubeconfig's credentials.
type HTTP struct {
	Client *http.Client
	URL    string
	// Name of the Dump, for error messages.
	Name string
}

var dumpsResource = schema.GroupResource{Group: "dumps.dumpcatcher.io", Resource: "dumps"}

// Fetch implements Fetcher.
func (h HTTP) Fetch(ctx context.Context, from, to int64) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, to))
	req.Header.Set("Accept", "application/octet-stream, application/json")
	// Ranges are of the stored bytes: no transparent gzip of the transport.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := h.Client.Do(req)
	if err != nil {
		return nil, err
	}
	r := &Response{Total: -1, SHA256: resp.Header.Get(HeaderSHA256), Body: resp.Body}
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			r.Total = resp.ContentLength
		}
		return r, nil
	case http.StatusPartialContent:
		from, _, total, err := ParseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			resp.Body.Close()
			return nil, err
		}
		r.Partial, r.Start, r.Total = true, from, total
		return r, nil
	}
	defer resp.Body.Close()
	return nil, StatusError(resp, h.Name)
}

// StatusError turns a failed answer into the error client-go would make of
// it: the API's Status when the body is one, else a generic server response
// (as for an aggregator's plain-text 503).
func StatusError(resp *http.Response, name string) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		if st.Code == 0 {
			st.Code = int32(resp.StatusCode)
		}
		return &apierrors.StatusError{ErrStatus: st}
	}
	return apierrors.NewGenericServerResponse(resp.StatusCode, "get", dumpsResource, name, string(body), 0, true)
}
