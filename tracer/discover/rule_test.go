package discover

import (
	"path"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	for in, want := range map[string]Rule{
		"exe=/usr/bin/python3*,port=8080":      {Exe: "/usr/bin/python3*", Port: 8080},
		"cmdline=*manage.py runserver*":        {Cmdline: "*manage.py runserver*"},
		" exe =nginx":                          {Exe: "nginx"},
		"cgroup=/kubepods.slice/*,container=*": {Cgroup: "/kubepods.slice/*", Container: "*"},
		"container=ABCDEF012345":               {Container: "ABCDEF012345"},
		"otel_service_name=true":               {OTelServiceName: true},
		"otel_service_name=false,exe=curl":     {Exe: "curl"},
		"cmdline=a=b":                          {Cmdline: "a=b"},
		"port=65535":                           {Port: 65535},
		"any":                                  {},
	} {
		got, err := ParseRule(in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("ParseRule(%q) = %+v, want %+v", in, got, want)
		}
	}
}

// Every error names the field at fault and what it accepts: the user reads
// it once and fixes the flag.
func TestParseRuleErrorsNameFieldAndAcceptedValues(t *testing.T) {
	keys := "exe, cmdline, port, cgroup, container, otel_service_name"
	for in, want := range map[string][]string{
		"":                                     {"empty rule", keys},
		"   ":                                  {"empty rule", keys},
		"python":                               {`"python" is not key=value`, keys},
		"exe=a,":                               {`"" is not key=value`},
		"user=root":                            {`unknown key "user"`, keys},
		"exe=a,exe=b":                          {"key exe given twice"},
		"port=0":                               {`port "0"`, "1 to 65535"},
		"port=65536":                           {`port "65536"`, "1 to 65535"},
		"port=http":                            {`port "http"`, "1 to 65535"},
		"port= 80":                             {`port " 80"`, "1 to 65535"},
		"otel_service_name=yes":                {`otel_service_name "yes"`, "true, false"},
		"exe=/usr/bin/[":                       {`exe "/usr/bin/["`, "bad glob"},
		"cmdline=a\\":                          {`cmdline "a\\"`, "bad glob"},
		"cgroup=/x/[a":                         {`cgroup "/x/[a"`, "bad glob"},
		"container=abc":                        {`container "abc"`, "* or 12 to 64 hex digits"},
		"container=xyz0123456789ab":            {`container "xyz0123456789ab"`, "hex digits"},
		"container=" + strings.Repeat("a", 65): {"12 to 64 hex digits"},
		"exe=":                                 {"exe has an empty value"},
		"port=80,cmdline=":                     {"cmdline has an empty value"},
	} {
		_, err := ParseRule(in)
		if err == nil {
			t.Errorf("ParseRule(%q) accepted", in)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseRule(%q) = %q, does not say %q", in, err, w)
			}
		}
	}
}

func TestRuleStringRoundTrip(t *testing.T) {
	for _, r := range []Rule{
		{},
		{Exe: "/usr/bin/python3*", Port: 8080},
		{Cmdline: "java -jar *", Cgroup: "/system.slice/*", Container: "*", OTelServiceName: true},
		{Exe: "=", Cmdline: "a=b=c"},
	} {
		s := r.String()
		got, err := ParseRule(s)
		if err != nil || got != r {
			t.Errorf("ParseRule(%q) = %+v, %v; want %+v", s, got, err, r)
		}
	}
	if got := (Rule{Port: 80, Exe: "x"}).String(); got != "exe=x,port=80" {
		t.Errorf("String() = %q: keys are printed in ruleKeys order", got)
	}
}

func TestRuleNeeds(t *testing.T) {
	for r, want := range map[Rule]Fields{
		{}:                      0,
		{Exe: "x"}:              FieldExe,
		{Cmdline: "x"}:          FieldCmdline,
		{Port: 1}:               FieldPorts,
		{Cgroup: "/x"}:          FieldCgroup,
		{Container: "*"}:        FieldCgroup,
		{OTelServiceName: true}: FieldEnv,
		{Exe: "x", Port: 1}:     FieldExe | FieldPorts,
	} {
		if got := r.Needs(); got != want {
			t.Errorf("%+v.Needs() = %b, want %b", r, got, want)
		}
	}
}

