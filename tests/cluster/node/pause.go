// The real node's pause program: the process that holds a Pod sandbox's namespaces. It
// sleeps until SIGINT or SIGTERM, reaps orphaned children (it is PID 1 when the Pod shares
// its process namespace) and exits 0. Built statically by build-binaries --real-node and
// packed FROM scratch as deposito.test/pause (tests/cluster/node/images).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
