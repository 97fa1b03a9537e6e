package testrig

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Environment of SMTP:
//   - FLOWD_TEST_SMTP_PYTHON: an interpreter with aiosmtpd installed (CI sets it, in a venv);
//     without it, .cache/py-smtp/bin/python of the repository is used when it exists.
//   - FLOWD_REQUIRE_SMTP=1: a missing aiosmtpd fails the test instead of skipping it (CI).
const (
	EnvSMTPPython  = "FLOWD_TEST_SMTP_PYTHON"
	EnvRequireSMTP = "FLOWD_REQUIRE_SMTP"
)

// SMTPServer is a real SMTP server (aiosmtpd) that keeps every message it receives in a
// Maildir.
type SMTPServer struct {
	Addr    string
	maildir string
}

// SMTP starts an aiosmtpd server for the test and stops it at its end.
func SMTP(t testing.TB) *SMTPServer {
	t.Helper()
	python := os.Getenv(EnvSMTPPython)
	if python == "" {
		python = smtpVenv(t)
	}
	if python == "" || exec.Command(python, "-c", "import aiosmtpd").Run() != nil {
		msg := "no Python with aiosmtpd: set " + EnvSMTPPython + " (python3 -m venv .cache/py-smtp && .cache/py-smtp/bin/pip install aiosmtpd)"
		if os.Getenv(EnvRequireSMTP) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	maildir := filepath.Join(t.TempDir(), "mail")
	cmd := exec.Command(python, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:"+port, "-c", "aiosmtpd.handlers.Mailbox", maildir)
	startServer(t, "aiosmtpd", cmd, 20*time.Second, listening(addr))
	return &SMTPServer{Addr: addr, maildir: maildir}
}

// smtpVenv is the repository's .cache/py-smtp interpreter, made (python3 -m venv, pip install
// aiosmtpd) when it is missing and python3 is there; "" when it cannot be had.
func smtpVenv(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	venv := filepath.Join(filepath.Dir(file), "..", "..", ".cache", "py-smtp")
	python := filepath.Join(venv, "bin", "python")
	if _, err := os.Stat(python); err == nil {
		return python
	}
	if _, err := exec.LookPath("python3"); err != nil {
		return ""
	}
	if out, err := exec.Command("python3", "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Logf("python3 -m venv %s: %v\n%s", venv, err, out)
		return ""
	}
	if out, err := exec.Command(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "aiosmtpd==1.4.6").CombinedOutput(); err != nil {
		t.Logf("pip install aiosmtpd: %v\n%s", err, out)
		return ""
	}
	return python
}

// Messages returns the raw messages received so far.
func (s *SMTPServer) Messages() []string {
	var out []string
	for _, sub := range []string{"new", "cur"} {
		entries, _ := os.ReadDir(filepath.Join(s.maildir, sub))
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(s.maildir, sub, e.Name()))
			if err == nil {
				out = append(out, string(b))
			}
		}
	}
	return out
}

// WaitMessages polls until at least n messages arrived, or the deadline.
func (s *SMTPServer) WaitMessages(t testing.TB, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; {
		if m := s.Messages(); len(m) >= n {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages arrived in 60s", len(s.Messages()), n)
		}
		time.Sleep(50 * time.Millisecond) // polling the Maildir with a deadline
	}
}

// Subjects returns the Subject header of each message.
func Subjects(msgs []string) []string {
	var out []string
	for _, m := range msgs {
		for _, line := range strings.Split(m, "\n") {
			if after, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), "Subject: "); ok {
				out = append(out, after)
				break
			}
		}
	}
	return out
}
