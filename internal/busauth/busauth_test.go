package busauth

import (
	"errors"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/secrets"
)

func ring(t *testing.T, spec string) *Keyring {
	t.Helper()
	keys, err := secrets.ParseKeyList(spec)
	if err != nil {
		t.Fatal(err)
	}
	k, err := New(keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func record() kafka.Message {
	return kafka.Message{
		Topic: "flowd.ingest", Key: []byte("exec-1"), Value: []byte(`{"executionId":"exec-1"}`),
		Headers: []kafka.Header{{Key: "type", Value: []byte("flow.started")}},
	}
}

func TestSignVerify(t *testing.T) {
	t.Parallel()
	a := ring(t, "b2:"+secrets.GenerateKey()+",b1:"+secrets.GenerateKey())
	m := record()
	a.Sign(&m)
	if err := a.Verify(m); err != nil {
		t.Fatalf("a signed record does not verify: %v", err)
	}
	// Signing again replaces the header rather than adding a second one.
	a.Sign(&m)
	if n := countHeader(m); n != 1 {
		t.Fatalf("%d signature headers after signing twice", n)
	}
	if err := a.Verify(m); err != nil {
		t.Fatalf("re-signed record: %v", err)
	}
}

func TestVerifyRefusesTampering(t *testing.T) {
	t.Parallel()
	k := ring(t, "b1:"+secrets.GenerateKey())
	other := ring(t, "b1:"+secrets.GenerateKey())
	signed := func() kafka.Message { m := record(); k.Sign(&m); return m }
	cases := map[string]struct {
		m    func() kafka.Message
		want error
	}{
		"unsigned":       {func() kafka.Message { return record() }, ErrUnsigned},
		"value changed":  {func() kafka.Message { m := signed(); m.Value = []byte(`{"executionId":"exec-2"}`); return m }, ErrBadSignature},
		"key changed":    {func() kafka.Message { m := signed(); m.Key = []byte("exec-2"); return m }, ErrBadSignature},
		"another topic":  {func() kafka.Message { m := signed(); m.Topic = "flowd.results"; return m }, ErrBadSignature},
		"header changed": {func() kafka.Message { m := signed(); m.Headers[0].Value = []byte("flow.stopped"); return m }, ErrBadSignature},
		"header added":   {func() kafka.Message { m := signed(); m.Headers = append(m.Headers, kafka.Header{Key: "x"}); return m }, ErrBadSignature},
		"byte moved":     {func() kafka.Message { m := signed(); m.Key = []byte("exec-1{"); m.Value = m.Value[1:]; return m }, ErrBadSignature},
		"other key":      {func() kafka.Message { m := record(); other.Sign(&m); return m }, ErrBadSignature},
		"unknown key id": {func() kafka.Message { m := record(); ring(t, "zz:"+secrets.GenerateKey()).Sign(&m); return m }, ErrUnknownKey},
		"garbage header": {func() kafka.Message {
			m := record()
			m.Headers = append(m.Headers, kafka.Header{Key: HeaderName, Value: []byte("nope")})
			return m
		}, ErrBadSignature},
		"two signatures": {func() kafka.Message {
			m := signed()
			m.Headers = append(m.Headers, m.Headers[len(m.Headers)-1])
			return m
		}, ErrBadSignature},
		"bad base64": {func() kafka.Message {
			m := record()
			m.Headers = append(m.Headers, kafka.Header{Key: HeaderName, Value: []byte("v1:b1:***")})
			return m
		}, ErrBadSignature},
		"unknown version": {func() kafka.Message {
			m := signed()
			h := &m.Headers[len(m.Headers)-1]
			h.Value = append([]byte("v9"), h.Value[2:]...)
			return m
		}, ErrBadSignature},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := k.Verify(tc.m())
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := secrets.GenerateKey(), secrets.GenerateKey()
	before := ring(t, "b1:"+oldKey)
	during := ring(t, "b2:"+newKey+",b1:"+oldKey)
	after := ring(t, "b2:"+newKey)

	m := record()
	before.Sign(&m)
	if err := during.Verify(m); err != nil {
		t.Fatalf("a record signed before the rotation must verify during it: %v", err)
	}
	during.Sign(&m)
	if err := after.Verify(m); err != nil {
		t.Fatalf("a record signed during the rotation must verify after it: %v", err)
	}
	if err := before.Verify(m); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a role without the new key: %v, want ErrUnknownKey", err)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	if _, err := Load("", ""); !errors.Is(err, secrets.ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
	k, err := Load(secrets.GenerateKey(), "")
	if err != nil || k.ActiveID() != "k1" {
		t.Fatalf("bare key: %v %v", k, err)
	}
	if _, err := Load("b1:short", ""); err == nil {
		t.Fatal("a short key was accepted")
	}
}

func countHeader(m kafka.Message) int {
	n := 0
	for _, h := range m.Headers {
		if h.Key == HeaderName {
			n++
		}
	}
	return n
}

func BenchmarkSignVerify(b *testing.B) {
	k := ring(&testing.T{}, "b1:"+secrets.GenerateKey())
	m := record()
	m.Value = make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		k.Sign(&m)
		if err := k.Verify(m); err != nil {
			b.Fatal(err)
		}
	}
}
