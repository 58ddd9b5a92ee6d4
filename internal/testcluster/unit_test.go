package testcluster

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/modelcar/modelcar/internal/toolcache"
)

// Tests in this file need no cluster and no binaries.

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := FindRepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestToolVersionsPinned: the versions in the code are the ones the nested
// tools modules require, and each module names its binaries as tools.
func TestToolVersionsPinned(t *testing.T) {
	root := repoRoot(t)
	for _, tool := range Tools {
		if tool.Module == "" { // a program of this repository
			continue
		}
		gomod := filepath.Join(root, tool.ModuleDir, "go.mod")
		v, err := toolcache.RequiredVersion(gomod, tool.Module)
		if err != nil {
			t.Errorf("%s: %v", tool.Name, err)
			continue
		}
		if v != tool.Version {
			t.Errorf("%s: %s requires %s %s, the code pins %s", tool.Name, gomod, tool.Module, v, tool.Version)
		}
		data, err := os.ReadFile(gomod)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "\t"+tool.Package+"\n") && !strings.Contains(string(data), "tool "+tool.Package+"\n") {
			t.Errorf("%s: %s has no tool directive for %s", tool.Name, gomod, tool.Package)
		}
	}
}

// TestFixturesMatchTestdata: the embedded fixtures are testdata/cluster's
// (run `go generate ./internal/testcluster` after editing those).
func TestFixturesMatchTestdata(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "testdata", "cluster")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		n++
		want, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Fixture(e.Name())
		if err != nil {
			t.Errorf("%s not embedded: %v (run go generate ./internal/testcluster)", e.Name(), err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("embedded %s differs from testdata/cluster/%s (run go generate ./internal/testcluster)", e.Name(), e.Name())
		}
	}
	if n != 4 {
		t.Errorf("testdata/cluster has %d YAML files, want 4", n)
	}
}

// TestKwokConfig: kwok does not default a configuration read from a file,
// so every parallelism must be set, and stages parse as kwok documents.
func TestKwokConfig(t *testing.T) {
	for _, name := range kwokConfigFiles {
		data, err := Fixture(name)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			switch doc["kind"] {
			case "KwokConfiguration":
				opts, _ := doc["options"].(map[string]any)
				for _, k := range []string{"podPlayStageParallelism", "nodePlayStageParallelism", "nodeLeaseParallelism", "podsOnNodeSyncParallelism", "nodeLeaseDurationSeconds"} {
					if v, ok := opts[k].(float64); !ok || v <= 0 {
						t.Errorf("%s: options.%s = %v, want > 0", name, k, opts[k])
					}
				}
				if opts["manageNodesWithLabelSelector"] != ManagedNodeLabelKey+"="+ManagedNodeLabelValue {
					t.Errorf("%s: manageNodesWithLabelSelector = %v", name, opts["manageNodesWithLabelSelector"])
				}
			case "Stage":
				spec, _ := doc["spec"].(map[string]any)
				if spec["resourceRef"] == nil || spec["steps"] == nil {
					t.Errorf("%s: stage %v without resourceRef or steps", name, doc["metadata"])
				}
			default:
				t.Errorf("%s: unexpected kind %v", name, doc["kind"])
			}
		}
	}
}

func TestFixtureNodes(t *testing.T) {
	nodes, err := fixtureNodes()
	if err != nil {
		t.Fatal(err)
	}
	gpu, cpu := 0, 0
	for _, n := range nodes {
		if n.Labels[ManagedNodeLabelKey] != ManagedNodeLabelValue {
			t.Errorf("node %s is not managed by kwok (label %s=%s)", n.Name, ManagedNodeLabelKey, ManagedNodeLabelValue)
		}
		q, has := n.Status.Allocatable[GPUResource]
		if n.Labels[GPUPresentLabel] == "true" {
			gpu++
			if !has || q.Value() != FixtureGPUsPerNode {
				t.Errorf("GPU node %s: allocatable %s = %v, want %d", n.Name, GPUResource, q.String(), FixtureGPUsPerNode)
			}
			if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != GPUTaintKey || n.Spec.Taints[0].Value != GPUTaintValue {
				t.Errorf("GPU node %s: taints %v", n.Name, n.Spec.Taints)
			}
			if n.Labels[InstanceTypeLabel] == "" {
				t.Errorf("GPU node %s: no %s", n.Name, InstanceTypeLabel)
			}
		} else {
			cpu++
			if has {
				t.Errorf("CPU node %s has GPUs", n.Name)
			}
		}
	}
	if gpu != FixtureGPUNodesPerPool || cpu != 2 {
		t.Errorf("fixtures: %d GPU and %d CPU nodes, want %d and 2", gpu, cpu, FixtureGPUNodesPerPool)
	}
}

