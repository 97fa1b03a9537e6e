package host

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
)

var (
	buildV2Once sync.Once
	builtV2Dir  string
)

// crasherV2 builds the crasher again as version 2.0.0 (once per test binary) and returns it.
func crasherV2(t *testing.T) string {
	t.Helper()
	buildV2Once.Do(func() {
		dir, err := os.MkdirTemp("", "flowd-host-test-v2-")
		if err != nil {
			t.Fatal(err)
		}
		hosttest.BuildFlags(t, dir, map[string]string{"crasher": "./testdata/crasher"}, "-ldflags=-X main.version=2.0.0")
		builtV2Dir = dir
	})
	if builtV2Dir == "" {
		t.Fatal("building crasher 2.0.0 failed in an earlier test")
	}
	return filepath.Join(builtV2Dir, "crasher")
}

// installAs puts a copy of from into dir under name the safe way: written beside it, then
// renamed over it, which never hits a running executable ("text file busy").
func installAs(t *testing.T, from, dir, name string) {
	t.Helper()
	tmp := filepath.Join(dir, ".tmp-"+name)
	copyFile(t, from, tmp, 0o755)
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func reload(t *testing.T, h *Host) Changes {
	t.Helper()
	ch, err := h.Reload(ctxT(t))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	return ch
}

func version(t *testing.T, h *Host) string {
	t.Helper()
	m, err := h.Manifest(ctxT(t), "crasher")
	if err != nil {
		t.Fatal(err)
	}
	return m.Version
}

// TestReload: a connector installed after New is unknown until a reload; an upgrade serves new
// calls from the new binary while a call in flight finishes on the old process, which exits
// after it; a removed connector is unknown after a reload and its process goes.
func TestReload(t *testing.T) {
	v2 := crasherV2(t)
	dir := t.TempDir()
	h, logs := newHost(t, Options{Dir: dir})
	echo := func() error {
		res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{{ID: "1", Action: "echo", Input: "x"}})
		if err == nil && res[0].Error != nil {
			err = res[0].Error
		}
		return err
	}

	installAs(t, filepath.Join(crasherDir(t), "crasher"), dir, "crasher")
	if err := echo(); !errors.Is(err, ErrUnknownConnector) {
		t.Fatalf("installed, not reloaded: %v, want %v", err, ErrUnknownConnector)
	}
	if ch := reload(t, h); !slices.Equal(ch.Added, []string{"crasher"}) || len(ch.Changed)+len(ch.Removed) > 0 {
		t.Fatalf("changes %+v, want crasher added", ch)
	}
	if err := echo(); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
	if got := h.List(); !slices.Equal(got, []string{"crasher"}) {
		t.Fatalf("List %v", got)
	}
	oldPID := pidOf(t, h)
	if ch := reload(t, h); !ch.Empty() {
		t.Fatalf("nothing changed, yet %+v", ch)
	}
	if got := pidOf(t, h); got != oldPID || version(t, h) != "1.0.0" {
		t.Fatalf("a reload without changes restarted the connector: pid %d -> %d", oldPID, got)
	}

	// A call in flight on 1.0.0 across the upgrade.
	marks := t.TempDir()
	started, release := filepath.Join(marks, "started"), filepath.Join(marks, "release")
	type outcome struct {
		res []sdk.Result
		err error
	}
	blocked := make(chan outcome, 1)
	go func() {
		res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{{ID: "b", Action: "block",
			Config: map[string]any{"started": started, "release": release}}})
		blocked <- outcome{res, err}
	}()
	waitFor(t, "the blocking call to reach the plugin", func() bool { _, err := os.Stat(started); return err == nil })

	installAs(t, v2, dir, "crasher")
	if ch := reload(t, h); !slices.Equal(ch.Changed, []string{"crasher"}) || len(ch.Added)+len(ch.Removed) > 0 {
		t.Fatalf("changes %+v, want crasher changed", ch)
	}
	if v := version(t, h); v != "2.0.0" {
		t.Fatalf("new calls see version %s, want 2.0.0", v)
	}
	newPID := pidOf(t, h)
	if newPID == oldPID {
		t.Fatalf("pid %d serves both versions", newPID)
	}
	if processGone(oldPID) {
		t.Fatalf("the old process %d was stopped with a call in flight", oldPID)
	}
	writeFile(t, release, "")
	o := <-blocked
	if o.err != nil || o.res[0].Error != nil {
		t.Fatalf("the call in flight across the reload: %v %+v", o.err, o.res)
	}
	got, _ := json.Marshal(o.res[0].Outputs[0].Data)
	if want := `{"pid":` + strconv.Itoa(oldPID) + `,"version":"1.0.0"}`; string(got) != want {
		t.Fatalf("the call in flight answered %s, want %s (the old process)", got, want)
	}
	waitGone(t, oldPID)
	if got := pidOf(t, h); got != newPID {
		t.Fatalf("the new process %d was replaced by %d", newPID, got)
	}

	if err := os.Remove(filepath.Join(dir, "crasher")); err != nil {
		t.Fatal(err)
	}
	if ch := reload(t, h); !slices.Equal(ch.Removed, []string{"crasher"}) || len(ch.Added)+len(ch.Changed) > 0 {
		t.Fatalf("changes %+v, want crasher removed", ch)
	}
	if err := echo(); !errors.Is(err, ErrUnknownConnector) {
		t.Fatalf("removed: %v, want %v", err, ErrUnknownConnector)
	}
	waitGone(t, newPID)
	for _, line := range []string{"connector added", "connector changed", "connector removed"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("no %q in the log", line)
		}
	}
}

