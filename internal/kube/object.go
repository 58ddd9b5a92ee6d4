package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/releaseutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// Object is a Kubernetes object modelcar renders or applies: a typed API
// object (*appsv1.DaemonSet, ...) with its TypeMeta set, or an
// *unstructured.Unstructured (a chart's output).
type Object interface {
	metav1.Object
	runtime.Object
}

// installRank is helm's install order (releaseutil.InstallOrder): what
// others refer to first (priority classes, RBAC, services) before the
// workloads that use them. Deletion goes the other way.
var installRank = func() map[string]int {
	m := map[string]int{}
	for i, k := range releaseutil.InstallOrder {
		m[k] = i
	}
	return m
}()

// KindOf is o's kind, from its TypeMeta.
func KindOf(o Object) string { return o.GetObjectKind().GroupVersionKind().Kind }

// Sort sorts objs in the stable order Render, Apply and (reversed) Delete
// use: helm's install order of kinds (unknown kinds last, as helm does),
// then kind, namespace and name.
func Sort(objs []Object) {
	rank := func(o Object) int {
		if r, ok := installRank[KindOf(o)]; ok {
			return r
		}
		return len(installRank)
	}
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra < rb
		}
		if ka, kb := KindOf(a), KindOf(b); ka != kb {
			return ka < kb
		}
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
}

// toUnstructured is obj as the map Marshal writes: apiVersion and kind set,
// no status, no null fields (such as an unset creationTimestamp).
func toUnstructured(obj Object) (map[string]any, error) {
	gvk := obj.GetObjectKind().GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return nil, fmt.Errorf("marshaling %T %s: apiVersion and kind are not set", obj, obj.GetName())
	}
	var m map[string]any
	if u, ok := obj.(*unstructured.Unstructured); ok {
		m = runtime.DeepCopyJSON(u.Object)
	} else {
		var err error
		if m, err = runtime.DefaultUnstructuredConverter.ToUnstructured(obj); err != nil {
			return nil, fmt.Errorf("marshaling %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
	}
	delete(m, "status")
	pruneNulls(m)
	if gvk.Kind == "PriorityClass" {
		// Say it, rather than leave it to the reader to know the default.
		if _, ok := m["globalDefault"]; !ok {
			m["globalDefault"] = false
		}
	}
	return m, nil
}

// Marshal returns obj as the JSON document that Render writes and Apply
// sends: apiVersion and kind set, no status, no null fields, keys sorted.
func Marshal(obj Object) ([]byte, error) {
	m, err := toUnstructured(obj)
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// pruneNulls removes null values from maps, recursively.
func pruneNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if e == nil {
				delete(v, k)
				continue
			}
			pruneNulls(e)
		}
	case []any:
		for _, e := range v {
			pruneNulls(e)
		}
	}
}

// Render writes objs to w as a YAML stream, one document per object
// separated by "---", in the order Sort gives (objs itself is not
// reordered). The same objects always render to the same bytes.
func Render(w io.Writer, objs []Object) error {
	sorted := append([]Object(nil), objs...)
	Sort(sorted)
	var buf bytes.Buffer
	for i, o := range sorted {
		js, err := Marshal(o)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return fmt.Errorf("rendering %s %s: %w", KindOf(o), o.GetName(), err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(y)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// resourceName is kubectl's name of an object: "deployment.apps/NAME",
// "service/NAME".
func resourceName(gvk schema.GroupVersionKind, name string) string {
	kind := strings.ToLower(gvk.Kind)
	if g := gvk.Group; g != "" {
		kind += "." + g
	}
	return kind + "/" + name
}

// describe names an object in errors: "Deployment NS/NAME".
func describe(kind, namespace, name string) string {
	if namespace != "" {
		return kind + " " + namespace + "/" + name
	}
	return kind + " " + name
}
