// Command pause holds a pod's namespaces open for the test node's containerd, as the
// Kubernetes pause image does: it sleeps until SIGINT or SIGTERM, and as PID 1 of the
// sandbox it reaps orphaned children so none are left as zombies.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 16)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			// Reap every child that has exited; WNOHANG returns at once when none has.
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
