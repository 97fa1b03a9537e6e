// Package busauth authenticates the records flowd's roles put on flowd's own Kafka topics.
//
// Every record a role produces to a topic under the topic prefix (ingest records, work items,
// results, lifecycle events, dead letters) carries an HMAC-SHA256 in the header HeaderName,
// computed with a key only flowd's roles hold over the record's topic, key, headers and value.
// Every consumer verifies it before acting, so a record written by anyone else (a tenant's
// connector, a partner with broker access, a stray tool) is refused even if it reached the
// topic. Binding the topic means a genuine record copied to another topic does not verify.
//
// Keys rotate like the connection secrets key: a list `id:base64key,...` whose first key signs
// and all of whose keys verify. Rotate by adding a new key first on every role (old records
// still verify), then dropping the old one once no record signed with it can be redelivered.
package busauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/secrets"
)

// EnvKey is the environment variable that holds the key list.
const EnvKey = "FLOWD_BUS_KEY"

// HeaderName is the record header holding the signature: "v1:<keyId>:<base64url mac>" (key ids never hold a colon).
const HeaderName = "flowd-auth"

const version = "v1"

// Errors Verify wraps; all of them mean "not written by a flowd role holding our keys".
var (
	ErrUnsigned     = errors.New("record is not signed")
	ErrUnknownKey   = errors.New("record is signed with an unknown key")
	ErrBadSignature = errors.New("record signature does not match")
)

// Keyring signs with its active key and verifies with any of its keys. It is safe for
// concurrent use.
type Keyring struct {
	active string
	keys   map[string][]byte
	pools  map[string]*sync.Pool // per key id: reusable HMAC states (hmac.New allocates)
}

// New builds a keyring from a key list (the first key signs).
func New(keys []secrets.Key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, secrets.ErrNoKey
	}
	k := &Keyring{active: keys[0].ID, keys: map[string][]byte{}, pools: map[string]*sync.Pool{}}
	for _, key := range keys {
		material := key.Material
		k.keys[key.ID] = material
		k.pools[key.ID] = &sync.Pool{New: func() any { return hmac.New(sha256.New, material) }}
	}
	return k, nil
}

// Load reads the key list from env (the value of FLOWD_BUS_KEY) or the key file at path file.
func Load(env, file string) (*Keyring, error) {
	keys, err := secrets.ReadKeyList(EnvKey, env, file)
	if err != nil {
		return nil, err
	}
	return New(keys)
}

// Generate returns a fresh key list of one key, for FLOWD_BUS_KEY.
func Generate() string { return "b1:" + secrets.GenerateKey() }

// ActiveID is the id of the key records are signed with.
func (k *Keyring) ActiveID() string { return k.active }

// Sign sets m's signature header (replacing one it had). m.Topic must be set: the topic is
// part of what is signed.
func (k *Keyring) Sign(m *kafka.Message) {
	hs := m.Headers[:0:0]
	for _, h := range m.Headers {
		if h.Key != HeaderName {
			hs = append(hs, h)
		}
	}
	mac := k.mac(k.active, m.Topic, m.Key, hs, m.Value)
	value := make([]byte, 0, len(version)+len(k.active)+2+base64.RawURLEncoding.EncodedLen(len(mac)))
	value = append(value, version...)
	value = append(value, ':')
	value = append(value, k.active...)
	value = append(value, ':')
	value = base64.RawURLEncoding.AppendEncode(value, mac)
	m.Headers = append(hs, kafka.Header{Key: HeaderName, Value: value})
}

// SignAll signs every message.
func (k *Keyring) SignAll(ms []kafka.Message) {
	for i := range ms {
		k.Sign(&ms[i])
	}
}

// Verify checks m's signature against the topic m was read from. It returns an error wrapping
// ErrUnsigned, ErrUnknownKey or ErrBadSignature when m was not written by a role holding one
// of the keyring's keys.
func (k *Keyring) Verify(m kafka.Message) error {
	at, found := -1, 0
	for i, h := range m.Headers {
		if h.Key == HeaderName {
			at = i
			found++
		}
	}
	switch {
	case found == 0:
		return ErrUnsigned
	case found > 1:
		return fmt.Errorf("%w: %d signature headers", ErrBadSignature, found)
	}
	sig := m.Headers[at].Value
	// Sign puts the signature last, so the other headers are usually a prefix: no copy.
	others := m.Headers[:at]
	if at != len(m.Headers)-1 {
		others = append(append(make([]kafka.Header, 0, len(m.Headers)-1), m.Headers[:at]...), m.Headers[at+1:]...)
	}
	ver, rest, ok1 := strings.Cut(string(sig), ":")
	id, enc, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || ver != version {
		return fmt.Errorf("%w: malformed %s header", ErrBadSignature, HeaderName)
	}
	if _, ok := k.keys[id]; !ok {
		return fmt.Errorf("%w: key id %q", ErrUnknownKey, id)
	}
	got, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return fmt.Errorf("%w: malformed %s header", ErrBadSignature, HeaderName)
	}
	if !hmac.Equal(got, k.mac(id, m.Topic, m.Key, others, m.Value)) {
		return ErrBadSignature
	}
	return nil
}

// mac is HMAC-SHA256 over a length-prefixed encoding of the record, so no two different
// records encode alike (a byte moved from the key to the value changes the MAC).
func (k *Keyring) mac(id, topic string, key []byte, headers []kafka.Header, value []byte) []byte {
	pool := k.pools[id]
	h := pool.Get().(hash.Hash)
	defer pool.Put(h)
	h.Reset()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	h.Write([]byte("flowd.record." + version + "\x00"))
	field([]byte(topic))
	field(key)
	binary.BigEndian.PutUint64(n[:], uint64(len(headers)))
	h.Write(n[:])
	for _, hd := range headers {
		field([]byte(hd.Key))
		field(hd.Value)
	}
	field(value)
	return h.Sum(nil)
}
