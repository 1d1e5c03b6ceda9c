package tracer

import (
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sondehq/sonde/tracer/discover"
)

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

func readListening(r io.Reader, ports map[uint16]bool) {
	for port := range discover.ListeningSockets(r) {
		ports[port] = true
	}
}
