package collector

import "syscall"

// sysProcAttr ties a child's life to the test binary's: a test binary killed
// by a timeout or a panic runs no cleanups, and an orphaned collector or
// builder would keep its ports or burn CPU on a shared CI machine. A new
// process group lets a cancelled build be killed with the go commands it
// spawned.
func sysProcAttr(newGroup bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: newGroup}
}
