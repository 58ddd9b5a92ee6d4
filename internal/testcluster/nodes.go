package testcluster

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The kwok configuration, stages and node fixtures, copied from
// testdata/cluster (TestFixturesMatchTestdata checks the copies agree).
//
//go:generate sh -c "cp ../../testdata/cluster/*.yaml fixtures/"
//go:embed fixtures/*.yaml
var fixtures embed.FS

// kwokConfigFiles are the fixtures kwok reads (--config each).
var kwokConfigFiles = []string{"kwok.yaml", "stages-node.yaml", "stages-pod.yaml"}

// Annotations a pod (template) may carry to set how long each simulated
// step takes, as a Go duration ("90s"); each defaults to 0. See
// testdata/cluster/stages-pod.yaml.
const (
	// PullingDelayAnnotation: from being bound to a node to the Pulling
	// event (status: Pending, ContainerCreating).
	PullingDelayAnnotation = "modelcar.test/pulling-delay"
	// PullDelayAnnotation: from Pulling to the Pulled event (the image
	// pull).
	PullDelayAnnotation = "modelcar.test/pull-delay"
	// StartDelayAnnotation: from Pulled to Created and Started events and
	// phase Running.
	StartDelayAnnotation = "modelcar.test/start-delay"
	// ReadyDelayAnnotation: from Running to Ready (a model load).
	ReadyDelayAnnotation = "modelcar.test/ready-delay"
	// CompleteDelayAnnotation: for pods owned by a Job, from Ready to
	// Succeeded.
	CompleteDelayAnnotation = "modelcar.test/complete-delay"
)

// Event reasons the kwok stages emit (core/v1 events, source kwok_controller),
// besides the scheduler's "Scheduled".
const (
	ReasonPulling = "Pulling"
	ReasonPulled  = "Pulled"
	ReasonCreated = "Created"
	ReasonStarted = "Started"
)

// What the GPU fixtures look like: the label, resource and taint GPU nodes
// carry (NodePool with GPUs > 0 makes the same), and the fixture pools.
const (
	GPUPresentLabel   = "nvidia.com/gpu.present"
	GPUResource       = corev1.ResourceName("nvidia.com/gpu")
	GPUTaintKey       = "nvidia.com/gpu"
	GPUTaintValue     = "present"
	InstanceTypeLabel = "node.kubernetes.io/instance-type"
	// PoolLabel names a node's pool: "gpu" and "cpu" for the fixtures,
	// NodePool.Name for nodes a test adds.
	PoolLabel = "modelcar.test/pool"

	FixtureGPUNodesPerPool = 2 // gpu-0, gpu-1
	FixtureGPUsPerNode     = 4
	FixtureGPUInstanceType = "g5.12xlarge"
	FixtureCPUInstanceType = "m6i.4xlarge"
)

const fixtureNodesFile = "nodes.yaml"

// GPUToleration tolerates the GPU nodes' taint.
func GPUToleration() corev1.Toleration {
	return corev1.Toleration{Key: GPUTaintKey, Operator: corev1.TolerationOpEqual, Value: GPUTaintValue, Effect: corev1.TaintEffectNoSchedule}
}

// Fixture returns the content of one embedded fixture file (kwok.yaml,
// stages-node.yaml, stages-pod.yaml, nodes.yaml).
func Fixture(name string) ([]byte, error) {
	return fixtures.ReadFile("fixtures/" + name)
}

// writeKwokConfig writes kwok's configuration files into dir and returns
// their paths.
func writeKwokConfig(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, name := range kwokConfigFiles {
		data, err := Fixture(name)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// fixtureNodes decodes nodes.yaml.
func fixtureNodes() ([]*corev1.Node, error) {
	data, err := Fixture(fixtureNodesFile)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var nodes []*corev1.Node
	for {
		var n corev1.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("testcluster: %s: %w", fixtureNodesFile, err)
		}
		if n.Name == "" {
			continue
		}
		nodes = append(nodes, &n)
	}
	return nodes, nil
}

// createNodes creates nodes (an existing one is left as it is).
func (c *Cluster) createNodes(ctx context.Context, nodes []*corev1.Node) error {
	for _, n := range nodes {
		if _, err := c.client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("testcluster: creating node %s: %w", n.Name, err)
		}
	}
	return nil
}

