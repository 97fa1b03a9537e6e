// Package schedule reads a trigger.schedule config: its cron expression in its time zone, what
// to do with ticks missed while nothing ran the flow, and the input each tick's execution gets.
// Parsing is the one place both the validator (when a flow is saved) and the scheduler (when it
// fires) read the config, so a flow that saved can always be scheduled.
package schedule

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Values of the missed policy.
const (
	MissedSkip    = "skip"
	MissedCatchUp = "catchUp"
)

// Bounds and defaults.
const (
	DefaultMaxCatchUp = 10
	MaxCatchUp        = 1000
	// MinEvery is the shortest @every interval: a tick is an execution, and a router fires them
	// from Redis, not a timer wheel.
	MinEvery = time.Second
)

// Spec is a parsed schedule.
type Spec struct {
	Cron       string
	Location   *time.Location
	Missed     string
	MaxCatchUp int
	Input      json.RawMessage // null when the config has none
	sched      cron.Schedule
}

// parser accepts 5 fields, or 6 with seconds first, and the descriptors (@hourly, @every 5m...).
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Error is a problem with one field of the config.
type Error struct {
	Field string // "cron", "timezone", ...
	Msg   string
}

func (e *Error) Error() string { return "config." + e.Field + ": " + e.Msg }

// Parse reads a trigger.schedule node's config. Its error is an *Error naming the field.
func Parse(cfg map[string]any) (*Spec, error) {
	s := &Spec{Location: time.UTC, Missed: MissedSkip, MaxCatchUp: DefaultMaxCatchUp, Input: json.RawMessage("null")}
	expr, _ := cfg["cron"].(string)
	s.Cron = strings.TrimSpace(expr)
	if s.Cron == "" {
		return nil, &Error{"cron", "a cron expression is required, e.g. \"*/5 * * * *\" or \"@every 1m\""}
	}
	if tz, ok := cfg["timezone"].(string); ok && tz != "" {
		loc, err := time.LoadLocation(tz)
		if err != nil || strings.EqualFold(tz, "local") {
			return nil, &Error{"timezone", fmt.Sprintf("%q is not an IANA time zone such as Europe/Berlin", tz)}
		}
		s.Location = loc
	}
	if strings.HasPrefix(s.Cron, "TZ=") || strings.HasPrefix(s.Cron, "CRON_TZ=") {
		return nil, &Error{"cron", "set the time zone in config.timezone, not in the expression"}
	}
	if d, ok := strings.CutPrefix(s.Cron, "@every "); ok {
		// The parser rounds shorter intervals up to a second: refuse them instead.
		if every, err := time.ParseDuration(strings.TrimSpace(d)); err == nil && every < MinEvery {
			return nil, &Error{"cron", fmt.Sprintf("@every must be at least %s", MinEvery)}
		}
	}
	sched, err := parser.Parse(s.Cron)
	if err != nil {
		return nil, &Error{"cron", fmt.Sprintf("%q: %v", s.Cron, err)}
	}
	s.sched = sched
	switch m := cfg["missed"].(type) {
	case nil:
	case string:
		if m != MissedSkip && m != MissedCatchUp {
			return nil, &Error{"missed", fmt.Sprintf("must be %q or %q, not %q", MissedSkip, MissedCatchUp, m)}
		}
		s.Missed = m
	default:
		return nil, &Error{"missed", "must be a string"}
	}
	switch n := cfg["maxCatchUp"].(type) {
	case nil:
	case float64:
		if n != float64(int(n)) || n < 1 || n > MaxCatchUp {
			return nil, &Error{"maxCatchUp", fmt.Sprintf("must be a whole number from 1 to %d", MaxCatchUp)}
		}
		s.MaxCatchUp = int(n)
	case int:
		if n < 1 || n > MaxCatchUp {
			return nil, &Error{"maxCatchUp", fmt.Sprintf("must be a whole number from 1 to %d", MaxCatchUp)}
		}
		s.MaxCatchUp = n
	default:
		return nil, &Error{"maxCatchUp", "must be a number"}
	}
	if in, ok := cfg["input"]; ok {
		raw, err := json.Marshal(in)
		if err != nil {
			return nil, &Error{"input", err.Error()}
		}
		s.Input = raw
	}
	return s, nil
}

// Next is the first tick strictly after t.
func (s *Spec) Next(t time.Time) time.Time {
	return s.sched.Next(t.In(s.Location)).UTC()
}

// Due returns the ticks to fire at now, given the last tick fired (zero: none yet, or the
// flow was just started): for skip, the latest tick due (at most one); for catchUp, every tick
// due after last, the latest MaxCatchUp of them. next is the first tick after now.
func (s *Spec) Due(last, now time.Time) (ticks []time.Time, next time.Time) {
	if last.IsZero() {
		return nil, s.Next(now) // a new schedule starts with the next tick, not a missed one
	}
	limit := 1
	if s.Missed == MissedCatchUp {
		limit = s.MaxCatchUp
	}
	// After a long outage, start the walk a little before the ticks that will fire, not at
	// last: a schedule of every second down for a month is not walked tick by tick.
	// (The window is generous: a cron's steps vary, e.g. over a weekend.)
	n1 := s.Next(now)
	if window := 4 * time.Duration(limit+1) * s.Next(n1).Sub(n1); window > 0 && now.Sub(last) > 2*window {
		last = now.Add(-window)
	}
	for t := s.Next(last); !t.After(now); t = s.Next(t) {
		ticks = append(ticks, t)
	}
	if len(ticks) > limit {
		ticks = ticks[len(ticks)-limit:]
	}
	return ticks, s.Next(now)
}
