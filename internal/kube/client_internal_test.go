package kube

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestSameObjectIgnoresControllerStatusWrites: an apply that changed
// nothing reads as unchanged although the DaemonSet controller's status
// writes (a managedFields entry for the status subresource) moved on.
func TestSameObjectIgnoresControllerStatusWrites(t *testing.T) {
	ds := func(statusFields string, image string) *unstructured.Unstructured {
		d := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", ResourceVersion: "1",
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "modelcar", Operation: metav1.ManagedFieldsOperationApply, FieldsType: "FieldsV1",
					FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{}}`)}},
				{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status", FieldsType: "FieldsV1",
					FieldsV1: &metav1.FieldsV1{Raw: []byte(statusFields)}},
			}}}
		d.Spec.Template.Spec.Containers = nil
		d.Spec.Template.Annotations = map[string]string{"image": image}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d)
		if err != nil {
			t.Fatal(err)
		}
		return &unstructured.Unstructured{Object: m}
	}
	before := ds(`{"f:status":{"f:desiredNumberScheduled":{}}}`, "a")
	after := ds(`{"f:status":{"f:desiredNumberScheduled":{},"f:numberReady":{}}}`, "a")
	after.SetResourceVersion("2")
	if !sameObject(before, after) {
		t.Error("a status-only managedFields change counts as configured")
	}
	if sameObject(before, ds(`{"f:status":{"f:desiredNumberScheduled":{}}}`, "b")) {
		t.Error("a spec change counts as unchanged")
	}
}
