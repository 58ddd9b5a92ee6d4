// Package testcluster owns modelcar's real Kubernetes test cluster: a
// control plane built from source (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) plus kwok, which plays the
// kubelet for fake nodes, all on 127.0.0.1.
//
// It owns:
//
//   - the pinned tool binaries (Tools, Build, BinaryPath): built from the
//     nested modules tools/k8s, tools/etcd and tools/kwok and cached as
//     NAME-VERSION in $MODELCAR_TOOLS_BIN or ~/.cache/modelcar-testenv/tools,
//     the directory internal/testenv's peer tools use;
//   - the cluster's life (Start, Cluster.Stop, StopDir): its own PKI (CA,
//     serving, client and service-account keys), processes started and
//     stopped by PID in dependency order, logs and state under one
//     directory, an admin kubeconfig;
//   - the fake nodes and what their pods do: kwok stages and node fixtures,
//     embedded from testdata/cluster (pods go Scheduled, Pulling, Pulled,
//     Running, Ready, with per-pod delays set by annotations; see
//     PullingDelayAnnotation and its siblings);
//   - the test entry points: Main (TestMain), Shared (one cluster per test
//     process, or the one `make cluster-up` started), Cluster.Namespace,
//     Cluster.AddNodes;
//   - offline manifest validation: Cluster.Schemas (JSON schemas for
//     kubeconform from the live /openapi/v2), Cluster.DryRunApply
//     (server-side apply, dry run, strict field validation), HelmBinary and
//     KubeconformBinary.
//
// Tests that need the cluster skip in `go test -short` and when the binaries
// are missing, unless MODELCAR_E2E=1 (CI), which turns a missing binary into
// a failure. .ci/install-deps.sh builds the binaries; `make cluster-up`
// builds them too when they are missing.
package testcluster