// NodePool describes fake nodes a test adds with AddNodes.
type NodePool struct {
	// Name prefixes the node names (NAME-0, NAME-1, ...) and is the value
	// of their modelcar.test/pool label.
	Name  string
	Count int
	// GPUs per node: when > 0 the nodes look like the GPU fixtures
	// (nvidia.com/gpu.present=true, nvidia.com/gpu allocatable, the
	// nvidia.com/gpu=present:NoSchedule taint).
	GPUs int
	// Labels and Taints are added to the defaults. A private taint keeps
	// other tests' pods off the pool.
	Labels map[string]string
	Taints []corev1.Taint
	// CPU and Memory allocatable (default 48 and 192Gi).
	CPU, Memory string
}

// Nodes returns the nodes p describes, ready to create.
func (p NodePool) Nodes() []*corev1.Node {
	cpu, mem := p.CPU, p.Memory
	if cpu == "" {
		cpu = "48"
	}
	if mem == "" {
		mem = "192Gi"
	}
	var out []*corev1.Node
	for i := range p.Count {
		name := p.Name + "-" + strconv.Itoa(i)
		labels := map[string]string{
			ManagedNodeLabelKey:      ManagedNodeLabelValue,
			"kubernetes.io/hostname": name,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     "amd64",
			PoolLabel:                p.Name,
		}
		res := corev1.ResourceList{
			corev1.ResourceCPU:              resource.MustParse(cpu),
			corev1.ResourceMemory:           resource.MustParse(mem),
			corev1.ResourcePods:             resource.MustParse("110"),
			corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
		}
		var taints []corev1.Taint
		if p.GPUs > 0 {
			labels[GPUPresentLabel] = "true"
			labels["nvidia.com/gpu.count"] = strconv.Itoa(p.GPUs)
			labels["nvidia.com/gpu.product"] = "NVIDIA-A10G"
			labels[InstanceTypeLabel] = FixtureGPUInstanceType
			res[GPUResource] = *resource.NewQuantity(int64(p.GPUs), resource.DecimalSI)
			taints = append(taints, corev1.Taint{Key: GPUTaintKey, Value: GPUTaintValue, Effect: corev1.TaintEffectNoSchedule})
		}
		for k, v := range p.Labels {
			labels[k] = v
		}
		taints = append(taints, p.Taints...)
		out = append(out, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Labels:      labels,
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			},
			Spec: corev1.NodeSpec{Taints: taints},
			Status: corev1.NodeStatus{
				Capacity:    res.DeepCopy(),
				Allocatable: res.DeepCopy(),
			},
		})
	}
	return out
}

// AddNodes creates the nodes pool describes and waits until kwok has made
// them Ready and schedulable. It returns their names (also on error, for
// cleaning up).
func (c *Cluster) AddNodes(ctx context.Context, pool NodePool) ([]string, error) {
	nodes := pool.Nodes()
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	if err := c.createNodes(ctx, nodes); err != nil {
		return names, err
	}
	return names, c.waitNodesSchedulable(ctx, nil, names, nodesReadyTimeout)
}

// DeleteNodes deletes the named nodes (missing ones are ignored).
func (c *Cluster) DeleteNodes(ctx context.Context, names ...string) error {
	var errs []error
	for _, n := range names {
		if err := c.client.CoreV1().Nodes().Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CreateNamespace creates a namespace named prefix plus a random suffix and
// waits for its default service account (pods cannot be created before).
func (c *Cluster) CreateNamespace(ctx context.Context, prefix string) (string, error) {
	ns, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: map[string]string{"modelcar.test/owner": "testcluster"}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return ns.Name, c.waitDefaultServiceAccount(ctx, ns.Name, 30*time.Second)
}
