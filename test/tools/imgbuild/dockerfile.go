package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
)

// stage is what imgbuild takes from the final stage of a project
// Dockerfile: the image's configuration and the binaries it copies. The
// Dockerfiles are the one list of images and of the binaries in each, so
// adding a binary to an image is one COPY line there.
type stage struct {
	From       string
	User       string
	Entrypoint []string
	Cmd        []string
	Expose     []string
	Labels     map[string]string // $VERSION unexpanded
	Binaries   []binary
}

// binary is `COPY --from=build /out/NAME DEST`: the main package
// ./cmd/NAME built into DEST.
type binary struct {
	Name string // cmd/NAME
	Dest string // absolute path in the image
}

var labelPair = regexp.MustCompile(`^\s*([A-Za-z0-9._-]+)="([^"]*)"(.*)$`)

// parseFinalStage reads the instructions after the last FROM of file, one a
// line with continuations joined and comments dropped. It knows the
// instructions the project Dockerfiles use in their final stage and refuses
// any other, so that an edit it would ignore fails the build instead.
func parseFinalStage(file string) (*stage, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		l := sc.Text()
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "#") && cur.Len() == 0 || t == "" && cur.Len() == 0 {
			continue
		} else if strings.HasPrefix(t, "#") {
			continue // comment inside a continuation
		}
		if strings.HasSuffix(l, `\`) {
			cur.WriteString(strings.TrimSuffix(l, `\`))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, strings.TrimSpace(cur.String()))
		cur.Reset()
	}
	if cur.Len() > 0 {
		lines = append(lines, strings.TrimSpace(cur.String()))
	}
	last := -1
	for i, l := range lines {
		if strings.EqualFold(strings.Fields(l)[0], "FROM") {
			last = i
		}
	}
	if last < 0 {
		return nil, fmt.Errorf("%s: no FROM", file)
	}
	st := &stage{Labels: map[string]string{}}
	st.From = strings.Fields(lines[last])[1]
	for _, l := range lines[last+1:] {
		ins, args, _ := strings.Cut(l, " ")
		args = strings.TrimSpace(args)
		switch strings.ToUpper(ins) {
		case "ARG":
			if name, _, _ := strings.Cut(args, "="); name != "VERSION" {
				return nil, fmt.Errorf("%s: ARG %s in the final stage: imgbuild knows only VERSION", file, name)
			}
		case "LABEL":
			for rest := args; strings.TrimSpace(rest) != ""; {
				m := labelPair.FindStringSubmatch(rest)
				if m == nil {
					return nil, fmt.Errorf("%s: LABEL %q: imgbuild reads key=\"value\" pairs", file, rest)
				}
				st.Labels[m[1]] = m[2]
				rest = m[3]
			}
		case "COPY":
			f := strings.Fields(args)
			if len(f) != 3 || f[0] != "--from=build" || path.Dir(f[1]) != "/out" || !path.IsAbs(f[2]) {
				return nil, fmt.Errorf("%s: COPY %s: imgbuild reads COPY --from=build /out/NAME /absolute/path", file, args)
			}
			st.Binaries = append(st.Binaries, binary{Name: path.Base(f[1]), Dest: path.Clean(f[2])})
		case "USER":
			st.User = args
		case "EXPOSE":
			st.Expose = append(st.Expose, strings.Fields(args)...)
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(args), &v); err != nil {
				return nil, fmt.Errorf("%s: %s must be the exec form (a JSON array): %v", file, ins, err)
			}
			if strings.EqualFold(ins, "CMD") {
				st.Cmd = v
			} else {
				st.Entrypoint = v
			}
		default:
			return nil, fmt.Errorf("%s: imgbuild does not handle %s in the final stage", file, ins)
		}
	}
	// The base imgbuild writes from scratch stands for distroless/static
	// only: another base (a C library, a shell) would need another one.
	if !strings.HasPrefix(st.From, "gcr.io/distroless/static") || !strings.HasSuffix(st.From, ":nonroot") {
		return nil, fmt.Errorf("%s: FROM %s: imgbuild builds the gcr.io/distroless/static...:nonroot base only", file, st.From)
	}
	if len(st.Binaries) == 0 {
		return nil, fmt.Errorf("%s: the final stage copies no binary", file)
	}
	if st.Labels["org.opencontainers.image.title"] == "" {
		return nil, fmt.Errorf("%s: no org.opencontainers.image.title label (imgbuild names the image after it)", file)
	}
	return st, nil
}
