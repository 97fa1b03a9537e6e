//go:build !unix

package sdk

import "os"

var keepStdio []*os.File

// guardStdout routes os.Stdout through the handshake filter; without dup2 a write to the
// descriptor itself is not caught here.
func guardStdout(stderr *os.File) (*os.File, error) {
	keepStdio = append(keepStdio, os.Stdout, os.Stderr)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	handshake := os.Stdout
	keepStdio = append(keepStdio, w)
	os.Stdout = w
	filterWriter, filterDone = w, make(chan struct{})
	go func() {
		defer close(filterDone)
		filterStdout(r, handshake, stderr)
	}()
	return handshake, nil
}
