// Package measure splits cold starts into provisioning, image pull, model
// load and warm-up from Pods, Events, Nodes and vLLM logs, and writes reports.
//
// It is not implemented yet; the modelcar CLI does not offer measure until it is.
package measure
