// Package kube owns how modelcar talks to a Kubernetes cluster, so that
// warm, deploy, plan and measure build objects and read state while one
// place connects and sends:
//
//   - Flags: the kubectl-style connection flags (--kubeconfig, --context,
//     -n/--namespace) on cli-runtime's ConfigFlags, found as kubectl finds
//     them, with one User-Agent for every request;
//   - Client: a clientset for reading, and one server-side applier over the
//     dynamic client and a discovery RESTMapper (so CRD kinds such as KEDA's
//     ScaledObject apply once installed), in helm's install order, reporting
//     created, configured or unchanged per object;
//   - Delete of what modelcar created (refusing objects without the
//     caller's labels), in the reverse order;
//   - Render and Marshal: the stable YAML and JSON forms of objects, and the
//     kubectl-style result lines.
//
// kube imports no modelcar package; the CLI alone knows flag names beyond
// the connection flags this package registers.
package kube