func TestPKI(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	readCert := func(path string) *x509.Certificate {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	ca := readCert(p.CACert)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	serving := readCert(p.ServingCert)
	if _, err := serving.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: roots}); err != nil {
		t.Errorf("serving certificate for 127.0.0.1: %v", err)
	}
	if _, err := serving.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots}); err != nil {
		t.Errorf("serving certificate for localhost: %v", err)
	}
	admin := readCert(p.AdminCert)
	if _, err := admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate: %v", err)
	}
	if got := admin.Subject.Organization; len(got) != 1 || got[0] != "system:masters" {
		t.Errorf("admin organization %v", got)
	}
	if _, err := p.adminTLSConfig(); err != nil {
		t.Error(err)
	}
	for _, f := range []string{p.SAKey, p.SAPub, p.CAKey, p.ServingKey, p.AdminKey} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
}

func TestSchemaFileName(t *testing.T) {
	for _, tc := range []struct{ group, version, kind, want string }{
		{"", "v1", "Pod", "pod-v1.json"},
		{"apps", "v1", "Deployment", "deployment-apps-v1.json"},
		{"scheduling.k8s.io", "v1", "PriorityClass", "priorityclass-scheduling-v1.json"},
		{"rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterrole-rbac-v1.json"},
	} {
		if got := schemaFileName(tc.group, tc.version, tc.kind); got != tc.want {
			t.Errorf("schemaFileName(%q, %q, %q) = %q, want %q", tc.group, tc.version, tc.kind, got, tc.want)
		}
	}
}

func TestWriteSchemasStandalone(t *testing.T) {
	doc := []byte(`{"definitions": {
	  "io.k8s.api.apps.v1.Thing": {
	    "type": "object",
	    "required": ["spec"],
	    "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.ThingSpec"}, "note": {"type": "string"}},
	    "x-kubernetes-group-version-kind": [{"group": "apps", "version": "v1", "kind": "Thing"}]
	  },
	  "io.k8s.api.apps.v1.ThingSpec": {
	    "type": "object",
	    "properties": {"port": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}, "self": {"$ref": "#/definitions/io.k8s.api.apps.v1.ThingSpec"}}
	  },
	  "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
	  "io.k8s.api.apps.v1.Unused": {"type": "object"}
	}}`)
	dir := t.TempDir()
	n, err := WriteSchemas(doc, dir)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("wrote %d schemas, want 1", n)
	}
	data, err := os.ReadFile(filepath.Join(dir, "thing-apps-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{`"additionalProperties": false`, `"io.k8s.api.apps.v1.ThingSpec"`, `"integer"`, `"null"`} {
		if !strings.Contains(s, want) {
			t.Errorf("schema lacks %s:\n%s", want, s)
		}
	}
	if strings.Contains(s, "Unused") {
		t.Errorf("schema carries an unreferenced definition:\n%s", s)
	}
	if got := SchemaLocation(dir); !strings.HasSuffix(got, "/{{ .ResourceKind }}{{ .KindSuffix }}.json") {
		t.Errorf("SchemaLocation = %q", got)
	}
}

func TestProcessStopDir(t *testing.T) {
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep command")
	}
	p, err := startProcess(dir, "sleeper", sleep, []string{"300"}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	procs, err := readPIDs(dir)
	if err != nil || len(procs) != 1 || procs[0].pid != p.pid {
		t.Fatalf("PID file: %v %v", procs, err)
	}
	if !procs[0].alive() {
		t.Fatal("recorded process not alive")
	}
	if err := StopDir(dir); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if procs[0].alive() {
		t.Error("process alive after StopDir")
	}
	if _, err := os.Stat(filepath.Join(dir, PIDFile)); !os.IsNotExist(err) {
		t.Errorf("PID file left: %v", err)
	}
	// A PID file naming a process that is not ours is not signalled.
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte(fmt.Sprintf("other %d /nonexistent\n", os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := StopDir(dir); err != nil {
		t.Fatal(err)
	}
}

func TestExitErrorPortInUse(t *testing.T) {
	log := filepath.Join(t.TempDir(), "etcd.log")
	if err := os.WriteFile(log, []byte("listen tcp 127.0.0.1:2379: bind: address already in use\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &process{name: "etcd", log: log, err: errors.New("exit status 1")}
	if err := p.exitError(); !errors.Is(err, errPortInUse) {
		t.Errorf("exitError() = %v, want errPortInUse", err)
	}
	if err := os.WriteFile(log, []byte("panic: something else\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.exitError(); errors.Is(err, errPortInUse) {
		t.Errorf("exitError() = %v, not a port conflict", err)
	}
}
