package apiserver_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/apiserver"
	"github.com/dumpcatcher/dumpcatcher/internal/testsupport/certs"
)

// TestAggregation: a backend on 127.0.0.1 that accepts only the front
// proxy's client certificate, registered with RegisterAPIService and a
// serving certificate for ServiceDNSName, receives a user's request
// through the kube-apiserver with the user in X-Remote-User.
func TestAggregation(t *testing.T) {
	api := apiserver.Start(t, apiserver.Options{Aggregation: true})
	const group, version = "echo.example.io", "v1"
	serving := certs.NewCA(t).Serving(t, apiserver.ServiceDNSName(group, version), "127.0.0.1")
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != apiserver.FrontProxyClientName {
			http.Error(w, "not the front proxy", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/apis/"+group+"/"+version {
			fmt.Fprintf(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"%s/%s","resources":[]}`, group, version)
			return
		}
		fmt.Fprintf(w, `{"path":%q,"user":%q,"groups":%q}`, r.URL.Path, r.Header.Get(apiserver.RemoteUserHeader), r.Header.Values(apiserver.RemoteGroupHeader))
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend.Listener = ln
	backend.TLS = &tls.Config{
		Certificates: []tls.Certificate{serving.TLS(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    api.FrontProxy.CA.Pool(),
	}
	backend.StartTLS()
	defer backend.Close()

	api.RegisterAPIService(t, group, version, ln.Addr().String(), serving.CAPEM)

	user, err := api.Env.AddUser(envtest.User{Name: "alice", Groups: []string{"system:masters"}}, api.Config)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(user.Config())
	if err != nil {
		t.Fatal(err)
	}
	path := "/apis/" + group + "/" + version + "/namespaces/x/echoes/y"
	resp, err := hc.Get(strings.TrimSuffix(api.Config.Host, "/") + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"path":%q,"user":"alice","groups":["system:masters" "system:authenticated"]}`, path)
	if resp.StatusCode != http.StatusOK || string(body) != want {
		t.Errorf("GET %s through the aggregator: %d %s\nwant 200 %s", path, resp.StatusCode, body, want)
	}
}
