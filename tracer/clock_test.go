package tracer

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func monotonicNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

func TestClockWall(t *testing.T) {
	// A preemption at the wrong moment can spoil one sync by as long as the
	// thread was off the CPU, so the best of a few attempts is judged: a
	// wrong conversion is off by far more than this on every attempt.
	const slack = 3 * time.Millisecond
	best := time.Duration(1<<63 - 1)
	var c clock
	for range 20 {
		if err := c.sync(); err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		got := c.wall(monotonicNow(t))
		after := time.Now()
		var off time.Duration
		switch {
		case got.Before(before):
			off = before.Sub(got)
		case got.After(after):
			off = got.Sub(after)
		}
		best = min(best, off)
		if best <= slack {
			break
		}
	}
	if best > slack {
		t.Errorf("wall(now) is %v away from time.Now() at best", best)
	}
	if c.offset <= 0 {
		t.Errorf("offset %d: realtime should be far ahead of monotonic", c.offset)
	}

	// Later stamps map to later times, nanosecond for nanosecond.
	m := monotonicNow(t)
	if d := c.wall(m + 1500).Sub(c.wall(m)); d != 1500*time.Nanosecond {
		t.Errorf("1500 ns apart in monotonic time, %v apart in wall time", d)
	}
	if w := c.wall(0); !w.Equal(time.Unix(0, c.offset)) {
		t.Errorf("wall(0) = %v, want the boot time %v", w, time.Unix(0, c.offset))
	}
}
