package graph

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"
)

// RootScope is the scope of everything outside a split.
const RootScope = "r"

// A token is "<scope>/<16 hex digits>". The digits hash the parent activation's token, the
// node id, the edge and the item index, so the same completion always yields the same tokens
// (a redelivered message produces nothing new) and tokens are unique within an execution.
// The scope prefix says which split element the activation belongs to: merges join within it.
func derive(scope, parent, nodeID string, edge, item int) string {
	h := sha256.New()
	h.Write([]byte(parent))
	h.Write([]byte{0})
	h.Write([]byte(nodeID))
	var n [16]byte
	binary.BigEndian.PutUint64(n[:8], uint64(edge))
	binary.BigEndian.PutUint64(n[8:], uint64(item))
	h.Write(n[:])
	return scope + "/" + hex.EncodeToString(h.Sum(nil)[:8])
}

// childScope is the scope of element i of the split activation splitToken: a hash of the
// token (so nested and parallel splits never share a scope) and the index, kept readable.
func childScope(splitToken string, i int) string {
	sum := sha256.Sum256([]byte(splitToken))
	return hex.EncodeToString(sum[:6]) + "." + strconv.Itoa(i)
}

// ScopeOf returns the scope a token belongs to ("" for a malformed token).
func ScopeOf(token string) string {
	i := strings.LastIndexByte(token, '/')
	if i <= 0 {
		return ""
	}
	return token[:i]
}
