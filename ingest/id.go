package ingest

import (
	"crypto/rand"
	"time"
)

// crockford is the ULID alphabet: no I, L, O or U, so ids survive being read aloud or retyped.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// newExecutionID returns a ULID: 48 bits of milliseconds then 80 random bits, 26 characters of
// Crockford base32. Ids sort by the time they were accepted, which is what people scanning
// executions (and Redis sorted sets) want, and 80 random bits make collisions irrelevant.
func newExecutionID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	return encodeULID(b)
}

// encodeULID writes 128 bits as 26 base32 digits, most significant first (the first digit
// carries only 3 bits).
func encodeULID(b [16]byte) string {
	var out [26]byte
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
		uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
