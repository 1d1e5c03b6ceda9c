package features

import (
	"errors"
	"slices"
	"testing"
)

// statusRoot is /proc/self/status of root on sonde's platform: every
// capability but CAP_SYS_RESOURCE.
const statusRoot = `Name:	cat
Umask:	0022
State:	R (running)
Uid:	0	0	0	0
CapInh:	0000000000000000
CapPrm:	000001fffeffffff
CapEff:	000001fffeffffff
CapBnd:	000001fffeffffff
CapAmb:	0000000000000000
NoNewPrivs:	0
`

func TestParseCapEff(t *testing.T) {
	caps, err := parseCapEff([]byte(statusRoot))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Capability{CapBPF, CapPerfmon, CapSysAdmin, CapSysPtrace, CapNetAdmin, CapDACReadSearch} {
		if !caps.Has(c) {
			t.Errorf("%s missing from %#x", c, uint64(caps))
		}
	}
	all := caps.Caps()
	if len(all) != 40 {
		t.Errorf("got %d capabilities, want 40: %v", len(all), all)
	}
	if slices.Contains(all, Capability(24)) || caps.Has(24) {
		t.Errorf("CAP_SYS_RESOURCE (24) decoded as present")
	}
	if got := Capability(24).String(); got != "CAP_SYS_RESOURCE" {
		t.Errorf("Capability(24) = %s", got)
	}
	if got := all[len(all)-1].String(); got != "CAP_CHECKPOINT_RESTORE" {
		t.Errorf("highest capability = %s, want CAP_CHECKPOINT_RESTORE", got)
	}
	if got := Capability(45).String(); got != "CAP_45" {
		t.Errorf("unnamed capability = %s", got)
	}

	// A process of an unprivileged user that only holds CAP_PERFMON.
	caps, err = parseCapEff([]byte("Name:\tx\nCapEff:\t0000004000000000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := caps.Caps(); !slices.Equal(got, []Capability{CapPerfmon}) {
		t.Errorf("caps = %v, want [CAP_PERFMON]", got)
	}

	for _, bad := range []string{"Name:\tx\n", "CapEff:\tzz\n"} {
		if _, err := parseCapEff([]byte(bad)); err == nil {
			t.Errorf("parseCapEff(%q) succeeded", bad)
		}
	}
}

func TestCheckPrivilegesDecision(t *testing.T) {
	set := func(cs ...Capability) CapSet {
		var s CapSet
		for _, c := range cs {
			s |= 1 << c
		}
		return s
	}
	for _, tc := range []struct {
		name              string
		caps              CapSet
		mounted, readable bool
		want              string // "" for no error
	}{
		{"root", set(CapBPF, CapPerfmon, CapSysAdmin, CapDACReadSearch, CapSysPtrace), false, false, ""},
		{"exact set, tracefs mounted", TraceCaps(), true, true, ""},
		{"exact set and mount, tracefs not mounted", TraceCaps() | MountCaps(), false, false, ""},
		{"sys_admin stands in for bpf and perfmon", set(CapSysAdmin, CapSysPtrace, CapDACReadSearch), true, true, ""},
		{"nothing", 0, true, true,
			"sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); missing: CAP_BPF (create maps and load programs), CAP_PERFMON (load and attach tracepoint programs), " +
				"CAP_SYS_PTRACE (read /proc/PID/exe and /proc/PID/fd of other processes), " +
				"CAP_DAC_READ_SEARCH (read /proc/PID/environ and /proc/PID/fd of other users' processes); run as root or grant them"},
		{"no bpf", TraceCaps() &^ set(CapBPF), true, true,
			"sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); missing: CAP_BPF (create maps and load programs); run as root or grant them"},
		{"no perfmon", TraceCaps() &^ set(CapPerfmon), true, true,
			"sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); missing: CAP_PERFMON (load and attach tracepoint programs); run as root or grant them"},
		{"no sys_ptrace", TraceCaps() &^ set(CapSysPtrace), true, true,
			"sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); missing: CAP_SYS_PTRACE (read /proc/PID/exe and /proc/PID/fd of other processes); run as root or grant them"},
		{"no dac_read_search", TraceCaps() &^ set(CapDACReadSearch), true, true,
			"sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); missing: CAP_DAC_READ_SEARCH (read /proc/PID/environ and /proc/PID/fd of other users' processes); run as root or grant them"},
		{"bpf and perfmon only", set(CapBPF, CapPerfmon), true, true,
			"sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); missing: CAP_SYS_PTRACE (read /proc/PID/exe and /proc/PID/fd of other processes), " +
				"CAP_DAC_READ_SEARCH (read /proc/PID/environ and /proc/PID/fd of other users' processes); run as root or grant them"},
		{"cannot mount tracefs", TraceCaps(), false, false,
			"sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root), and CAP_SYS_ADMIN to mount tracefs at /sys/kernel/tracing; missing: CAP_SYS_ADMIN (mount tracefs); run as root or grant them"},
		{"cannot read tracefs", TraceCaps() &^ set(CapDACReadSearch), true, false,
			"sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); tracefs is not readable without CAP_DAC_READ_SEARCH; missing: CAP_DAC_READ_SEARCH (read /proc/PID/environ and /proc/PID/fd of other users' processes); run as root or grant them"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkPrivileges(tc.caps, tc.mounted, tc.readable)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var perr *PrivilegeError
			if !errors.As(err, &perr) {
				t.Fatalf("error %v is not a *PrivilegeError", err)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("message\n got: %s\nwant: %s", got, tc.want)
			}
		})
	}
}

func TestTraceCapsNames(t *testing.T) {
	got := TraceCaps().Names()
	want := []string{"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_PERFMON", "CAP_BPF"}
	if !slices.Equal(got, want) {
		t.Errorf("TraceCaps = %v, want %v", got, want)
	}
	if got := MountCaps().Names(); !slices.Equal(got, []string{"CAP_SYS_ADMIN"}) {
		t.Errorf("MountCaps = %v", got)
	}
	for _, name := range []string{"CAP_BPF", "cap_bpf", "BPF", "bpf"} {
		if c, err := ParseCapability(name); err != nil || c != CapBPF {
			t.Errorf("ParseCapability(%q) = %v, %v", name, c, err)
		}
	}
	if _, err := ParseCapability("CAP_NOPE"); err == nil {
		t.Errorf("ParseCapability accepted CAP_NOPE")
	}
}
