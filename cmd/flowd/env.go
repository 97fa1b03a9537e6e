package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Every flag has an environment variable that sets its default, named in its usage as
// "(env FLOWD_X)". Flags are defined with envOr or its typed siblings below; an environment
// value of the wrong type leaves the default in place there (a flag definition cannot fail) and
// checkFlagEnv, run before every command, refuses it.

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// envInt is the integer in the environment variable key, or def when it is unset or malformed.
func envInt(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return n
	}
	return def
}

// envDuration is the duration in the environment variable key, or def when it is unset or
// malformed.
func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return d
	}
	return def
}

// envBool is the boolean (true, false, 1, 0...) in the environment variable key, or def when it
// is unset or malformed.
func envBool(key string, def bool) bool {
	if b, err := strconv.ParseBool(os.Getenv(key)); err == nil {
		return b
	}
	return def
}

// envKinds say, per flag type other than string, what its environment variable must hold.
var envKinds = map[string]struct {
	what  string
	parse func(string) error
}{
	"int":      {"a whole number", func(v string) error { _, err := strconv.Atoi(v); return err }},
	"duration": {"a duration (e.g. 6s, 500ms)", func(v string) error { _, err := time.ParseDuration(v); return err }},
	"bool":     {"true or false", func(v string) error { _, err := strconv.ParseBool(v); return err }},
}

// envNamed finds the environment variable a flag's usage names.
var envNamed = regexp.MustCompile(`\benv (FLOWD_[A-Z0-9_]+)`)

// flagEnv is the environment variable of f, or "" when its usage names none.
func flagEnv(f *pflag.Flag) string {
	if m := envNamed.FindStringSubmatch(f.Usage); m != nil {
		return m[1]
	}
	return ""
}

// envAtRun marks a flag whose environment variable is read when the command runs rather than
// shown as its default, because the value is a secret --help must not print.
const envAtRun = "flowd-env-at-run"

// checkFlagEnv fails on the first environment variable of cmd's flags that is set and does not
// hold a value of its flag's type, rather than letting the flag silently keep its default.
func checkFlagEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		key := flagEnv(f)
		v := os.Getenv(key)
		kind, typed := envKinds[f.Value.Type()]
		if err != nil || key == "" || v == "" || !typed {
			return
		}
		if kind.parse(v) != nil {
			err = fmt.Errorf("%s=%q is not %s", key, v, kind.what)
		}
	})
	return err
}
