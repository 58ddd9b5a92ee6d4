package plan

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcar/modelcar/warm"
)

// SnapshotterLabel is the node label (or annotation) that tells Discover
// which containerd snapshotter a node uses (overlayfs, stargz, ...): the
// API does not show it, so whoever installs the snapshotter sets it.
const SnapshotterLabel = "modelcar.dev/snapshotter"

// A Discovery is what Discover learned, where from, and what it could not.
type Discovery struct {
	Facts   Facts
	Sources Sources
	Notes   []string
}

// Discover learns facts from a live cluster: the server version, and from
// the GPU nodes (those matching nodeSelector; when none does, those with
// nvidia.com/gpu allocatable) the container runtime, SnapshotterLabel,
// the GPUs and the ephemeral storage per node; and whether modelcar's
// pre-pull DaemonSets and pool Deployments run already. Only the server
// version is required: what it may not list (RBAC) stays unknown, with a
// note. The ImageVolume feature gate is not observable: imageVolumes
// follows from the version (see Facts).
func Discover(ctx context.Context, cs kubernetes.Interface, nodeSelector map[string]string) (*Discovery, error) {
	d := &Discovery{Sources: Sources{}}
	sv, err := cs.Discovery().ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("asking the API server its version: %w", err)
	}
	d.Facts.KubernetesVersion = strings.TrimPrefix(sv.GitVersion, "v")
	d.Sources["kubernetesVersion"] = "live: server version " + sv.GitVersion

	if err := d.nodes(ctx, cs, nodeSelector); err != nil {
		d.Notes = append(d.Notes, "nodes not listed: "+brief(err))
	}
	if err := d.warmObjects(ctx, cs); err != nil {
		d.Notes = append(d.Notes, "modelcar's warm objects not listed: "+brief(err))
	}
	return d, nil
}

func brief(err error) string {
	if apierrors.IsForbidden(err) {
		return "forbidden (RBAC): those facts stay unknown"
	}
	return err.Error()
}

func (d *Discovery) nodes(ctx context.Context, cs kubernetes.Interface, nodeSelector map[string]string) error {
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var nodes, withGPUs []corev1.Node
	sel := labels.SelectorFromSet(nodeSelector)
	for _, n := range list.Items {
		if len(nodeSelector) > 0 && sel.Matches(labels.Set(n.Labels)) {
			nodes = append(nodes, n)
		}
		if gpus(&n) > 0 {
			withGPUs = append(withGPUs, n)
		}
	}
	what := "nodes " + sel.String()
	if len(nodes) == 0 {
		byGPU := "nodes with " + warm.DefaultGPUResource + " allocatable"
		if len(nodeSelector) > 0 && len(withGPUs) > 0 {
			d.Notes = append(d.Notes, fmt.Sprintf("no node matches %s: the facts are the %s", sel, byGPU))
		}
		nodes, what = withGPUs, byGPU
	}
	if len(nodes) == 0 {
		d.Notes = append(d.Notes, "no GPU node found ("+what+"): node facts unknown")
		return nil
	}
	src := fmt.Sprintf("live: %d %s", len(nodes), what)
	runtimes := map[string]int{}
	snaps := map[string]int{}
	cache := math.Inf(1)
	for i := range nodes {
		n := &nodes[i]
		if rv := n.Status.NodeInfo.ContainerRuntimeVersion; rv != "" {
			runtimes[rv]++
		}
		s := cmp.Or(n.Labels[SnapshotterLabel], n.Annotations[SnapshotterLabel])
		snaps[s]++
		d.Facts.GPUsPerNode = max(d.Facts.GPUsPerNode, gpus(n))
		if q, ok := n.Status.Allocatable[corev1.ResourceEphemeralStorage]; ok {
			cache = min(cache, float64(q.Value())/(1<<30))
		}
	}
	if rv := mostCommon(runtimes); rv != "" {
		d.Facts.ContainerRuntime = rv
		d.Sources["containerRuntime"] = src + " (nodeInfo.containerRuntimeVersion)"
		if len(runtimes) > 1 {
			d.Notes = append(d.Notes, fmt.Sprintf("the GPU nodes run different container runtimes (%s): the plan assumes %s", strings.Join(sortedKeys(runtimes), ", "), rv))
		}
	}
	switch s := mostCommon(snaps); {
	case len(snaps) > 1:
		d.Notes = append(d.Notes, fmt.Sprintf("the GPU nodes disagree on %s (%s): snapshotter unknown", SnapshotterLabel, strings.Join(sortedKeys(snaps), ", ")))
	case s == "":
		d.Notes = append(d.Notes, fmt.Sprintf("no GPU node has the label or annotation %s: snapshotter unknown (the API does not show it)", SnapshotterLabel))
	case !slices.Contains(Snapshotters, s):
		d.Notes = append(d.Notes, fmt.Sprintf("%s=%q is not one of %s: snapshotter unknown", SnapshotterLabel, s, strings.Join(Snapshotters, ", ")))
	default:
		d.Facts.Snapshotter = s
		d.Sources["snapshotter"] = src + " (" + SnapshotterLabel + ")"
	}
	if d.Facts.GPUsPerNode > 0 {
		d.Sources["gpusPerNode"] = src + " (largest " + warm.DefaultGPUResource + " allocatable)"
	}
	if !math.IsInf(cache, 1) && cache > 0 {
		d.Facts.NodeImageCacheGiB = math.Round(cache*10) / 10
		d.Sources["nodeImageCacheGiB"] = src + " (smallest ephemeral-storage allocatable: images are assumed on the kubelet's root filesystem)"
	}
	return nil
}

