// Package problem is the one error shape flowd shows to people: a code a program can switch on,
// a message a person can read, and a JSON pointer to what was wrong.
package problem

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a request or a document.
type Problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Path    string `json:"path"`
}

// New builds a Problem with a formatted message.
func New(code, path, format string, args ...any) Problem {
	return Problem{Code: code, Path: path, Message: fmt.Sprintf(format, args...)}
}

var tokenEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// EscapeToken escapes one reference token of a JSON pointer (RFC 6901): "a/b" becomes "a~1b".
func EscapeToken(tok string) string { return tokenEscaper.Replace(tok) }

// Within reports whether the JSON pointer p is one of roots or lies under one of them ("" is
// the whole document, so everything lies under it).
func Within(p string, roots ...string) bool {
	for _, r := range roots {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// Pointer is the JSON pointer to the value the tokens lead to ("" for the document itself).
func Pointer(tokens ...string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(EscapeToken(t))
	}
	return b.String()
}

// String is the problem in one line: "path: message (code)".
func (p Problem) String() string {
	if p.Path != "" {
		return fmt.Sprintf("%s: %s (%s)", p.Path, p.Message, p.Code)
	}
	return fmt.Sprintf("%s (%s)", p.Message, p.Code)
}

// List carries every problem found, so callers can report them all at once.
type List []Problem

// Error joins the problems into one line, for logs.
func (l List) Error() string {
	parts := make([]string, len(l))
	for i, p := range l {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// Err returns nil for an empty list, so `if err := l.Err(); err != nil` reads naturally.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
