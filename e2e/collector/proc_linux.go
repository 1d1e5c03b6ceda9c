package collector

import "syscall"

// sysProcAttr ties the collector's life to the test binary's: a test binary
// killed by a timeout or a panic runs no cleanups, and an orphaned collector
// would keep its ports and burn CPU on a shared CI machine.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
