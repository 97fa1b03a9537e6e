package sdk

import "testing"

func TestCredentialTypeNames(t *testing.T) {
	if got := CredentialType("crm", "apiToken"); got != "crm.apiToken" {
		t.Fatalf("CredentialType = %q", got)
	}
	for _, tc := range []struct {
		typ, connector, name string
		ok                   bool
	}{
		{"crm.apiToken", "crm", "apiToken", true},
		{"bearer", "", "", false}, // built-in types hold no dot
		{".token", "", "", false},
		{"crm.", "", "", false},
		{"crm.a.b", "", "", false},
	} {
		c, n, ok := ParseCredentialType(tc.typ)
		if c != tc.connector || n != tc.name || ok != tc.ok {
			t.Errorf("ParseCredentialType(%q) = %q, %q, %v; want %q, %q, %v", tc.typ, c, n, ok, tc.connector, tc.name, tc.ok)
		}
	}
}
