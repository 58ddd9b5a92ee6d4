package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// HelmBinary returns the cached helm (HelmVersion) for t, skipping t (or
// failing it under MODELCAR_E2E=1) when it is not built.
func HelmBinary(t testing.TB) string {
	t.Helper()
	return toolBinary(t, "helm")
}

// KubeconformBinary returns the cached kubeconform (KubeconformVersion) for
// t, skipping t (or failing it under MODELCAR_E2E=1) when it is not built.
func KubeconformBinary(t testing.TB) string {
	t.Helper()
	return toolBinary(t, "kubeconform")
}

func toolBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := BinaryPath(name)
	if err != nil {
		if os.Getenv(E2EEnv) == "1" {
			t.Fatalf("%v (%s=1: a missing tool fails instead of skipping)", err, E2EEnv)
		}
		t.Skipf("%v (set %s=1 to fail instead of skipping)", err, E2EEnv)
	}
	return p
}

// DryRunApply sends every object in manifests (YAML or JSON, several
// documents) to the apiserver as a server-side apply with dryRun=All and
// strict field validation, so unknown or duplicated fields, invalid values
// and admission rejections come back as errors without changing anything.
// Helm does not catch unknown fields; this does. Namespaced objects without
// a namespace go to namespace.
func (c *Cluster) DryRunApply(ctx context.Context, namespace string, manifests []byte) error {
	dc, err := discovery.NewDiscoveryClientForConfig(c.config)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(c.config)
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	var errs []error
	for i := 0; ; i++ {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err))
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := obj.GetNamespace()
			if ns == "" {
				ns = namespace
			}
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		data, err := obj.MarshalJSON()
		if err != nil {
			return err
		}
		force := true
		if _, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
			DryRun:          []string{metav1.DryRunAll},
			FieldManager:    "modelcar-testcluster",
			Force:           &force,
			FieldValidation: "Strict",
		}); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err))
		}
	}
	return errors.Join(errs...)
}
