// Package chart tests charts/dumpcatcher, deploy/ and the Dockerfiles, and
// generates the chart's README from its values.yaml.
//
// values.yaml documents each value the way helm-docs reads it: a comment
// block starting with "# --" right above the key, continued by further "#"
// lines, and optionally "# @default -- TEXT" to show TEXT instead of the
// value. A documented map or list stands for everything under it.
package chart

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"sigs.k8s.io/yaml"
)

// ValueDoc is one documented value.
type ValueDoc struct {
	// Key is the dotted path, e.g. config.sidecar.image.tag.
	Key string
	// Type is string, int, float, bool, list or object.
	Type string
	// Default is the value as shown in the table.
	Default string
	// Description is the "# --" comment.
	Description string
}

var keyLine = regexp.MustCompile(`^( *)([A-Za-z0-9_.-]+):(\s|$)`)

// ParseValuesDocs reads the "# --" documentation of a values.yaml, in file
// order, with the types and defaults of the parsed values.
func ParseValuesDocs(data []byte) ([]ValueDoc, error) {
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return nil, fmt.Errorf("values.yaml: %w", err)
	}
	type frame struct {
		indent int
		key    string // "" for a list item: keys below it are not values of their own
	}
	var (
		stack          []frame
		docs           []ValueDoc
		desc, def      []string
		pending, inDef bool
	)
	reset := func() { desc, def, pending, inDef = nil, nil, false, false }
	s := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			reset()
			continue
		case strings.HasPrefix(trimmed, "# --"):
			reset()
			pending = true
			desc = append(desc, strings.TrimSpace(strings.TrimPrefix(trimmed, "# --")))
			continue
		case strings.HasPrefix(trimmed, "# @default --"):
			if pending {
				inDef = true
				def = append(def, strings.TrimSpace(strings.TrimPrefix(trimmed, "# @default --")))
			}
			continue
		case strings.HasPrefix(trimmed, "#"):
			if pending {
				text := strings.TrimSpace(strings.TrimPrefix(trimmed, "#"))
				if inDef {
					def = append(def, text)
				} else {
					desc = append(desc, text)
				}
			}
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		if strings.HasPrefix(trimmed, "- ") || trimmed == "-" {
			stack = append(stack, frame{indent: indent})
			reset()
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			reset()
			continue
		}
		path := make([]string, 0, len(stack)+1)
		inList := false
		for _, f := range stack {
			if f.key == "" {
				inList = true
			}
			path = append(path, f.key)
		}
		path = append(path, m[2])
		stack = append(stack, frame{indent: indent, key: m[2]})
		if pending && !inList {
			v, ok := lookup(values, path)
			if !ok {
				return nil, fmt.Errorf("values.yaml:%d: %s is documented but has no value", n, strings.Join(path, "."))
			}
			d := ValueDoc{Key: strings.Join(path, "."), Type: typeOf(v), Description: strings.Join(desc, " ")}
			if len(def) > 0 {
				d.Default = strings.Join(def, " ")
			} else {
				b, err := json.Marshal(v)
				if err != nil {
					return nil, err
				}
				d.Default = "`" + string(b) + "`"
			}
			if d.Description == "" {
				return nil, fmt.Errorf("values.yaml:%d: %s has an empty description", n, d.Key)
			}
			docs = append(docs, d)
		} else if pending && inList {
			return nil, fmt.Errorf("values.yaml:%d: a \"# --\" comment inside a list documents nothing", n)
		}
		reset()
	}
	return docs, s.Err()
}

func lookup(values map[string]any, path []string) (any, bool) {
	var cur any = values
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func typeOf(v any) string {
	switch v := v.(type) {
	case string:
		return "string"
	case bool:
		return "bool"
	case float64:
		if v == math.Trunc(v) {
			return "int"
		}
		return "float"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// Undocumented returns the values (leaves: scalars, lists and empty maps)
// that neither have a "# --" comment nor sit under a documented key.
func Undocumented(data []byte, docs []ValueDoc) ([]string, error) {
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return nil, err
	}
	documented := map[string]bool{}
	for _, d := range docs {
		documented[d.Key] = true
	}
	var missing []string
	var walk func(prefix string, v any, covered bool)
	walk = func(prefix string, v any, covered bool) {
		covered = covered || documented[prefix]
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			for k, child := range m {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, child, covered)
			}
			return
		}
		if !covered {
			missing = append(missing, prefix)
		}
	}
	walk("", values, false)
	sort.Strings(missing)
	return missing, nil
}

// ReadmeData is what README.md.gotmpl sees.
type ReadmeData struct {
	Name, Version, AppVersion, Description string
	// ValuesTable is the Markdown table of every documented value.
	ValuesTable string
}

// GeneratedHeader starts the generated README.
const GeneratedHeader = "<!-- Generated from README.md.gotmpl and values.yaml by `go test ./test/chart -run TestReadme -update`; edit those instead. -->\n\n"

// GenerateReadme renders chartDir/README.md.gotmpl with the values table.
func GenerateReadme(chartDir string) ([]byte, error) {
	values, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	docs, err := ParseValuesDocs(values)
	if err != nil {
		return nil, err
	}
	chartYAML, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	var meta struct {
		Name, Version, AppVersion, Description string
	}
	if err := yaml.Unmarshal(chartYAML, &meta); err != nil {
		return nil, fmt.Errorf("Chart.yaml: %w", err)
	}
	tmplText, err := os.ReadFile(filepath.Join(chartDir, "README.md.gotmpl"))
	if err != nil {
		return nil, err
	}
	tmpl, err := template.New("README.md.gotmpl").Option("missingkey=error").Parse(string(tmplText))
	if err != nil {
		return nil, err
	}
	var table strings.Builder
	table.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	for _, d := range docs {
		fmt.Fprintf(&table, "| `%s` | %s | %s | %s |\n", d.Key, d.Type, cell(d.Default), cell(d.Description))
	}
	var out bytes.Buffer
	out.WriteString(GeneratedHeader)
	err = tmpl.Execute(&out, ReadmeData{
		Name: meta.Name, Version: meta.Version, AppVersion: meta.AppVersion,
		Description: strings.TrimSpace(meta.Description), ValuesTable: strings.TrimSuffix(table.String(), "\n"),
	})
	if err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}
