package e2e

import (
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
	"github.com/sondehq/sonde/tracer/servicemap"
)

// The live page in headless Chromium: after curl called python, the page
// a browser renders has both services on the map and the trace in the
// list, and its screenshot shows the service boxes.
func TestLivePage(t *testing.T) {
	requireTracing(t)
	chromium := testutil.RequireTool(t, "chromium")
	curl := testutil.RequireTool(t, "curl")
	python := requirePython(t)
	pyPort := freePort(t)
	py := startProc(t, nil, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", t.TempDir(), pyPort)
	waitPort(t, "127.0.0.1:"+pyPort)
	uiPort := freePort(t)
	s := startSonde(t, nil, "--exe", "curl", "--pid", strconv.Itoa(py.pid()), "--ui", uiPort)
	if !strings.Contains(s.stderr.String(), `"url":"http://127.0.0.1:`+uiPort+`/"`) {
		t.Errorf("sonde does not say it serves the page on loopback:\n%s", tail(s.stderr.String(), 20))
	}
	for range 3 {
		run(t, curl, "-s", "-o", "/dev/null", "http://127.0.0.1:"+pyPort+"/")
	}
	waitFor(t, 30*time.Second, "the spans", func() bool { return len(s.jsonSpans()) >= 6 })
	pyService := filter(s.jsonSpans(), byPID(py.pid()))[0].res("service.name")
	time.Sleep(2500 * time.Millisecond) // the map counts a call once its server span found its client
	url := "http://127.0.0.1:" + uiPort + "/"
	dir := t.TempDir()
	browser := func(args ...string) []byte {
		t.Helper()
		full := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
			"--user-data-dir=" + filepath.Join(dir, "profile"), "--window-size=1280,900", "--virtual-time-budget=3000"}, args...)
		cmd := exec.Command(chromium, append(full, url)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, out)
		}
		return out
	}
	dom := string(browser("--dump-dom"))
	for _, want := range []string{`data-name="curl"`, `data-name="` + pyService + `"`, `data-client="curl" data-server="` + pyService + `"`, `class="trace`} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %s", want)
		}
	}
	shot := filepath.Join(dir, "page.png")
	browser("--screenshot=" + shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	// Two service boxes of 170x44 pixels in the services' colour.
	if n := pixelsOf(img, servicemap.NodeFill); n < 2*170*44*8/10 {
		t.Errorf("the screenshot has %d pixels of the service colour, want two boxes' worth", n)
	}
	s.stop(t)
}

// pixelsOf counts the pixels of img within a few levels of the colour
// "#rrggbb".
func pixelsOf(img image.Image, hex string) int {
	v, _ := strconv.ParseUint(strings.TrimPrefix(hex, "#"), 16, 32)
	want := [3]int{int(v >> 16 & 0xff), int(v >> 8 & 0xff), int(v & 0xff)}
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			got := [3]int{int(r >> 8), int(g >> 8), int(bl >> 8)}
			close := true
			for i := range got {
				if d := got[i] - want[i]; d < -6 || d > 6 {
					close = false
				}
			}
			if close {
				n++
			}
		}
	}
	return n
}
