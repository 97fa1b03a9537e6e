// Command flowd is the single binary of the flowd integration-flow platform.
package main

import (
	"os"

	"github.com/flowd/flowd/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
