package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int{"4096": 4096, "64K": 64 << 10, "8M": 8 << 20, "1G": 1 << 30} {
		var b byteSize
		if err := b.Set(in); err != nil || int(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, bad := range []string{"", "M", "-1", "0", "12X", "1.5M"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestPIDList(t *testing.T) {
	var p pidList
	if err := p.Set("1, 22"); err != nil {
		t.Fatal(err)
	}
	if err := p.Set("333"); err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != "[1 22 333]" {
		t.Errorf("got %s", got)
	}
	for _, bad := range []string{"", "abc", "0", "-5", "1,,2"} {
		var q pidList
		if err := q.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestValidateNamesTheFieldAndAcceptedValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--output", "xml"}, "--output \"xml\": accepted values are otlp, text, json"},
		{[]string{"--log-format", "yaml"}, "--log-format \"yaml\": accepted values are text, json"},
		{[]string{"--log-level", "loud"}, "--log-level \"loud\": accepted values are debug, info, warn, error"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var cfg traceConfig
		cfg.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := cfg.validate()
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg traceConfig
	cfg.register(fs)
	if err := fs.Parse(nil); err != nil || cfg.validate() != nil {
		t.Errorf("defaults do not validate: %v", cfg.validate())
	}
	if cfg.captureBytes != 4096 || cfg.ringBuffer != 8<<20 || cfg.maxConns != 65536 {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestUnknownCommandAndUsage(t *testing.T) {
	if code := run([]string{"frobnicate"}); code != 2 {
		t.Errorf("unknown command exit %d, want 2", code)
	}
	if code := run(nil); code != 2 {
		t.Errorf("no command exit %d, want 2", code)
	}
	if code := run([]string{"help"}); code != 0 {
		t.Errorf("help exit %d, want 0", code)
	}
	if code := traceCmd([]string{"--output", "bogus"}); code != 2 {
		t.Errorf("bad flag value exit %d, want 2", code)
	}
	if code := traceCmd([]string{"stray"}); code != 2 {
		t.Errorf("stray argument exit %d, want 2", code)
	}
	for _, c := range commands() {
		if !c.hidden && (c.summary == "" || strings.ToLower(c.summary[:1]) != c.summary[:1]) {
			t.Errorf("command %s summary %q: want a non-empty summary starting in lowercase", c.name, c.summary)
		}
	}
}
