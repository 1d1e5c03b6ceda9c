// Command sonde traces HTTP of programs that were never instrumented.
package main

import (
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

type command struct {
	name, summary string
	run           func(args []string) int
	hidden        bool
}

func commands() []command {
	return []command{
		{name: "trace", summary: "attach to processes and export a span per HTTP exchange", run: traceCmd},
		{name: "demo", summary: "start sample services, trace them and print their traces", run: demoCmd},
		{name: "map", summary: "print the service map of a running sonde or of a recording: who calls whom, how often, how fast", run: mapCmd},
		{name: "ps", summary: "list processes: language, TLS library, whether trace would select them and why", run: psCmd},
		{name: "doctor", summary: "report the kernel features sonde uses and what their absence costs", run: doctorCmd},
		{name: "version", summary: "print the version", run: versionCmd},
		{name: demoServiceCmdName, run: demoServiceCmd, hidden: true},
	}
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:])
		}
	}
	fmt.Fprintf(os.Stderr, "sonde: unknown command %q\n\n", args[0])
	usage()
	return 2
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sonde <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(os.Stderr, "  %-8s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(os.Stderr, "\nrun 'sonde <command> -h' for a command's flags")
}
