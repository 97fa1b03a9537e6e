// Package egress is the network policy of flowd's built-in connectors: a connector that dials
// out refuses loopback, private, link-local (cloud metadata), CGNAT, unique-local, multicast and
// other special-purpose addresses unless an operator allows them. The check runs at dial time
// on the resolved address, right before connect, so a DNS name that resolves to 127.0.0.1, DNS
// rebinding and redirects cannot get around it.
//
// Operators configure it through the connector environment (the runner passes it from its
// flags): FLOWD_CONNECTOR_EGRESS_ALLOW is a comma-separated list of entries, each one of
//
//	10.20.0.0/16            a CIDR
//	10.20.0.7               one address
//	10.20.0.7:8443          one address and port ([fd00::1]:443 for IPv6)
//	crm.internal            a host name, any port, whatever it resolves to
//	crm.internal:8443       a host name and port
//	*.corp.example          every name under corp.example (not corp.example itself)
//	loopback                127.0.0.0/8 and ::1
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Variables the runner passes to every connector with the policy.
const (
	// EnvAllow holds the operator's allowlist.
	EnvAllow = "FLOWD_CONNECTOR_EGRESS_ALLOW"
	// EnvKafkaBrokersAllow holds the comma-separated host:port brokers a connector producing
	// to Kafka may reach (the built-in kafka connector reaches no other).
	EnvKafkaBrokersAllow = "FLOWD_CONNECTOR_KAFKA_BROKERS_ALLOW"
	// EnvReservedTopicPrefix holds flowd's own topic prefix, which no connector may write.
	EnvReservedTopicPrefix = "FLOWD_CONNECTOR_RESERVED_TOPIC_PREFIX"
)

const (
	defaultDialTimeout = 10 * time.Second
	defaultKeepAlive   = 30 * time.Second
)

// blockedRange is a destination refused by default, with the words an error uses for it.
type blockedRange struct {
	prefix netip.Prefix
	what   string
}

func mustRanges(pairs ...string) []blockedRange {
	out := make([]blockedRange, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, blockedRange{netip.MustParsePrefix(pairs[i]), pairs[i+1]})
	}
	return out
}

// blocked lists what a connector may not reach by default. IPv4-mapped IPv6 addresses are
// unmapped before the check, and the IPv4 address inside NAT64 and 6to4 addresses is checked
// too, so no IPv6 spelling reaches a refused IPv4 destination.
var blocked = mustRanges(
	"0.0.0.0/8", "unspecified (\"this network\") address",
	"10.0.0.0/8", "private address (RFC 1918)",
	"100.64.0.0/10", "shared (CGNAT) address",
	"127.0.0.0/8", "loopback address",
	"169.254.0.0/16", "link-local address (cloud metadata lives here)",
	"172.16.0.0/12", "private address (RFC 1918)",
	"192.0.0.0/24", "IETF special-purpose address",
	"192.168.0.0/16", "private address (RFC 1918)",
	"198.18.0.0/15", "benchmarking address",
	"224.0.0.0/4", "multicast address",
	"240.0.0.0/4", "reserved or broadcast address",
	"::/128", "unspecified address",
	"::1/128", "loopback address",
	"::/96", "IPv4-compatible address",
	"64:ff9b:1::/48", "local-use NAT64 address",
	"100::/64", "discard-only address",
	"fc00::/7", "unique-local address (ULA)",
	"fe80::/10", "link-local address",
	"fec0::/10", "site-local address",
	"ff00::/8", "multicast address",
)

// nat64 and sixToFour carry an IPv4 address inside an IPv6 one.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Blocked reports whether ip is refused by default and, if so, what kind of address it is.
func Blocked(ip netip.Addr) (what string, refused bool) {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return "invalid address", true
	}
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			if what, refused := Blocked(netip.AddrFrom4([4]byte(b[12:16]))); refused {
				return what + " via NAT64", true
			}
		case sixToFour.Contains(ip):
			if what, refused := Blocked(netip.AddrFrom4([4]byte(b[2:6]))); refused {
				return what + " via 6to4", true
			}
		}
	}
	for _, r := range blocked {
		if r.prefix.Contains(ip) {
			return r.what, true
		}
	}
	return "", false
}

// hostEntry allows a host name on one port, or on any when port is "".
type hostEntry struct {
	name string // lower case; "*.corp.example" matches names under corp.example
	port string
}

// addrPortEntry allows one address on one port.
type addrPortEntry struct {
	ip   netip.Addr
	port uint16
}

// Policy is a parsed allowlist. The zero Policy (and a nil one) refuses every blocked range.
type Policy struct {
	nets      []netip.Prefix
	addrPorts []addrPortEntry
	hosts     []hostEntry
	raw       []string
}

// FromEnv parses the allowlist in FLOWD_CONNECTOR_EGRESS_ALLOW.
func FromEnv() (*Policy, error) {
	p, err := Parse(os.Getenv(EnvAllow))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvAllow, err)
	}
	return p, nil
}

// Parse reads a comma-separated allowlist (see the package comment); blanks are ignored.
func Parse(list string) (*Policy, error) {
	p := &Policy{}
	for entry := range strings.SplitSeq(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if err := p.add(entry); err != nil {
			return nil, err
		}
		p.raw = append(p.raw, entry)
	}
	return p, nil
}

