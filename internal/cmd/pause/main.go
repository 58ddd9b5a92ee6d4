// Command pause is the sandbox ("pause") container of modelcar's real test
// node (internal/testcluster): it holds a pod's namespaces open and does
// nothing else until it is told to stop. The node cannot pull a public pause
// image, so the test cluster builds this one and imports it into the node's
// containerd.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
