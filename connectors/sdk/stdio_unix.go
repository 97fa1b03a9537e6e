//go:build unix

package sdk

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// keepStdio holds the original stdio files: go-plugin replaces os.Stdout and os.Stderr after the
// handshake, and a collected *os.File closes its descriptor, freeing fd 1 or 2 for reuse.
var keepStdio []*os.File

// guardStdout points fd 1 at stderr, so whatever writes to it (fmt.Print, C code, child
// processes) cannot corrupt the handshake, and keeps a private copy of the real stdout for
// the handshake line alone.
func guardStdout(stderr *os.File) (*os.File, error) {
	keepStdio = append(keepStdio, os.Stdout, os.Stderr)
	fd, err := unix.Dup(1)
	if err != nil {
		return nil, fmt.Errorf("dup stdout: %w", err)
	}
	unix.CloseOnExec(fd)
	handshake := os.NewFile(uintptr(fd), "stdout")
	if err := unix.Dup2(2, 1); err != nil {
		return nil, fmt.Errorf("point stdout at stderr: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	keepStdio = append(keepStdio, handshake, w)
	os.Stdout = w
	filterWriter, filterDone = w, make(chan struct{})
	go func() {
		defer close(filterDone)
		filterStdout(r, handshake, stderr)
	}()
	return handshake, nil
}
