package selector

import (
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      Filter
		want    string
		wantErr string
	}{
		{name: "nothing", in: Filter{}, want: ""},
		{name: "workload", in: Filter{Workload: "deployment-web"}, want: "dumpcatcher.io/workload=deployment-web"},
		{name: "all", in: Filter{Workload: "deployment-web", Pod: "web-1", Container: "app", Reason: "oom"},
			want: "dumpcatcher.io/container=app,dumpcatcher.io/pod=web-1,dumpcatcher.io/reason=oom,dumpcatcher.io/workload=deployment-web"},
		{name: "extra joined", in: Filter{Reason: "manual", Extra: "team=a"}, want: "dumpcatcher.io/reason=manual,team=a"},
		{name: "bad reason", in: Filter{Reason: "boom"}, wantErr: `--reason "boom" is not one of`},
		{name: "bad pod", in: Filter{Pod: "a,b=c"}, wantErr: `--pod "a,b=c" is not a valid label value`},
		{name: "bad extra", in: Filter{Extra: "=="}, wantErr: "-l/--selector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Build(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Build(%+v) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Build(%+v) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}