func TestRuleMatch(t *testing.T) {
	id := strings.Repeat("ab", 32)
	p := &Process{
		PID:         7,
		Exe:         "/usr/bin/python3.11",
		Cmdline:     []string{"python3", "/srv/app/manage.py", "runserver"},
		Cgroup:      "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-" + id + ".scope",
		ContainerID: id,
		Env:         map[string]string{"OTEL_SERVICE_NAME": "shop"},
		ListenPorts: []uint16{8000, 9090},
	}
	for _, tc := range []struct {
		rule Rule
		ok   bool
		miss string
	}{
		{Rule{}, true, ""},
		{Rule{Exe: "/usr/bin/python3*"}, true, ""},
		{Rule{Exe: "python3.11"}, true, ""},
		{Rule{Exe: "python3"}, false, `exe "/usr/bin/python3.11" does not match "python3"`},
		{Rule{Exe: "/usr/*/python3.11"}, true, ""},
		{Rule{Exe: "/*/python3.11"}, false, "does not match"}, // '*' does not cross '/' in exe
		{Rule{Cmdline: "*manage.py*"}, true, ""},
		{Rule{Cmdline: "python3 /srv/*/manage.py runserver"}, true, ""},
		{Rule{Cmdline: "*gunicorn*"}, false, `cmdline "python3 /srv/app/manage.py runserver" does not match "*gunicorn*"`},
		{Rule{Port: 9090}, true, ""},
		{Rule{Port: 80}, false, "does not listen on port 80"},
		{Rule{Cgroup: "/kubepods.slice/*"}, true, ""},
		{Rule{Cgroup: "/system.slice/*"}, false, "does not match"},
		{Rule{Container: "*"}, true, ""},
		{Rule{Container: strings.ToUpper(id[:12])}, true, ""},
		{Rule{Container: "cdcdcdcdcdcd"}, false, "container ababababab"},
		{Rule{OTelServiceName: true}, true, ""},
		{Rule{Exe: "python*", Port: 80}, false, "does not listen on port 80"},
	} {
		ok, miss := tc.rule.Match(p)
		if ok != tc.ok || !strings.Contains(miss, tc.miss) || (tc.ok && miss != "") {
			t.Errorf("%s: Match = %v, %q; want %v, %q", tc.rule, ok, miss, tc.ok, tc.miss)
		}
	}
	bare := &Process{PID: 8}
	for r, miss := range map[Rule]string{
		{Exe: "*"}:              `exe "" does not match "*"`,
		{Container: "*"}:        "not in a container",
		{OTelServiceName: true}: "OTEL_SERVICE_NAME is not set",
	} {
		if ok, got := r.Match(bare); ok || got != miss {
			t.Errorf("%s on a bare process: %v, %q; want %q", r, ok, got, miss)
		}
	}
}

func TestGlobMatchAgreesWithPathMatchWithoutSlashes(t *testing.T) {
	for _, tc := range []struct{ pattern, name string }{
		{"*", ""}, {"*", "abc"}, {"a*c", "abc"}, {"a*c", "abdc"}, {"a*c", "ab"},
		{"?", "é"}, {"a?c", "abc"}, {"[a-c]x", "bx"}, {"[^a-c]x", "bx"}, {"[^a-c]x", "dx"},
		{"\\*", "*"}, {"\\*", "a"}, {"*a*b*", "xxaxxbxx"}, {"[\\]]", "]"}, {"[a-]", "a"},
		{"*.py", "app.py"}, {"**", "x"}, {"a*", "a"}, {"[é-ë]", "ê"},
	} {
		want, err := path.Match(tc.pattern, tc.name)
		if err != nil {
			want = false
		}
		if got := globMatch(tc.pattern, tc.name); got != want {
			t.Errorf("globMatch(%q, %q) = %v, path.Match says %v", tc.pattern, tc.name, got, want)
		}
	}
	if !globMatch("*/manage.py *", "python3 /srv/app/manage.py runserver") {
		t.Error("'*' does not cross '/'")
	}
	if !globMatch("python3 ?srv*", "python3 /srv/x") {
		t.Error("'?' does not match '/'")
	}
}
