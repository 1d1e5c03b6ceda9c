package tracer

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxNetLines bounds what is read of /proc/PID/net/tcp{,6}.
const maxNetLines = 1 << 16

// listeningPorts returns the TCP ports in LISTEN state in the network
// namespace of pid. A connection found already open whose local port is one
// of them was accepted, so its process plays the server.
func listeningPorts(procRoot string, pid uint32) map[uint16]bool {
	ports := make(map[uint16]bool)
	dir := filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "net")
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		readListening(f, ports)
		f.Close()
	}
	return ports
}

const tcpListen = "0A" // TCP_LISTEN in the kernel's st column

func readListening(r io.Reader, ports map[uint16]bool) {
	sc := bufio.NewScanner(r)
	for n := 0; sc.Scan() && n < maxNetLines; n++ {
		// sl local_address rem_address st ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != tcpListen {
			continue
		}
		_, port, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		if p, err := strconv.ParseUint(port, 16, 16); err == nil {
			ports[uint16(p)] = true
		}
	}
}
