// Package push moves modelcars between registries, OCI image layouts and
// OCI archives, and extracts a model back to a directory.
//
// It is not implemented yet: the modelcar CLI does not offer push, pull or
// mirror until this package does.
package push
