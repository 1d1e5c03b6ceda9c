package tracer

import (
	"time"

	"golang.org/x/sys/unix"
)

// clock turns the kernel's CLOCK_MONOTONIC stamps into wall-clock times. The
// offset is re-read periodically so that NTP slewing does not accumulate.
type clock struct {
	offset int64 // realtime - monotonic, ns
}

func (c *clock) sync() error {
	// Bracket the realtime read between two monotonic reads and use their
	// midpoint, which halves the error of a preemption between the calls.
	var m1, r, m2 unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &m1); err != nil {
		return err
	}
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &r); err != nil {
		return err
	}
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &m2); err != nil {
		return err
	}
	mono := (m1.Nano() + m2.Nano()) / 2
	c.offset = r.Nano() - mono
	return nil
}

func (c *clock) wall(mono uint64) time.Time {
	return time.Unix(0, int64(mono)+c.offset)
}
