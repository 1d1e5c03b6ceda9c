// Package discover reads what /proc says about processes and decides, from
// the user's selectors, which of them sonde traces and why.
package discover

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Rule selects processes. Every field that is set must match; a Rule with
// no field set matches every process.
type Rule struct {
	// Exe is a glob (path.Match syntax) on the executable's path. A pattern
	// without a slash matches the base name only.
	Exe string `yaml:"exe,omitempty" json:"exe,omitempty"`
	// Cmdline is a glob on the command line, its arguments joined by
	// spaces. Unlike in Exe, '*' and '?' match '/' too: arguments are
	// paths.
	Cmdline string `yaml:"cmdline,omitempty" json:"cmdline,omitempty"`
	// Port matches a process that holds a TCP socket listening on it.
	Port uint16 `yaml:"port,omitempty" json:"port,omitempty"`
	// Cgroup is a glob on the process's cgroup v2 path, e.g.
	// "/system.slice/nginx.service" or "/kubepods.slice/*"; '*' matches
	// '/' too, so the latter covers every pod.
	Cgroup string `yaml:"cgroup,omitempty" json:"cgroup,omitempty"`
	// Container matches the container id found in the cgroup path: a
	// prefix of at least 12 hex digits, or "*" for any container.
	Container string `yaml:"container,omitempty" json:"container,omitempty"`
	// OTelServiceName, when true, matches processes whose environment sets
	// OTEL_SERVICE_NAME.
	OTelServiceName bool `yaml:"otel_service_name,omitempty" json:"otel_service_name,omitempty"`
}

// Keys accepted by ParseRule, in the order String prints them.
var ruleKeys = []string{"exe", "cmdline", "port", "cgroup", "container", "otel_service_name"}

// ParseRule reads a rule written as comma-separated key=value pairs, e.g.
// "exe=/usr/bin/python3*,port=8080". Keys: exe, cmdline, port, cgroup,
// container, otel_service_name (true or false). A value may not contain a
// comma; use a glob (?) in its place.
func ParseRule(s string) (Rule, error) {
	var r Rule
	if strings.TrimSpace(s) == "" {
		return r, fmt.Errorf("empty rule: want key=value pairs with keys %s", strings.Join(ruleKeys, ", "))
	}
	// String prints the rule that matches every process as "any".
	if s == "any" {
		return r, nil
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok {
			return r, fmt.Errorf("rule %q: %q is not key=value; keys are %s", s, kv, strings.Join(ruleKeys, ", "))
		}
		if seen[k] {
			return r, fmt.Errorf("rule %q: key %s given twice", s, k)
		}
		seen[k] = true
		// An empty glob would match nothing, or with --exclude
		// exe=$UNSET, silently everything: refuse it.
		if v == "" && slices.Contains(ruleKeys, k) {
			return r, fmt.Errorf("rule %q: %s has an empty value", s, k)
		}
		switch k {
		case "exe":
			r.Exe = v
		case "cmdline":
			r.Cmdline = v
		case "port":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return r, fmt.Errorf("rule %q: port %q: accepted values are 1 to 65535", s, v)
			}
			r.Port = uint16(n)
		case "cgroup":
			r.Cgroup = v
		case "container":
			r.Container = v
		case "otel_service_name":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return r, fmt.Errorf("rule %q: otel_service_name %q: accepted values are true, false", s, v)
			}
			r.OTelServiceName = b
		default:
			return r, fmt.Errorf("rule %q: unknown key %q; accepted keys are %s", s, k, strings.Join(ruleKeys, ", "))
		}
	}
	return r, r.Validate()
}

// Validate checks the globs and the container id.
func (r Rule) Validate() error {
	for _, g := range []struct{ key, val string }{{"exe", r.Exe}, {"cmdline", r.Cmdline}, {"cgroup", r.Cgroup}} {
		if g.val == "" {
			continue
		}
		if _, err := path.Match(g.val, ""); err != nil {
			return fmt.Errorf("%s %q: bad glob: %w", g.key, g.val, err)
		}
	}
	if c := r.Container; c != "" && c != "*" {
		if len(c) < 12 || len(c) > 64 || strings.Trim(strings.ToLower(c), "0123456789abcdef") != "" {
			return fmt.Errorf("container %q: accepted values are * or 12 to 64 hex digits of a container id", c)
		}
	}
	return nil
}

// String prints the rule in the form ParseRule reads.
func (r Rule) String() string {
	var parts []string
	add := func(k, v string) { parts = append(parts, k+"="+v) }
	if r.Exe != "" {
		add("exe", r.Exe)
	}
	if r.Cmdline != "" {
		add("cmdline", r.Cmdline)
	}
	if r.Port != 0 {
		add("port", strconv.Itoa(int(r.Port)))
	}
	if r.Cgroup != "" {
		add("cgroup", r.Cgroup)
	}
	if r.Container != "" {
		add("container", r.Container)
	}
	if r.OTelServiceName {
		add("otel_service_name", "true")
	}
	if len(parts) == 0 {
		return "any"
	}
	return strings.Join(parts, ",")
}

