package testcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SchemaLocation is the kubeconform -schema-location template for a
// directory Schemas wrote: kubeconform expands it to
// DIR/{kind}-{group}-{version}.json (DIR/{kind}-{version}.json for the core
// group), the file names of github.com/yannh/kubernetes-json-schema.
func SchemaLocation(dir string) string {
	return filepath.Join(dir, "{{ .ResourceKind }}{{ .KindSuffix }}.json")
}

// Schemas writes one standalone JSON schema per API kind the live apiserver
// serves (from its /openapi/v2) into dir, in the layout SchemaLocation
// names, and returns that -schema-location template. So kubeconform can
// validate manifests offline against exactly this cluster's API:
//
//	kubeconform -strict -summary -schema-location "$(location)" FILE...
//
// The schemas are what kubeconform's openapi2jsonschema produces in
// "standalone strict" mode: each file carries the definitions it references
// (so no file refers to another), every object with properties rejects
// unknown ones (additionalProperties: false, catching misspelled fields),
// optional fields accept null, IntOrString accepts a string or an integer
// and Quantity a string or a number.
func (c *Cluster) Schemas(ctx context.Context, dir string) (string, error) {
	raw, err := c.client.Discovery().RESTClient().Get().AbsPath("/openapi/v2").
		SetHeader("Accept", "application/json").DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("testcluster: GET /openapi/v2: %w", err)
	}
	n, err := WriteSchemas(raw, dir)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", fmt.Errorf("testcluster: /openapi/v2 has no kinds")
	}
	return SchemaLocation(dir), nil
}

// WriteSchemas converts an OpenAPI v2 document (JSON) into standalone strict
// JSON schemas in dir (see Schemas) and returns how many files it wrote.
func WriteSchemas(openapiV2 []byte, dir string) (int, error) {
	var doc struct {
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(openapiV2, &doc); err != nil {
		return 0, fmt.Errorf("testcluster: parsing OpenAPI v2: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	defs := map[string]any{}
	for name, d := range doc.Definitions {
		defs[name] = convertSchema(name, d)
	}
	names := make([]string, 0, len(doc.Definitions))
	for name := range doc.Definitions {
		names = append(names, name)
	}
	sort.Strings(names)
	written := map[string]string{}
	for _, name := range names {
		def, ok := doc.Definitions[name].(map[string]any)
		if !ok {
			continue
		}
		for _, gvk := range groupVersionKinds(def) {
			file := schemaFileName(gvk.group, gvk.version, gvk.kind)
			if _, dup := written[file]; dup {
				continue // several definitions name this kind: keep the first
			}
			schema := standalone(name, defs)
			data, err := json.MarshalIndent(schema, "", "  ")
			if err != nil {
				return 0, err
			}
			if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
				return 0, err
			}
			written[file] = name
		}
	}
	return len(written), nil
}

type gvk struct{ group, version, kind string }

func groupVersionKinds(def map[string]any) []gvk {
	list, _ := def["x-kubernetes-group-version-kind"].([]any)
	var out []gvk
	for _, item := range list {
		m, _ := item.(map[string]any)
		g, _ := m["group"].(string)
		v, _ := m["version"].(string)
		k, _ := m["kind"].(string)
		if v != "" && k != "" {
			out = append(out, gvk{g, v, k})
		}
	}
	return out
}

// schemaFileName is kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json
// for apiVersion group/version (or version) and kind: the kind and the
// group's first DNS label in lower case.
func schemaFileName(group, version, kind string) string {
	suffix := "-" + strings.ToLower(version)
	if group != "" {
		suffix = "-" + strings.ToLower(strings.Split(group, ".")[0]) + "-" + strings.ToLower(version)
	}
	return strings.ToLower(kind) + suffix + ".json"
}

const refPrefix = "#/definitions/"

// standalone returns the schema of definition root with every definition it
// references, directly or not, under "definitions".
func standalone(root string, defs map[string]any) map[string]any {
	seen := map[string]bool{root: true}
	queue := []string{root}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		walkRefs(defs[name], func(ref string) {
			if !seen[ref] {
				if _, ok := defs[ref]; ok {
					seen[ref] = true
					queue = append(queue, ref)
				}
			}
		})
	}
	out := map[string]any{}
	if m, ok := defs[root].(map[string]any); ok {
		for k, v := range m {
			out[k] = v
		}
	}
	included := map[string]any{}
	for name := range seen {
		if name != root {
			included[name] = defs[name]
		}
	}
	// The root may refer to itself (JSONSchemaProps does): keep it under
	// definitions too.
	selfRef := false
	walkRefs(defs[root], func(ref string) { selfRef = selfRef || ref == root })
	if selfRef {
		included[root] = defs[root]
	}
	if len(included) > 0 {
		out["definitions"] = included
	}
	return out
}

func walkRefs(v any, f func(string)) {
	switch t := v.(type) {
	case map[string]any:
		if ref, ok := t["$ref"].(string); ok && strings.HasPrefix(ref, refPrefix) {
			f(strings.TrimPrefix(ref, refPrefix))
		}
		for _, x := range t {
			walkRefs(x, f)
		}
	case []any:
		for _, x := range t {
			walkRefs(x, f)
		}
	}
}

// convertSchema applies the standalone-strict conversions to one
// definition.
func convertSchema(name string, v any) any {
	switch name {
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	}
	return convert(v)
}

func convert(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t)+1)
		for k, x := range t {
			out[k] = convert(x)
		}
		if f, _ := out["format"].(string); f == "int-or-string" {
			return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		}
		if props, ok := out["properties"].(map[string]any); ok {
			if _, has := out["additionalProperties"]; !has {
				out["additionalProperties"] = false
			}
			required := map[string]bool{}
			if req, ok := out["required"].([]any); ok {
				for _, r := range req {
					if s, ok := r.(string); ok {
						required[s] = true
					}
				}
			}
			for k, p := range props {
				if !required[k] {
					props[k] = nullable(p)
				}
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = convert(x)
		}
		return out
	default:
		return v
	}
}

// nullable lets an optional field be null, as the API server does.
func nullable(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	if typ, ok := m["type"].(string); ok {
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[k] = x
		}
		out["type"] = []any{typ, "null"}
		return out
	}
	if ref, ok := m["$ref"].(string); ok {
		// draft 4 ignores keywords next to $ref: wrap it.
		return map[string]any{"oneOf": []any{map[string]any{"$ref": ref}, map[string]any{"type": "null"}}}
	}
	if _, ok := m["oneOf"]; ok {
		return map[string]any{"oneOf": []any{m, map[string]any{"type": "null"}}}
	}
	return v
}