func (p *Policy) add(entry string) error {
	if strings.EqualFold(entry, "loopback") {
		p.nets = append(p.nets, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
		return nil
	}
	if pfx, err := netip.ParsePrefix(entry); err == nil {
		p.nets = append(p.nets, pfx.Masked())
		return nil
	}
	if ip, err := netip.ParseAddr(entry); err == nil {
		ip = ip.Unmap().WithZone("")
		p.nets = append(p.nets, netip.PrefixFrom(ip, ip.BitLen()))
		return nil
	}
	if ap, err := netip.ParseAddrPort(entry); err == nil {
		p.addrPorts = append(p.addrPorts, addrPortEntry{ap.Addr().Unmap().WithZone(""), ap.Port()})
		return nil
	}
	name, port := entry, ""
	if h, pt, err := net.SplitHostPort(entry); err == nil {
		name, port = h, pt
		if !validPort(port) {
			return fmt.Errorf("allow entry %q: bad port", entry)
		}
	}
	if !validHostPattern(name) {
		return fmt.Errorf("allow entry %q is not a CIDR, an address, a host name or one of those with :port", entry)
	}
	p.hosts = append(p.hosts, hostEntry{strings.ToLower(strings.TrimSuffix(name, ".")), port})
	return nil
}

func validPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n > 0 && n <= 65535
}

// validHostPattern accepts DNS names, optionally starting with "*.".
func validHostPattern(s string) bool {
	s = strings.TrimPrefix(strings.TrimSuffix(s, "."), "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// String is the allowlist as configured, for start-up logs.
func (p *Policy) String() string {
	if p == nil || len(p.raw) == 0 {
		return "(none)"
	}
	return strings.Join(p.raw, ",")
}

// Empty reports whether nothing is allowed beyond the default.
func (p *Policy) Empty() bool { return p == nil || len(p.raw) == 0 }

// AllowsHost reports whether the operator allowed the host name (with port, when the entry
// names one) whatever it resolves to.
func (p *Policy) AllowsHost(host, port string) bool {
	if p == nil {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range p.hosts {
		if h.port != "" && h.port != port {
			continue
		}
		if suffix, ok := strings.CutPrefix(h.name, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		} else if host == h.name {
			return true
		}
	}
	return false
}

// Check returns nil when a connector may connect to ip:port, else a *DeniedError naming the
// address (the caller may replace Target with the host name it was asked for).
func (p *Policy) Check(ip netip.Addr, port uint16) error {
	ip = ip.Unmap().WithZone("")
	what, refused := Blocked(ip)
	if !refused {
		return nil
	}
	if p != nil {
		for _, n := range p.nets {
			if n.Contains(ip) {
				return nil
			}
		}
		for _, ap := range p.addrPorts {
			if ap.ip == ip && ap.port == port {
				return nil
			}
		}
	}
	target := netip.AddrPortFrom(ip, port).String()
	return &DeniedError{Target: target, IP: ip, What: what}
}

// DeniedError is a destination the policy refused. Its message names what the connector was
// asked to reach and the kind of address, and says how an operator allows it; the resolved
// address is in IP for logs.
type DeniedError struct {
	Target string     // host:port as asked (a name or an address)
	IP     netip.Addr // the refused address
	What   string     // kind of address, e.g. "loopback address"
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("egress to %s refused: %s; an operator can allow it with %s (flowd runner --egress-allow)", e.Target, e.What, EnvAllow)
}

// ErrNoAddress is returned when a host name resolves to no address at all.
var ErrNoAddress = errors.New("egress: host resolves to no address")

// Dialer dials only destinations the policy permits. It resolves names itself, checks every
// address, then dials the permitted addresses as literals, so nothing is resolved again between
// the check and connect(2).
type Dialer struct {
	Policy *Policy
	// Dial connects to a permitted "ip:port" (never a name unless the name is allowlisted).
	// nil: a net.Dialer with a 10 s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Lookup resolves a host name. nil: net.DefaultResolver.LookupNetIP.
	Lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// OnDeny, when set, is told about every refusal (connectors log it with the address).
	OnDeny func(*DeniedError)
}

var defaultDialer = &net.Dialer{Timeout: defaultDialTimeout, KeepAlive: defaultKeepAlive}

// DialContext has the signature of net.Dialer.DialContext and http.Transport.DialContext.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := d.Dial
	if dial == nil {
		dial = defaultDialer.DialContext
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	port, err := net.LookupPort(network, portStr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("egress: bad port in %q", addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := d.check(addr, ip, uint16(port)); err != nil {
			return nil, err
		}
		return dial(ctx, network, netip.AddrPortFrom(ip, uint16(port)).String())
	}
	if d.Policy.AllowsHost(host, portStr) {
		// The operator allowed the name itself, wherever it points.
		return dial(ctx, network, addr)
	}
	lookup := d.Lookup
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	ipNet := "ip"
	switch network {
	case "tcp4", "udp4":
		ipNet = "ip4"
	case "tcp6", "udp6":
		ipNet = "ip6"
	}
	ips, err := lookup(ctx, ipNet, host)
	if err != nil {
		return nil, err
	}
	// Only permitted addresses are dialled: a name that resolves to a public and a private
	// address reaches the public one only.
	var permitted []netip.Addr
	var denied error
	for _, ip := range ips {
		if err := d.check(addr, ip, uint16(port)); err != nil {
			if denied == nil {
				denied = err
			}
			continue
		}
		permitted = append(permitted, ip)
	}
	if len(permitted) == 0 {
		if denied != nil {
			return nil, denied
		}
		return nil, fmt.Errorf("%w: %s", ErrNoAddress, host)
	}
	var errs []error
	for _, ip := range permitted {
		c, err := dial(ctx, network, netip.AddrPortFrom(ip, uint16(port)).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// check applies the policy to one address and reports a refusal under the name asked for.
func (d *Dialer) check(asked string, ip netip.Addr, port uint16) error {
	err := d.Policy.Check(ip, port)
	var de *DeniedError
	if errors.As(err, &de) {
		de.Target = asked
		if d.OnDeny != nil {
			d.OnDeny(de)
		}
	}
	return err
}
