package main

import (
	"math"
	"slices"
	"time"
)

// latencies collects durations; percentiles are exact (every sample is kept: a run is bounded
// to a few hundred thousand samples).
type latencies []time.Duration

// pct returns the p-th percentile (0 < p <= 100) in milliseconds, nearest-rank.
func (l latencies) pct(p float64) float64 {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = min(max(i, 0), len(s)-1)
	return ms(s[i])
}

func ms(d time.Duration) float64 { return round2(float64(d) / float64(time.Millisecond)) }

func round1(v float64) float64 { return math.Round(v*10) / 10 }
func round2(v float64) float64 { return math.Round(v*100) / 100 }

// ratio is a/b rounded to 3 places, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}