// Needs says which facts the rule reads.
func (r Rule) Needs() Fields {
	var f Fields
	if r.Exe != "" {
		f |= FieldExe
	}
	if r.Cmdline != "" {
		f |= FieldCmdline
	}
	if r.Port != 0 {
		f |= FieldPorts
	}
	if r.Cgroup != "" || r.Container != "" {
		f |= FieldCgroup
	}
	if r.OTelServiceName {
		f |= FieldEnv
	}
	return f
}

// Match reports whether p satisfies every condition of the rule. When it
// does not, miss names the first condition that failed.
func (r Rule) Match(p *Process) (ok bool, miss string) {
	if r.Exe != "" && !matchExe(r.Exe, p.Exe) {
		return false, fmt.Sprintf("exe %q does not match %q", p.Exe, r.Exe)
	}
	if r.Cmdline != "" {
		cmd := strings.Join(p.Cmdline, " ")
		if !globMatch(r.Cmdline, cmd) {
			return false, fmt.Sprintf("cmdline %q does not match %q", cmd, r.Cmdline)
		}
	}
	if r.Port != 0 && !slices.Contains(p.ListenPorts, r.Port) {
		return false, fmt.Sprintf("does not listen on port %d", r.Port)
	}
	if r.Cgroup != "" {
		if !globMatch(r.Cgroup, p.Cgroup) {
			return false, fmt.Sprintf("cgroup %q does not match %q", p.Cgroup, r.Cgroup)
		}
	}
	if r.Container != "" {
		switch {
		case p.ContainerID == "":
			return false, "not in a container"
		case r.Container != "*" && !strings.HasPrefix(p.ContainerID, strings.ToLower(r.Container)):
			return false, fmt.Sprintf("container %.12s is not %s", p.ContainerID, r.Container)
		}
	}
	if r.OTelServiceName && p.Env["OTEL_SERVICE_NAME"] == "" {
		return false, "OTEL_SERVICE_NAME is not set"
	}
	return true, ""
}

// matchExe matches an executable path. /proc/PID/exe resolves symlinks
// (/usr/bin/python3 is /usr/bin/python3.11), so a pattern naming a symlink
// is resolved by the caller (see Selector) rather than here.
func matchExe(pattern, exe string) bool {
	if exe == "" {
		return false
	}
	target := exe
	if !strings.Contains(pattern, "/") {
		target = path.Base(exe)
	}
	ok, _ := path.Match(pattern, target)
	return ok
}

// globMatch is path.Match (whose syntax Validate checks) without the special
// meaning of '/': in a command line or under a cgroup, '*' must cross
// slashes, or cmdline=*app.py* would never match "python3 /srv/app.py".
func globMatch(pattern, name string) bool {
	px, nx := 0, 0
	star, starN := -1, 0 // the last '*' seen, and where its match ends
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				star, starN = px, nx
				px++
				continue
			case '?':
				if nx < len(name) {
					_, w := utf8.DecodeRuneInString(name[nx:])
					px, nx = px+1, nx+w
					continue
				}
			case '[':
				if nx < len(name) {
					r, w := utf8.DecodeRuneInString(name[nx:])
					if n, ok := matchClass(pattern[px:], r); ok {
						px, nx = px+n, nx+w
						continue
					}
				}
			case '\\':
				if px+1 < len(pattern) && nx < len(name) && pattern[px+1] == name[nx] {
					px, nx = px+2, nx+1
					continue
				}
			default:
				if nx < len(name) && name[nx] == c {
					px, nx = px+1, nx+1
					continue
				}
			}
		}
		// Mismatch: let the last '*' swallow one more character.
		if star >= 0 && starN < len(name) {
			_, w := utf8.DecodeRuneInString(name[starN:])
			starN += w
			px, nx = star+1, starN
			continue
		}
		return false
	}
	return true
}

// matchClass matches r against the class at the start of pattern ("[...]")
// and returns the class's length. A malformed class matches nothing.
func matchClass(pattern string, r rune) (int, bool) {
	i := 1
	negate := i < len(pattern) && pattern[i] == '^'
	if negate {
		i++
	}
	matched := false
	for first := true; ; first = false {
		if i >= len(pattern) {
			return 0, false
		}
		if pattern[i] == ']' && !first {
			i++
			break
		}
		lo, n, ok := classChar(pattern[i:])
		if !ok {
			return 0, false
		}
		i += n
		hi := lo
		if i < len(pattern) && pattern[i] == '-' {
			if hi, n, ok = classChar(pattern[i+1:]); !ok {
				return 0, false
			}
			i += 1 + n
		}
		if lo <= r && r <= hi {
			matched = true
		}
	}
	return i, matched != negate
}

// classChar reads one, possibly escaped, character of a class.
func classChar(s string) (rune, int, bool) {
	if s == "" || s[0] == '-' || s[0] == ']' {
		return 0, 0, false
	}
	n := 0
	if s[0] == '\\' {
		n = 1
		if len(s) < 2 {
			return 0, 0, false
		}
	}
	r, w := utf8.DecodeRuneInString(s[n:])
	return r, n + w, true
}
