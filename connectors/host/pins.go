package host

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// readPinFile reads `sha256sum` output: "<hex sha256>  <file>" per line ("*<file>" in binary
// mode too); the file's base name is the connector's name. Blank lines and # comments are skipped.
func readPinFile(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pin file: %w", err)
	}
	defer f.Close()
	pins := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, file, ok := strings.Cut(line, " ")
		file = strings.TrimPrefix(strings.TrimSpace(file), "*")
		if !ok || file == "" {
			return nil, fmt.Errorf("pin file %s:%d: want \"<sha256>  <name>\"", path, n)
		}
		b, err := hex.DecodeString(sum)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("pin file %s:%d: %q is not a hex sha256", path, n, sum)
		}
		name := filepath.Base(file)
		if _, dup := pins[name]; dup {
			return nil, fmt.Errorf("pin file %s:%d: %s is pinned twice", path, n, name)
		}
		pins[name] = b
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("pin file %s: %w", path, err)
	}
	return pins, nil
}
