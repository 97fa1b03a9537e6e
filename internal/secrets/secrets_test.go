package secrets_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowd/flowd/internal/secrets"
)

func ring(t *testing.T, spec string) *secrets.Keyring {
	t.Helper()
	kr, err := secrets.ParseKeys(spec)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestRoundTripThroughJSON(t *testing.T) {
	t.Parallel()
	kr := ring(t, "a:"+secrets.GenerateKey())
	s, err := kr.Encrypt([]byte("hunter2"), []byte("conn-1/password"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(s)
	if strings.Contains(string(raw), "hunter2") || !strings.Contains(string(raw), `"kid":"a"`) {
		t.Fatalf("sealed JSON: %s", raw)
	}
	var back secrets.Sealed
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	got, err := kr.Decrypt(back, []byte("conn-1/password"))
	if err != nil || string(got) != "hunter2" {
		t.Fatalf("decrypt: %q %v", got, err)
	}
	again, _ := kr.Encrypt([]byte("hunter2"), []byte("conn-1/password"))
	if again.Equal(s) {
		t.Fatal("two encryptions of the same value are identical: nonce reused")
	}
}

func TestRefusesWrongKeyTamperingAndMovedCiphertext(t *testing.T) {
	t.Parallel()
	kr := ring(t, "a:"+secrets.GenerateKey())
	s, _ := kr.Encrypt([]byte("hunter2"), []byte("conn-1/password"))

	other := ring(t, "a:"+secrets.GenerateKey()) // same id, different key
	if _, err := other.Decrypt(s, []byte("conn-1/password")); !errors.Is(err, secrets.ErrDecrypt) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := ring(t, "b:"+secrets.GenerateKey()).Decrypt(s, []byte("conn-1/password")); !errors.Is(err, secrets.ErrUnknownKey) {
		t.Fatalf("unknown key id: %v", err)
	}
	if _, err := kr.Decrypt(s, []byte("conn-2/password")); !errors.Is(err, secrets.ErrDecrypt) {
		t.Fatalf("moved to another record: %v", err)
	}
	for name, mutate := range map[string]func(*secrets.Sealed){
		"data":  func(x *secrets.Sealed) { x.Data[0] ^= 1 },
		"tag":   func(x *secrets.Sealed) { x.Data[len(x.Data)-1] ^= 1 },
		"nonce": func(x *secrets.Sealed) { x.Nonce[0] ^= 1 },
		"short": func(x *secrets.Sealed) { x.Nonce = x.Nonce[:4] },
	} {
		c := secrets.Sealed{KeyID: s.KeyID, Nonce: append([]byte(nil), s.Nonce...), Data: append([]byte(nil), s.Data...)}
		mutate(&c)
		if _, err := kr.Decrypt(c, []byte("conn-1/password")); !errors.Is(err, secrets.ErrDecrypt) {
			t.Fatalf("tampered %s: %v", name, err)
		}
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := secrets.GenerateKey(), secrets.GenerateKey()
	before := ring(t, "k1:"+oldKey)
	s, _ := before.Encrypt([]byte("old secret"), []byte("x"))

	after := ring(t, "k2:"+newKey+", k1:"+oldKey)
	if after.ActiveID() != "k2" || strings.Join(after.KeyIDs(), ",") != "k2,k1" {
		t.Fatalf("active %s, ids %v", after.ActiveID(), after.KeyIDs())
	}
	got, err := after.Decrypt(s, []byte("x"))
	if err != nil || string(got) != "old secret" {
		t.Fatalf("old key no longer decrypts: %q %v", got, err)
	}
	n, _ := after.Encrypt([]byte("new secret"), []byte("x"))
	if n.KeyID != "k2" {
		t.Fatalf("new encryption used %s", n.KeyID)
	}
	if _, err := before.Decrypt(n, []byte("x")); !errors.Is(err, secrets.ErrUnknownKey) {
		t.Fatalf("a keyring without the new key opened it: %v", err)
	}
}

func TestParseAndLoad(t *testing.T) {
	t.Parallel()
	key := secrets.GenerateKey()
	for _, bad := range []string{"", "k1", "k1:notbase64!", "k1:" + key[:20], "bad id:" + key, "a:" + key + ",a:" + key} {
		if _, err := secrets.ParseKeys(bad); err == nil {
			t.Fatalf("ParseKeys(%q) accepted", bad)
		} else if strings.Contains(err.Error(), key) {
			t.Fatalf("error leaks the key: %v", err)
		}
	}
	kr, err := secrets.LoadKeyring(key, "")
	if err != nil || kr.ActiveID() != "k1" {
		t.Fatalf("single env key: %v %v", kr, err)
	}
	if kr, err = secrets.LoadKeyring("k9:"+key+",k1:"+secrets.GenerateKey(), ""); err != nil || kr.ActiveID() != "k9" {
		t.Fatalf("list env: %v", err)
	}
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if kr, err = secrets.LoadKeyring("", file); err != nil || kr.ActiveID() != "k1" {
		t.Fatalf("key file: %v", err)
	}
	if err := os.WriteFile(file, []byte("new:"+secrets.GenerateKey()+"\nold:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if kr, err = secrets.LoadKeyring("", file); err != nil || strings.Join(kr.KeyIDs(), ",") != "new,old" {
		t.Fatalf("key file list: %v", err)
	}
	if _, err := secrets.LoadKeyring("", ""); !errors.Is(err, secrets.ErrNoKey) {
		t.Fatalf("nothing configured: %v", err)
	}
	if _, err := secrets.LoadKeyring(key, file); err == nil {
		t.Fatal("both env and file accepted")
	}
}
