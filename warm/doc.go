// Package warm renders and applies what runs in the cluster before traffic:
// pre-pull DaemonSets, GPU node-pool warmers and the vLLM warm-up probe.
//
// It is not implemented yet; the modelcar CLI does not offer warm until it is.
package warm
