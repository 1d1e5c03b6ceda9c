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
		{"root", set(CapBPF, CapPerfmon, CapSysAdmin, CapDACReadSearch), false, false, ""},
		{"sys_admin stands in", set(CapSysAdmin), true, true, ""},
		{"bpf and perfmon, tracefs mounted", set(CapBPF, CapPerfmon), true, true, ""},
		{"nothing", 0, true, true,
			"sonde needs CAP_BPF and CAP_PERFMON (or root); missing: CAP_BPF, CAP_PERFMON; run as root or grant them"},
		{"no bpf", set(CapPerfmon), true, true,
			"sonde needs CAP_BPF and CAP_PERFMON (or root); missing: CAP_BPF; run as root or grant them"},
		{"cannot mount tracefs", set(CapBPF, CapPerfmon), false, false,
			"sonde needs CAP_BPF and CAP_PERFMON (or root), and CAP_SYS_ADMIN to mount tracefs at /sys/kernel/tracing; missing: CAP_SYS_ADMIN; run as root or grant them"},
		{"cannot read tracefs", set(CapBPF, CapPerfmon), true, false,
			"sonde needs CAP_BPF and CAP_PERFMON (or root), and CAP_DAC_READ_SEARCH to read tracefs; missing: CAP_DAC_READ_SEARCH; run as root or grant them"},
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
