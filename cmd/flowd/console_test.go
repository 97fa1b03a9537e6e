package main

import (
	"io/fs"
	"testing"
	"testing/fstest"
)

// The start-up banner says where the console is, or how to build it, or nothing when it is off.
func TestConsoleLine(t *testing.T) {
	app := fstest.MapFS{"index.html": {}}
	for _, tc := range []struct {
		name  string
		line  string
		fsys  fs.FS
		built bool
	}{
		{"built", "Console: http://127.0.0.1:8080/ (sign in with the administrator token)", app, true},
		{"not built", "Console not built: run make build", fstest.MapFS{".gitkeep": {}}, false},
		{"off", "", nil, false},
	} {
		if got := consoleLine(tc.fsys, tc.built, "http://127.0.0.1:8080"); got != tc.line {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.line)
		}
	}
	if fsys, _ := webConsole(false); fsys != nil {
		t.Error("--console=false still serves the console")
	}
	if fsys, _ := webConsole(true); fsys == nil {
		t.Error("--console serves nothing")
	}
}