// TestReloadUnderLoad: calls keep succeeding while the connector is upgraded and downgraded
// under them (run with -race: reloads race Execute, Manifest and List).
func TestReloadUnderLoad(t *testing.T) {
	v1, v2 := filepath.Join(crasherDir(t), "crasher"), crasherV2(t)
	dir := t.TempDir()
	installAs(t, v1, dir, "crasher")
	h, _ := newHost(t, Options{Dir: dir})

	stop := make(chan struct{})
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{{ID: "1", Action: "echo", Input: i}})
				if err == nil && res[0].Error != nil {
					err = res[0].Error
				}
				if err == nil && w == 0 {
					_, err = h.Manifest(ctxT(t), "crasher")
					_ = h.List()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range 4 {
		bin := v2
		if i%2 == 1 {
			bin = v1
		}
		installAs(t, bin, dir, "crasher")
		if ch := reload(t, h); !slices.Equal(ch.Changed, []string{"crasher"}) {
			t.Errorf("reload %d: %+v, want crasher changed", i, ch)
		}
		pidOf(t, h) // the new one serves before the next swap
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call during reloads: %v", err)
	}
}

// TestReloadRereadsPins: a connector refused by its pin starts once the pin file is fixed and
// the host reloaded; a broken pin file fails the reload and changes nothing.
func TestReloadRereadsPins(t *testing.T) {
	dir := t.TempDir()
	installAs(t, filepath.Join(crasherDir(t), "crasher"), dir, "crasher")
	pins := filepath.Join(t.TempDir(), "pins")
	writeFile(t, pins, "# nothing pinned yet\n")
	h, _ := newHost(t, Options{Dir: dir, PinFile: pins})
	if _, err := h.Manifest(ctxT(t), "crasher"); !errors.Is(err, ErrNotPinned) {
		t.Fatalf("unpinned: %v, want %v", err, ErrNotPinned)
	}
	got, err := Pins(ctxT(t), dir)
	if err != nil || len(got) != 1 {
		t.Fatalf("Pins: %v %v", got, err)
	}
	writeFile(t, pins, got[0].Line()+"\n")
	if ch := reload(t, h); !slices.Equal(ch.Changed, []string{"crasher"}) {
		t.Fatalf("pin changed: %+v, want crasher changed", ch)
	}
	if v := version(t, h); v != "1.0.0" {
		t.Fatalf("version %s", v)
	}
	writeFile(t, pins, "xyz  crasher\n")
	if _, err := h.Reload(ctxT(t)); err == nil {
		t.Fatal("reload with a malformed pin file succeeded")
	}
	if v := version(t, h); v != "1.0.0" {
		t.Fatalf("after a failed reload: version %s", v)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Reload(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("reload after Close: %v", err)
	}
}
