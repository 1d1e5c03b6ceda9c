package tracer

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/sondehq/sonde/tracer/discover"
)

// Rows as the kernel prints them (net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c).
const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23457 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 34567 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D431 0100007F:1F90 06 00000000:00000000 03:00000A2D 00000000     0        0 0 3 0000000000000000
   4: 0100007F:2382 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 45678 2 0000000000000000
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 56789 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 56790 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0050 0000000000000000FFFF00000100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 56791 1 0000000000000000 20 4 29 10 -1
`

func sortedPorts(m map[uint16]bool) []uint16 {
	return slices.Sorted(maps.Keys(m))
}

func TestReadListening(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want []uint16
	}{
		{"tcp", procNetTCP, []uint16{0x0277, 0x1F90}},
		{"tcp6", procNetTCP6, []uint16{0x0050, 0x1F91}},
		{"empty", "", nil},
		{"header only", strings.SplitAfter(procNetTCP, "\n")[0], nil},
		{"malformed rows", strings.Join([]string{
			"   0: 00000000:1F90",                           // too few fields
			"   1: 000000001F90 00000000:0000 0A",           // no colon in the address
			"   2: 00000000:ZZZZ 00000000:0000 0A",          // port is not hex
			"   3: 00000000:10000 00000000:0000 0A",         // port beyond 16 bits
			"   4: 00000000: 00000000:0000 0A",              // empty port
			"   5: 00000000:1F92 00000000:0000 0a",          // state must be upper-case, as the kernel prints it
			"   6: 00000000:1F93 00000000:0000 0A0",         // not LISTEN
			"garbage",                                       //
			"   7: 00000000:0016 00000000:0000 0A trailing", // fine
			"\t8:\t00000000:0017\t00000000:0000\t0A",        // tabs are spaces too
		}, "\n"), []uint16{0x16, 0x17}},
		{"crlf", "0: 00000000:01BB 00000000:0000 0A x\r\n", []uint16{0x01BB}},
		{"no final newline", "0: 00000000:01BB 00000000:0000 0A", []uint16{0x01BB}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ports := map[uint16]bool{}
			readListening(strings.NewReader(tc.text), ports)
			if got := sortedPorts(ports); !slices.Equal(got, tc.want) {
				t.Errorf("ports = %x, want %x", got, tc.want)
			}
		})
	}
}

// readListening adds to what the map holds already.
func TestReadListeningAccumulates(t *testing.T) {
	ports := map[uint16]bool{1: true}
	readListening(strings.NewReader(procNetTCP), ports)
	readListening(strings.NewReader(procNetTCP6), ports)
	if got, want := sortedPorts(ports), []uint16{1, 0x50, 0x277, 0x1F90, 0x1F91}; !slices.Equal(got, want) {
		t.Errorf("ports = %x, want %x", got, want)
	}
}

// Only the first discover.MaxNetLines lines are read.
func TestReadListeningBounded(t *testing.T) {
	var b strings.Builder
	for range discover.MaxNetLines {
		b.WriteString("0: 00000000:0001 00000000:0000 01\n")
	}
	b.WriteString("0: 00000000:0002 00000000:0000 0A\n")
	ports := map[uint16]bool{}
	readListening(strings.NewReader(b.String()), ports)
	if len(ports) != 0 {
		t.Errorf("ports = %v: read past discover.MaxNetLines", sortedPorts(ports))
	}
}

func TestListeningPorts(t *testing.T) {
	fp := newFakeProc(t)
	fp.write(100, "net/tcp", procNetTCP)
	fp.write(100, "net/tcp6", procNetTCP6)
	fp.write(200, "net/tcp6", procNetTCP6) // no tcp file: IPv6 disabled the other way
	fp.dir(300)                            // no net at all

	for _, tc := range []struct {
		pid  uint32
		want []uint16
	}{
		{100, []uint16{0x50, 0x277, 0x1F90, 0x1F91}},
		{200, []uint16{0x50, 0x1F91}},
		{300, nil},
		{400, nil}, // no such process
	} {
		got := listeningPorts(fp.root, tc.pid)
		if got == nil {
			t.Errorf("pid %d: nil map", tc.pid)
		}
		if g := sortedPorts(got); !slices.Equal(g, tc.want) {
			t.Errorf("pid %d: ports %x, want %x", tc.pid, g, tc.want)
		}
	}
}
