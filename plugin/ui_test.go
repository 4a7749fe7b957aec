package plugin

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// uiFor starts the page's handler for the fake API; the client follows
// the token redirect and keeps the cookie.
func uiFor(t *testing.T, f *fakeAPI) (*ui, *httptest.Server, *http.Client) {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	kc := f.kubeconfig()
	flags.KubeConfig = &kc
	c, err := newClient(flags)
	if err != nil {
		t.Fatal(err)
	}
	u, err := newUI(c, `context "fake"`, "shop", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	return u, srv, &http.Client{Jar: jar}
}

func get(t *testing.T, hc *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestUIAccess(t *testing.T) {
	f := newFakeAPI(t)
	seed(f)
	u, srv, hc := uiFor(t, f)
	if code, _ := get(t, hc, srv.URL+"/"); code != http.StatusForbidden {
		t.Errorf("without the token: %d, want 403", code)
	}
	if code, _ := get(t, hc, srv.URL+"/?token=wrong"); code != http.StatusForbidden {
		t.Errorf("a wrong token: %d, want 403", code)
	}
	// DNS rebinding: a name that resolves to 127.0.0.1 is not the page's.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/?token="+u.token, nil)
	req.Host = "evil.example:80"
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("a foreign Host: %v %v, want 421", resp.StatusCode, err)
	}
	resp, err := hc.PostForm(srv.URL+"/?token="+u.token, url.Values{})
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v %v, want 405", resp.StatusCode, err)
	}
	code, body := get(t, hc, srv.URL+"/?token="+u.token)
	if code != http.StatusOK || !strings.Contains(body, `<a href="/ns/shop">shop</a>`) {
		t.Fatalf("with the token: %d\n%s", code, body)
	}
	// The cookie now stands for the token.
	if code, _ := get(t, hc, srv.URL+"/ns/bank"); code != http.StatusOK {
		t.Errorf("with the cookie: %d, want 200", code)
	}
}

func TestUIIndex(t *testing.T) {
	for _, tc := range []struct {
		name      string
		forbidden []string
		want      []string
		wantNot   []string
	}{
		{name: "cluster-wide list: namespaces with counts", want: []string{`<a href="/ns/bank">bank</a></td><td class="num">1</td>`, `<a href="/ns/shop">shop</a></td><td class="num">2</td>`}},
		{name: "per-namespace reviews", forbidden: []string{"", "secret"}, want: []string{`href="/ns/bank"`, `href="/ns/shop"`}, wantNot: []string{`href="/ns/secret"`}},
		{name: "no namespace list: the kubeconfig's", forbidden: []string{"", "namespaces"}, want: []string{`href="/ns/shop"`}, wantNot: []string{`href="/ns/bank"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			seed(f)
			for _, n := range tc.forbidden {
				f.forbidden[n] = true
			}
			u, srv, hc := uiFor(t, f)
			_, body := get(t, hc, srv.URL+"/?token="+u.token)
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q\n%s", w, body)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(body, w) {
					t.Errorf("page has %q", w)
				}
			}
		})
	}
}

func TestUINamespace(t *testing.T) {
	f := newFakeAPI(t)
	seed(f)
	f.add("shop", "evil-aaaaaaaaaa", []byte("x"), map[string]any{"workload": "deployment-web", "pod": "<script>alert(1)</script>", "reason": "oom"})
	u, srv, hc := uiFor(t, f)
	get(t, hc, srv.URL+"/?token="+u.token)
	code, body := get(t, hc, srv.URL+"/ns/shop?reason=oom")
	if code != http.StatusOK {
		t.Fatalf("%d\n%s", code, body)
	}
	for _, w := range []string{
		"<h2>deployment-web</h2>", "<h3>pod web-1</h3>", "<td>web-1-app-oom-aaaaaaaaaa</td>",
		`<a class="download" href="/ns/shop/dumps/web-1-app-oom-aaaaaaaaaa/download" download>java_pid1.hprof</a>`,
		"<code>kubectl dumpcatcher download web-1-app-oom-aaaaaaaaaa -n shop</code>",
		"pod &lt;script&gt;alert(1)&lt;/script&gt;",
	} {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %q\n%s", w, body)
		}
	}
	if strings.Contains(body, "web-2-app-manual") || strings.Contains(body, "<script>") {
		t.Errorf("the reason filter or the escaping failed:\n%s", body)
	}
	if f.selectors[len(f.selectors)-1] != "dumpcatcher.io/reason=oom" {
		t.Errorf("selector %q", f.selectors)
	}
	if code, body := get(t, hc, srv.URL+"/ns/Not_A_NS"); code != http.StatusBadRequest || !strings.Contains(body, "not a namespace name") {
		t.Errorf("bad namespace: %d %s", code, body)
	}
	f.forbidden["bank"] = true
	if _, body := get(t, hc, srv.URL+"/ns/bank"); !strings.Contains(body, "dumpcatcher-dumps-reader") {
		t.Errorf("forbidden namespace page lacks the role to ask for:\n%s", body)
	}
}

func TestUIDownload(t *testing.T) {
	f := newFakeAPI(t)
	seed(f)
	u, srv, hc := uiFor(t, f)
	get(t, hc, srv.URL+"/?token="+u.token)
	resp, err := hc.Get(srv.URL + "/ns/shop/dumps/web-1-app-oom-aaaaaaaaaa/download")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "heap one" || resp.Header.Get("Content-Disposition") != `attachment; filename="java_pid1.hprof"` {
		t.Fatalf("download = %q, %v, %v", b, err, resp.Header)
	}
	f.wrongSum = true
	f.dumps[0].fields["sha256"] = strings.Repeat("0", 64)
	resp, err = hc.Get(srv.URL + "/ns/shop/dumps/web-1-app-oom-aaaaaaaaaa/download")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a download with a wrong checksum ends normally; want the connection cut")
	}
	f.forbidden["shop"] = true
	if code, body := get(t, hc, srv.URL+"/ns/shop/dumps/web-1-app-oom-aaaaaaaaaa/download"); code != http.StatusBadGateway || !strings.Contains(body, "forbidden") {
		t.Errorf("forbidden download: %d %s", code, body)
	}
}
