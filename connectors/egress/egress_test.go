package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestBlockedRanges(t *testing.T) {
	refused := map[string]string{
		"127.0.0.1":                  "loopback",
		"127.255.255.254":            "loopback",
		"::1":                        "loopback",
		"0.0.0.0":                    "unspecified",
		"::":                         "unspecified",
		"10.0.0.1":                   "RFC 1918",
		"10.255.255.255":             "RFC 1918",
		"172.16.0.1":                 "RFC 1918",
		"172.31.255.255":             "RFC 1918",
		"192.168.1.1":                "RFC 1918",
		"169.254.169.254":            "link-local",
		"169.254.0.1":                "link-local",
		"fe80::1":                    "link-local",
		"fe80::1%eth0":               "link-local",
		"100.64.0.1":                 "CGNAT",
		"100.127.255.255":            "CGNAT",
		"fc00::1":                    "unique-local",
		"fd00:ec2::254":              "unique-local", // AWS metadata over IPv6
		"224.0.0.1":                  "multicast",
		"ff02::1":                    "multicast",
		"255.255.255.255":            "broadcast",
		"::ffff:127.0.0.1":           "loopback", // IPv4-mapped forms
		"::ffff:10.1.2.3":            "RFC 1918",
		"::ffff:169.254.169.254":     "link-local",
		"::ffff:a9fe:a9fe":           "link-local",
		"64:ff9b::7f00:1":            "loopback address via NAT64",
		"64:ff9b::a9fe:a9fe":         "link-local",
		"2002:7f00:1::1":             "loopback address via 6to4",
		"2002:c0a8:101::1":           "RFC 1918",
		"::127.0.0.1":                "IPv4-compatible",
		"192.0.0.170":                "special-purpose",
		"198.18.0.1":                 "benchmarking",
		"64:ff9b:1::a":               "NAT64",
		"fec0::1":                    "site-local",
		"100::1":                     "discard",
		"::ffff:0.0.0.0":             "unspecified",
		"::ffff:255.255.255.255":     "broadcast",
		"::ffff:100.64.0.1":          "CGNAT",
		"::ffff:224.0.0.251":         "multicast",
		"::ffff:172.20.0.1":          "RFC 1918",
		"::ffff:192.168.0.1":         "RFC 1918",
		"0:0:0:0:0:ffff:7f00:0001":   "loopback",
		"fdff:ffff:ffff:ffff::1":     "unique-local",
		"febf:ffff:ffff:ffff::1":     "link-local",
		"ff0e::1":                    "multicast",
		"64:ff9b::ac10:1":            "RFC 1918",
		"64:ff9b::6440:1":            "CGNAT",
		"2002:a00:1::":               "RFC 1918",
		"2002:a9fe:a9fe::":           "link-local",
		"::ffff:198.19.255.255":      "benchmarking",
		"::ffff:240.0.0.1":           "reserved",
		"0.1.2.3":                    "unspecified",
		"::ffff:127.1.2.3":           "loopback",
		"::ffff:7f00:1":              "loopback",
		"::ffff:0a00:0001":           "RFC 1918",
		"::ffff:a9fe:0001":           "link-local",
		"64:ff9b::0a00:0001":         "RFC 1918",
		"2002:7f00:0001:0000::":      "loopback",
		"::ffff:c0a8:0001":           "RFC 1918",
		"::ffff:6440:0001":           "CGNAT",
		"64:ff9b::ffff:ffff":         "broadcast",
		"64:ff9b::e000:1":            "multicast",
		"64:ff9b::0:0":               "unspecified",
		"2002:0000:0000::":           "unspecified",
		"2002:ffff:ffff::":           "broadcast",
		"2002:e000:0001::":           "multicast",
		"2002:6440:0001::":           "CGNAT",
		"2002:ac10:0001::":           "RFC 1918",
		"2002:c000:00aa::":           "special-purpose",
		"::ffff:c000:00aa":           "special-purpose",
		"64:ff9b::c000:aa":           "special-purpose",
		"fe80::a9fe:a9fe":            "link-local",
		"fc00:ffff:ffff:ffff:ffff::": "unique-local",
	}
	for s, want := range refused {
		ip := netip.MustParseAddr(s)
		what, ok := Blocked(ip)
		if !ok || !strings.Contains(what, want) {
			t.Errorf("Blocked(%s) = %q, %v; want refused as %q", s, what, ok, want)
		}
	}
	for _, s := range []string{
		"1.1.1.1", "8.8.8.8", "93.184.215.14", "9.255.255.255", "11.0.0.0", "172.15.255.255",
		"172.32.0.0", "192.167.255.255", "192.169.0.0", "100.63.255.255", "100.128.0.0",
		"169.253.255.255", "169.255.0.0", "126.255.255.255", "128.0.0.0", "223.255.255.255",
		"2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808",
		"2002:808:808::1", "fbff:ffff:ffff:ffff::1",
	} {
		if what, ok := Blocked(netip.MustParseAddr(s)); ok {
			t.Errorf("Blocked(%s) = %q: a public address must pass", s, what)
		}
	}
}

