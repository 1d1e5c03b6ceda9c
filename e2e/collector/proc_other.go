//go:build !linux

package collector

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
