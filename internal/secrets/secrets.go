// Package secrets seals connection secrets at rest with AES-256-GCM. Every ciphertext carries
// the id of the key that sealed it, so keys rotate: the first key of a Keyring seals, every key
// in it opens. The caller's additional data (AAD) binds a ciphertext to the record and field it
// belongs to, so a ciphertext copied into another record does not open.
package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// EnvKey is the environment variable that holds the key(s).
const EnvKey = "FLOWD_SECRET_KEY"

// KeySize is the length of an AES-256 key in bytes.
const KeySize = 32

// Errors callers switch on.
var (
	// ErrNoKey means neither the environment nor a key file configured a key.
	ErrNoKey = errors.New("no secret key configured (set " + EnvKey + " or a key file)")
	// ErrUnknownKey means the ciphertext was sealed with a key this keyring does not hold.
	ErrUnknownKey = errors.New("sealed with an unknown key")
	// ErrDecrypt means the ciphertext, nonce or AAD do not match: tampered, moved or wrong key.
	ErrDecrypt = errors.New("cannot decrypt: wrong key, tampered data or wrong record")
)

// Sealed is one ciphertext with the id of its key and its nonce. It encodes to JSON with
// base64 bytes.
type Sealed struct {
	KeyID string `json:"kid"`
	Nonce []byte `json:"nonce"`
	Data  []byte `json:"data"`
}

// IsZero reports whether s holds nothing.
func (s Sealed) IsZero() bool { return s.KeyID == "" && len(s.Nonce) == 0 && len(s.Data) == 0 }

// Equal reports whether two sealed values are the same ciphertext (nonces are random, so a
// value sealed again never equals the old one).
func (s Sealed) Equal(o Sealed) bool {
	return s.KeyID == o.KeyID && bytes.Equal(s.Nonce, o.Nonce) && bytes.Equal(s.Data, o.Data)
}

// Keyring holds the keys: the active one seals, all of them open.
type Keyring struct {
	active string
	ids    []string
	aeads  map[string]cipher.AEAD
}

var keyIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)

// Key is one entry of a key list: its id and its 32 bytes.
type Key struct {
	ID       string
	Material []byte
}

// ParseKeyList reads `id1:base64key[,id2:base64key...]`, the format of every flowd key list
// (connection secrets, record authentication). The first key is the active one; the keys after
// it are the previous ones, still accepted so that rotation never breaks what they protected.
// Commas and newlines both separate.
func ParseKeyList(spec string) ([]Key, error) {
	var keys []Key
	seen := map[string]bool{}
	for i, item := range strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, b64, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("key %d: want id:base64key", i+1)
		}
		id, b64 = strings.TrimSpace(id), strings.TrimSpace(b64)
		if !keyIDRe.MatchString(id) {
			return nil, fmt.Errorf("key %d: id %q must be 1-32 letters, digits or ._-", i+1, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("key %d: id %q is listed twice", i+1, id)
		}
		seen[id] = true
		// Never echo the key material itself in the error.
		material, err := decodeKey(b64)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", id, err)
		}
		keys = append(keys, Key{ID: id, Material: material})
	}
	if len(keys) == 0 {
		return nil, ErrNoKey
	}
	return keys, nil
}

// ReadKeyList reads a key list from env (the value of the variable named envName) or, when env
// is empty, from the file at path file. Either holds one bare base64 key (its id is "k1") or
// the list form of ParseKeyList. With neither it returns ErrNoKey; with both, an error,
// because silently preferring one hides a misconfiguration.
func ReadKeyList(envName, env, file string) ([]Key, error) {
	env = strings.TrimSpace(env)
	switch {
	case env != "" && file != "":
		return nil, fmt.Errorf("both %s and a key file are set: configure exactly one", envName)
	case env != "":
		keys, err := parseSpec(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envName, err)
		}
		return keys, nil
	case file != "":
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read key file: %w", err)
		}
		keys, err := parseSpec(strings.TrimSpace(string(raw)))
		if err != nil {
			return nil, fmt.Errorf("key file %s: %w", file, err)
		}
		return keys, nil
	default:
		return nil, ErrNoKey
	}
}

func parseSpec(s string) ([]Key, error) {
	if !strings.ContainsAny(s, ":,\n") {
		return ParseKeyList("k1:" + s)
	}
	return ParseKeyList(s)
}

// ParseKeys reads a key list (see ParseKeyList) into a Keyring.
func ParseKeys(spec string) (*Keyring, error) {
	keys, err := ParseKeyList(spec)
	if err != nil {
		return nil, fmt.Errorf("secret %w", err)
	}
	return newKeyring(keys)
}

func newKeyring(keys []Key) (*Keyring, error) {
	kr := &Keyring{aeads: map[string]cipher.AEAD{}}
	for _, k := range keys {
		aead, err := newAEAD(k.Material)
		if err != nil {
			return nil, fmt.Errorf("secret key %q: %w", k.ID, err)
		}
		kr.aeads[k.ID] = aead
		kr.ids = append(kr.ids, k.ID)
	}
	kr.active = kr.ids[0]
	return kr, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}

// decodeKey accepts standard or URL-safe base64, padded or not: keys get pasted from many tools.
func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("key is %d bytes, want %d (generate one with `openssl rand -base64 32`)", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, errors.New("key is not base64")
}

// LoadKeyring builds the keyring from env (the value of FLOWD_SECRET_KEY) or, when env is
// empty, from the key file at path file (see ReadKeyList).
func LoadKeyring(env, file string) (*Keyring, error) {
	keys, err := ReadKeyList(EnvKey, env, file)
	if err != nil {
		return nil, err
	}
	return newKeyring(keys)
}

// GenerateKey returns a fresh random AES-256 key, base64-encoded, for FLOWD_SECRET_KEY.
func GenerateKey() string {
	var b [KeySize]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("secrets: no randomness: " + err.Error())
	}
	return base64.StdEncoding.EncodeToString(b[:])
}

// ActiveID is the id of the key new values are sealed with.
func (k *Keyring) ActiveID() string { return k.active }

// KeyIDs lists every key id, the active one first.
func (k *Keyring) KeyIDs() []string { return append([]string(nil), k.ids...) }

// Encrypt seals plaintext with the active key. aad is authenticated but not stored: the same
// aad must be given to Decrypt.
func (k *Keyring) Encrypt(plaintext, aad []byte) (Sealed, error) {
	aead := k.aeads[k.active]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return Sealed{}, fmt.Errorf("nonce: %w", err)
	}
	return Sealed{KeyID: k.active, Nonce: nonce, Data: aead.Seal(nil, nonce, plaintext, bind(k.active, aad))}, nil
}

// Decrypt opens s with the key it names.
func (k *Keyring) Decrypt(s Sealed, aad []byte) ([]byte, error) {
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return nil, fmt.Errorf("key id %q: %w", s.KeyID, ErrUnknownKey)
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, ErrDecrypt
	}
	out, err := aead.Open(nil, s.Nonce, s.Data, bind(s.KeyID, aad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}

// bind also authenticates the key id and a version tag, so a ciphertext cannot be relabelled.
func bind(keyID string, aad []byte) []byte {
	out := make([]byte, 0, len("flowd.secrets.v1")+len(keyID)+len(aad)+2)
	out = append(out, "flowd.secrets.v1\x00"...)
	out = append(out, keyID...)
	out = append(out, 0)
	return append(out, aad...)
}