func TestParse(t *testing.T) {
	p, err := Parse(" 10.20.0.0/16, 127.0.0.1 ,, 192.168.1.7:8443,[fd00::1]:443, CRM.internal, api.corp:8080, *.svc.local, loopback ")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != "10.20.0.0/16,127.0.0.1,192.168.1.7:8443,[fd00::1]:443,CRM.internal,api.corp:8080,*.svc.local,loopback" {
		t.Errorf("String() = %q", got)
	}
	for _, bad := range []string{"10.0.0.0/33", "crm.internal:0", "crm.internal:99999", "crm.internal:http", "http://crm", "a b", "-bad.example", "*.", "host:"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted a malformed entry", bad)
		}
	}
	if p, err := Parse(""); err != nil || !p.Empty() || p.String() != "(none)" {
		t.Errorf("Parse(\"\") = %v, %v; want an empty policy", p, err)
	}
}

func TestCheckWithAllowlist(t *testing.T) {
	p, err := Parse("10.20.0.0/16,172.16.5.5,192.168.1.7:8443,[fd00::1]:443")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr    string
		allowed bool
	}{
		{"10.20.3.4:80", true},
		{"10.21.0.1:80", false},
		{"172.16.5.5:9000", true},
		{"172.16.5.6:9000", false},
		{"192.168.1.7:8443", true},
		{"192.168.1.7:8444", false}, // the entry names its port
		{"[fd00::1]:443", true},
		{"[fd00::2]:443", false},
		{"[::ffff:10.20.0.9]:80", true}, // mapped spelling of an allowed address
		{"127.0.0.1:80", false},
		{"169.254.169.254:80", false},
		{"8.8.8.8:53", true}, // public: allowed without an entry
	}
	for _, c := range cases {
		ap := netip.MustParseAddrPort(c.addr)
		err := p.Check(ap.Addr(), ap.Port())
		if c.allowed != (err == nil) {
			t.Errorf("Check(%s) = %v, want allowed=%v", c.addr, err, c.allowed)
		}
		var de *DeniedError
		if err != nil && !errors.As(err, &de) {
			t.Errorf("Check(%s) error %T, want *DeniedError", c.addr, err)
		}
	}
	// A nil policy refuses every blocked range and nothing else.
	var none *Policy
	if err := none.Check(netip.MustParseAddr("127.0.0.1"), 80); err == nil {
		t.Error("nil policy allowed loopback")
	}
	if err := none.Check(netip.MustParseAddr("1.1.1.1"), 80); err != nil {
		t.Errorf("nil policy refused a public address: %v", err)
	}
	loop, _ := Parse("loopback")
	for _, s := range []string{"127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"} {
		if err := loop.Check(netip.MustParseAddr(s), 8080); err != nil {
			t.Errorf("loopback entry: %s refused: %v", s, err)
		}
	}
	if err := loop.Check(netip.MustParseAddr("10.0.0.1"), 80); err == nil {
		t.Error("loopback entry allowed 10.0.0.1")
	}
}

func TestAllowsHost(t *testing.T) {
	p, _ := Parse("crm.internal,api.corp:8080,*.svc.local")
	for _, c := range []struct {
		host, port string
		want       bool
	}{
		{"crm.internal", "443", true},
		{"CRM.Internal.", "80", true},
		{"x.crm.internal", "80", false},
		{"api.corp", "8080", true},
		{"api.corp", "8081", false},
		{"redis.svc.local", "6379", true},
		{"a.b.svc.local", "1", true},
		{"svc.local", "80", false},
		{"evilsvc.local", "80", false},
		{"localhost", "80", false},
	} {
		if got := p.AllowsHost(c.host, c.port); got != c.want {
			t.Errorf("AllowsHost(%s, %s) = %v, want %v", c.host, c.port, got, c.want)
		}
	}
}