// warmObjects looks for modelcar's pool Deployments (with replicas) and
// pre-pull DaemonSets in every namespace.
func (d *Discovery) warmObjects(ctx context.Context, cs kubernetes.Interface) error {
	sel := func(component string) metav1.ListOptions {
		return metav1.ListOptions{LabelSelector: labels.SelectorFromSet(map[string]string{
			warm.ManagedByLabel: warm.ManagedByValue, warm.ComponentLabel: component}).String()}
	}
	deps, err := cs.AppsV1().Deployments(metav1.NamespaceAll).List(ctx, sel(warm.PoolComponent))
	if err != nil {
		return err
	}
	var pools []string
	for _, dep := range deps.Items {
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas > 0 {
			pools = append(pools, dep.Namespace+"/"+dep.Name)
		}
	}
	d.Facts.GPUNodeWarmPool = new(len(pools) > 0)
	d.Sources["gpuNodeWarmPool"] = "live: " + describeFound(pools, "modelcar pool Deployment with replicas")
	dss, err := cs.AppsV1().DaemonSets(metav1.NamespaceAll).List(ctx, sel(warm.PrepullComponent))
	if err != nil {
		return err
	}
	var prepulls []string
	for _, ds := range dss.Items {
		prepulls = append(prepulls, ds.Namespace+"/"+ds.Name)
	}
	d.Facts.Prepull = new(len(prepulls) > 0)
	d.Sources["prepull"] = "live: " + describeFound(prepulls, "modelcar pre-pull DaemonSet")
	return nil
}

func describeFound(names []string, what string) string {
	if len(names) == 0 {
		return "no " + what
	}
	slices.Sort(names)
	return what + " " + strings.Join(names, ", ")
}

func gpus(n *corev1.Node) int64 {
	q, ok := n.Status.Allocatable[corev1.ResourceName(warm.DefaultGPUResource)]
	if !ok {
		return 0
	}
	return q.Value()
}

// mostCommon returns the key with the highest count (ties: the first by
// name).
func mostCommon(counts map[string]int) string {
	best, bestN := "", 0
	for _, k := range sortedKeys(counts) {
		if counts[k] > bestN {
			best, bestN = k, counts[k]
		}
	}
	return best
}
