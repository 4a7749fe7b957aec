package plugin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dumpcatcher/dumpcatcher/plugin/internal/apierr"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/dumpobj"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/fetch"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/progress"
	"github.com/dumpcatcher/dumpcatcher/plugin/internal/selector"
	"github.com/spf13/cobra"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

//go:embed ui.html
var uiHTML string

var uiTemplate = template.Must(template.New("ui").Parse(uiHTML))

// cookieName carries the page's secret after the first visit (plus the
// port: cookies are shared between the ports of a host).
const cookieName = "dumpcatcher-ui"

// maxNamespaces bounds the access reviews of the index page.
const maxNamespaces = 200

func (a *app) uiCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve a page on 127.0.0.1 to browse and download dumps with your kubeconfig identity",
		Long: `ui serves a read-only page on a loopback address: the namespaces where you may
list dumps, the dumps by workload and pod with size, reason and age, download
links (proxied through this process, in checked byte ranges) and the command
line to fetch each. The URL it prints carries a secret: other local users and
web pages cannot use the page without it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return fmt.Errorf("--address %q: %v", addr, err)
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("--address %q: the page acts with your credentials, so it listens on a loopback address only (127.0.0.1 or ::1)", addr)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ns, err := a.namespace()
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			u, err := newUI(c, a.contextName(), ns, a.deps.now)
			if err != nil {
				ln.Close()
				return err
			}
			u.port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			fmt.Fprintf(a.streams.ErrOut, "serving the dumps page on http://%s/?token=%s (ctrl-C stops it)\n", ln.Addr(), u.token)
			return u.serve(cmd.Context(), ln)
		},
	}
	cmd.Flags().StringVar(&addr, "address", "127.0.0.1:0", "the loopback address and port to listen on (port 0: any free port)")
	return cmd
}

func (a *app) contextName() string {
	raw, err := a.flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return "your kubeconfig"
	}
	name := raw.CurrentContext
	if a.flags.Context != nil && *a.flags.Context != "" {
		name = *a.flags.Context
	}
	return "context " + strconv.Quote(name)
}

// ui is the browse page's handler.
type ui struct {
	c       *client
	context string
	ns      string // the kubeconfig's namespace, always offered
	now     func() time.Time
	token   string
	port    string // to check the Host header ("" in tests: any port)
	mux     *http.ServeMux
}

func newUI(c *client, context, ns string, now func() time.Time) (*ui, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	u := &ui{c: c, context: context, ns: ns, now: now, token: base64.RawURLEncoding.EncodeToString(b)}
	u.mux = http.NewServeMux()
	u.mux.HandleFunc("GET /{$}", u.index)
	u.mux.HandleFunc("GET /ns", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ns/"+url.PathEscape(r.URL.Query().Get("namespace")), http.StatusSeeOther)
	})
	u.mux.HandleFunc("GET /ns/{ns}", u.namespace)
	u.mux.HandleFunc("GET /ns/{ns}/dumps/{name}/download", u.downloadDump)
	return u, nil
}

func (u *ui) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeHTTP checks the Host (no DNS rebinding) and the secret (no other
// local user, no cross-site request), then serves.
func (u *ui) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if !u.hostOK(r.Host) {
		http.Error(w, "wrong Host header: open the page by the address kubectl dumpcatcher ui printed", http.StatusMisdirectedRequest)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "the page is read-only", http.StatusMethodNotAllowed)
		return
	}
	if t := r.URL.Query().Get("token"); t != "" {
		if !u.secretOK(t) {
			http.Error(w, "wrong token: open the URL kubectl dumpcatcher ui printed", http.StatusForbidden)
			return
		}
		// Move the secret into a cookie and out of the address bar.
		http.SetCookie(w, &http.Cookie{Name: cookieName + u.port, Value: u.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		q := r.URL.Query()
		q.Del("token")
		target := r.URL.Path
		if len(q) > 0 {
			target += "?" + q.Encode()
		}
		http.Redirect(w, r, target, http.StatusSeeOther)
		return
	}
	ck, err := r.Cookie(cookieName + u.port)
	if err != nil || !u.secretOK(ck.Value) {
		http.Error(w, "no token: open the URL kubectl dumpcatcher ui printed (it carries ?token=...)", http.StatusForbidden)
		return
	}
	u.mux.ServeHTTP(w, r)
}

func (u *ui) secretOK(s string) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(u.token)) == 1
}

func (u *ui) hostOK(host string) bool {
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		return false
	}
	if u.port != "" && p != u.port {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

type uiNamespace struct {
	Name  string
	Count int // -1: unknown
}

type uiDump struct {
	Name, Container, Reason, Size, Age, Complete, File, Command string
	Link                                                        string
}

type uiPod struct {
	Name  string
	Dumps []uiDump
}

type uiWorkload struct {
	Name string
	Pods []*uiPod
}

type uiPage struct {
	Context    string
	Namespace  string
	Error      string
	Namespaces []uiNamespace
	Filter     selector.Filter
	Filtered   bool
	Workloads  []*uiWorkload
}

func (u *ui) render(w http.ResponseWriter, code int, p uiPage) {
	p.Context = u.context
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := uiTemplate.Execute(w, p); err != nil {
		fmt.Fprintf(w, "<p>template: %s</p>", template.HTMLEscapeString(err.Error()))
	}
}

// index lists the namespaces where the user may list dumps: all the
// namespaces with dumps when a cluster-wide list is allowed; else the
// namespaces the user may list (or the kubeconfig's), each checked with a
// SelfSubjectAccessReview.
func (u *ui) index(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if l, err := u.c.dynamic.List(ctx, metav1.ListOptions{}); err == nil {
		counts := map[string]int{}
		if u.ns != "" {
			counts[u.ns] = 0
		}
		for _, it := range l.Items {
			counts[it.GetNamespace()]++
		}
		var nss []uiNamespace
		for n, c := range counts {
			nss = append(nss, uiNamespace{Name: n, Count: c})
		}
		sort.Slice(nss, func(i, j int) bool { return nss[i].Name < nss[j].Name })
		u.render(w, http.StatusOK, uiPage{Namespaces: nss})
		return
	}
	candidates := []string{}
	if nl, err := u.c.core.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nl.Items {
			candidates = append(candidates, n.Name)
		}
	}
	if u.ns != "" && !contains(candidates, u.ns) {
		candidates = append(candidates, u.ns)
	}
	sort.Strings(candidates)
	note := ""
	if len(candidates) > maxNamespaces {
		note = fmt.Sprintf("only the first %d of %d namespaces were checked; open another with the form below", maxNamespaces, len(candidates))
		candidates = candidates[:maxNamespaces]
	}
	allowed := make([]bool, len(candidates))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, ns := range candidates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			allowed[i] = u.mayList(ctx, ns)
		}()
	}
	wg.Wait()
	var nss []uiNamespace
	for i, ns := range candidates {
		if allowed[i] {
			nss = append(nss, uiNamespace{Name: ns, Count: -1})
		}
	}
	u.render(w, http.StatusOK, uiPage{Namespaces: nss, Error: note})
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (u *ui) mayList(ctx context.Context, ns string) bool {
	rev, err := u.c.core.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: "list", Group: apierr.Group, Resource: apierr.Resource,
		}},
	}, metav1.CreateOptions{})
	return err == nil && rev.Status.Allowed
}

func (u *ui) namespace(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		u.render(w, http.StatusBadRequest, uiPage{Error: fmt.Sprintf("%q is not a namespace name: %s", ns, strings.Join(errs, "; "))})
		return
	}
	q := r.URL.Query()
	f := selector.Filter{Workload: q.Get("workload"), Pod: q.Get("pod"), Reason: q.Get("reason")}
	page := uiPage{Namespace: ns, Filter: f, Filtered: f != (selector.Filter{})}
	sel, err := selector.Build(f)
	if err != nil {
		page.Error = err.Error()
		u.render(w, http.StatusBadRequest, page)
		return
	}
	l, err := u.c.list(r.Context(), ns, sel)
	if err != nil {
		page.Error = err.Error()
		u.render(w, http.StatusOK, page)
		return
	}
	now := u.now()
	byWorkload := map[string]*uiWorkload{}
	byPod := map[string]*uiPod{}
	for i := range l.Items {
		d, err := dumpobj.From(&l.Items[i])
		if err != nil {
			page.Error = err.Error()
			continue
		}
		wl := d.Workload
		if wl == "" {
			wl = "(no workload)"
		}
		wk := byWorkload[wl]
		if wk == nil {
			wk = &uiWorkload{Name: wl}
			byWorkload[wl] = wk
			page.Workloads = append(page.Workloads, wk)
		}
		pk := byPod[wl+"\x00"+d.Pod]
		if pk == nil {
			pk = &uiPod{Name: d.Pod}
			byPod[wl+"\x00"+d.Pod] = pk
			wk.Pods = append(wk.Pods, pk)
		}
		when := d.Time
		if when.IsZero() {
			when = d.CreationTimestamp
		}
		complete := "unknown"
		if d.Complete != nil {
			complete = strconv.FormatBool(*d.Complete)
		}
		pk.Dumps = append(pk.Dumps, uiDump{
			Name: d.Name, Container: d.Container, Reason: d.Reason, Size: progress.Bytes(d.Size),
			Age: age(now.Sub(when.Time)), Complete: complete, File: d.FileName(),
			Command: commandLine(ns, d.Name),
			Link:    "/ns/" + url.PathEscape(ns) + "/dumps/" + url.PathEscape(d.Name) + "/download",
		})
	}
	sort.Slice(page.Workloads, func(i, j int) bool { return page.Workloads[i].Name < page.Workloads[j].Name })
	for _, wk := range page.Workloads {
		sort.Slice(wk.Pods, func(i, j int) bool { return wk.Pods[i].Name < wk.Pods[j].Name })
	}
	u.render(w, http.StatusOK, page)
}

// downloadDump proxies the dump's stored bytes in checked ranges. A
// checksum mismatch found at the end aborts the connection, so the
// browser marks the download failed.
func (u *ui) downloadDump(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		http.Error(w, "not a namespace or dump name", http.StatusBadRequest)
		return
	}
	_, d, err := u.c.get(r.Context(), ns, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", d.FileName()))
	if d.Size > 0 {
		h.Set("Content-Length", strconv.FormatInt(d.Size, 10))
	}
	if d.SHA256 != "" {
		h.Set(fetch.HeaderSHA256, d.SHA256)
	}
	if r.Method == http.MethodHead {
		return
	}
	size := int64(-1)
	if d.Size > 0 {
		size = d.Size
	}
	sum := sha256.New()
	out := &countWriter{w: w}
	res, err := fetch.Download(r.Context(), fetch.HTTP{Client: u.c.http, URL: u.c.downloadURL(ns, name), Name: name},
		fetch.Options{Size: size, Chunk: 64 << 20, Target: chunkTarget, RequestTimeout: requestTimeout, Out: out, Hash: sum})
	if err != nil && out.n == 0 {
		err = u.c.explain(err, apierr.Request{Verb: "get", Subresource: "download", Namespace: ns, Name: name})
		h.Del("Content-Length")
		h.Del("Content-Disposition")
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintln(w, err)
		return
	}
	if err == nil {
		err = fetch.Verify(sum.Sum(nil), d.SHA256, res.SHA256)
		if errors.Is(err, fetch.ErrNoChecksum) {
			err = nil
		}
	}
	if err != nil {
		// The status line is sent: only a cut connection tells the browser.
		panic(http.ErrAbortHandler)
	}
}

type countWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