// dialer returns a Dialer whose resolver answers from names and whose underlying dial records
// the addresses it was asked for; it never touches the network.
func dialer(t *testing.T, allow string, names map[string][]string) (*Dialer, *[]string) {
	t.Helper()
	p, err := Parse(allow)
	if err != nil {
		t.Fatal(err)
	}
	var dialed []string
	return &Dialer{
		Policy: p,
		Dial: func(_ context.Context, _, addr string) (net.Conn, error) {
			dialed = append(dialed, addr)
			c1, c2 := net.Pipe()
			_ = c2.Close()
			return c1, nil
		},
		Lookup: func(_ context.Context, _, host string) ([]netip.Addr, error) {
			ss, ok := names[host]
			if !ok {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			var out []netip.Addr
			for _, s := range ss {
				out = append(out, netip.MustParseAddr(s))
			}
			return out, nil
		},
	}, &dialed
}

func TestDialerRefusesBeforeConnecting(t *testing.T) {
	names := map[string][]string{
		"localhost":       {"127.0.0.1", "::1"},
		"rebind.example":  {"169.254.169.254"},
		"intranet":        {"10.1.2.3"},
		"public.example":  {"93.184.215.14"},
		"mixed.example":   {"127.0.0.1", "93.184.215.14"},
		"mapped.example":  {"::ffff:127.0.0.1"},
		"nowhere.example": {},
	}
	d, dialed := dialer(t, "", names)
	var denied []*DeniedError
	d.OnDeny = func(e *DeniedError) { denied = append(denied, e) }
	ctx := context.Background()
	for _, addr := range []string{
		"127.0.0.1:80", "[::1]:80", "10.0.0.1:80", "169.254.169.254:80", "[::ffff:169.254.169.254]:80",
		"[fe80::1%eth0]:80", "localhost:8080", "rebind.example:80", "intranet:443", "mapped.example:80",
		"0.0.0.0:80",
	} {
		_, err := d.DialContext(ctx, "tcp", addr)
		var de *DeniedError
		if !errors.As(err, &de) {
			t.Errorf("dial %s: %v, want *DeniedError", addr, err)
			continue
		}
		if de.Target != addr || !strings.Contains(err.Error(), EnvAllow) {
			t.Errorf("dial %s: message %q should name the target and %s", addr, err, EnvAllow)
		}
	}
	if len(*dialed) != 0 {
		t.Fatalf("the underlying dial ran for refused destinations: %v", *dialed)
	}
	// localhost has two addresses: each refusal is reported with the address it resolved to.
	if len(denied) != 12 || denied[6].IP != netip.MustParseAddr("127.0.0.1") || denied[7].IP != netip.MustParseAddr("::1") {
		t.Errorf("OnDeny saw %d refusals (%v), want 12 with resolved addresses", len(denied), denied)
	}

	// Public names are dialled by address, so nothing resolves again after the check; a name
	// with a refused and a public address reaches only the public one.
	for addr, want := range map[string]string{
		"public.example:443": "93.184.215.14:443",
		"mixed.example:443":  "93.184.215.14:443",
		"8.8.8.8:53":         "8.8.8.8:53",
	} {
		*dialed = nil
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		_ = c.Close()
		if len(*dialed) != 1 || (*dialed)[0] != want {
			t.Errorf("dial %s dialled %v, want [%s]", addr, *dialed, want)
		}
	}
	if _, err := d.DialContext(ctx, "tcp", "nowhere.example:80"); !errors.Is(err, ErrNoAddress) {
		t.Errorf("a name without addresses: %v", err)
	}
}

func TestDialerAllowlist(t *testing.T) {
	names := map[string][]string{"localhost": {"127.0.0.1"}, "crm.internal": {"10.9.9.9"}, "other.internal": {"10.9.9.10"}}
	d, dialed := dialer(t, "127.0.0.1:8080,crm.internal", names)
	ctx := context.Background()
	for _, addr := range []string{"127.0.0.1:8080", "localhost:8080", "crm.internal:443"} {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		_ = c.Close()
	}
	// An allowlisted name is dialled by name: the operator allowed it wherever it points.
	if got := strings.Join(*dialed, " "); got != "127.0.0.1:8080 127.0.0.1:8080 crm.internal:443" {
		t.Errorf("dialled %q", got)
	}
	*dialed = nil
	for _, addr := range []string{"127.0.0.1:6379", "localhost:6379", "other.internal:443"} {
		var de *DeniedError
		if _, err := d.DialContext(ctx, "tcp", addr); !errors.As(err, &de) {
			t.Errorf("dial %s: %v, want refused", addr, err)
		}
	}
	if len(*dialed) != 0 {
		t.Fatalf("the underlying dial ran for refused destinations: %v", *dialed)
	}
}
