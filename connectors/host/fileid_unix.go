//go:build unix

package host

import (
	"io/fs"
	"strconv"
	"syscall"
)

// fileID is the file's device and inode: a file replaced by a rename has new ones even when its
// size and mtime are the same.
func fileID(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return strconv.FormatUint(uint64(st.Dev), 10) + ":" + strconv.FormatUint(st.Ino, 10)
	}
	return "-"
}
