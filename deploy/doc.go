// Package deploy owns the Helm chart that serves vLLM from a modelcar pinned
// by digest, and its rendering and apply.
//
// It is not implemented yet; the modelcar CLI does not offer deploy until it is.
package deploy
