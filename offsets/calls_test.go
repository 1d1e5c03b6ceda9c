package offsets

import (
	"slices"
	"testing"
)

func TestCallSites(t *testing.T) {
	// At 0x1000: call +0 (to 0x1005); nop; call -11 (to 0x1000); ret;
	// then a call to 0x1005 again, written with another encoding that is
	// not a rel32 call (an indirect call through RAX).
	code := []byte{
		0xe8, 0x00, 0x00, 0x00, 0x00, // 0x1000 call 0x1005
		0x90,                         // 0x1005 nop
		0xe8, 0xf5, 0xff, 0xff, 0xff, // 0x1006 call 0x1000
		0xff, 0xd0, // 0x100b call rax
		0xc3, // 0x100d ret
	}
	got, err := callSites(code, 0x1000, 0x1005)
	if err != nil || !slices.Equal(got, []uint64{0}) {
		t.Errorf("calls to 0x1005 = %v, %v; want [0]", got, err)
	}
	got, err = callSites(code, 0x1000, 0x1000)
	if err != nil || !slices.Equal(got, []uint64{6}) {
		t.Errorf("calls to 0x1000 = %v, %v; want [6]", got, err)
	}
	if _, err := callSites([]byte{0x0f}, 0, 0); err == nil {
		t.Error("undecodable code gave no error")
	}
}
