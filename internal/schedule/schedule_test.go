package schedule_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/schedule"
)

func mustParse(t *testing.T, cfg map[string]any) *schedule.Spec {
	t.Helper()
	s, err := schedule.Parse(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseRefusesWhatCannotFire(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg   map[string]any
		field string
	}{
		{map[string]any{}, "cron"},
		{map[string]any{"cron": "61 * * * *"}, "cron"},
		{map[string]any{"cron": "* * *"}, "cron"},
		{map[string]any{"cron": "@every 10ms"}, "cron"},
		{map[string]any{"cron": "@fortnightly"}, "cron"},
		{map[string]any{"cron": "TZ=Europe/Berlin 0 8 * * *"}, "cron"},
		{map[string]any{"cron": "0 8 * * *", "timezone": "Mars/Olympus"}, "timezone"},
		{map[string]any{"cron": "0 8 * * *", "timezone": "Local"}, "timezone"},
		{map[string]any{"cron": "0 8 * * *", "missed": "all"}, "missed"},
		{map[string]any{"cron": "0 8 * * *", "maxCatchUp": 0.5}, "maxCatchUp"},
	} {
		_, err := schedule.Parse(c.cfg)
		var se *schedule.Error
		if !errors.As(err, &se) || se.Field != c.field {
			t.Errorf("Parse(%v) = %v, want a problem with %s", c.cfg, err, c.field)
		}
	}
	for _, ok := range []string{"*/5 * * * *", "0 30 8 * * MON-FRI", "@hourly", "@every 1s", "@daily"} {
		if _, err := schedule.Parse(map[string]any{"cron": ok}); err != nil {
			t.Errorf("Parse(%q): %v", ok, err)
		}
	}
}

// Ticks are read in the schedule's time zone: 08:00 in Berlin is 07:00 UTC in winter and
// 06:00 UTC in summer.
func TestNextInTheTimeZone(t *testing.T) {
	t.Parallel()
	s := mustParse(t, map[string]any{"cron": "0 8 * * *", "timezone": "Europe/Berlin"})
	if got := s.Next(time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2026, 1, 11, 7, 0, 0, 0, time.UTC)) {
		t.Errorf("winter: %s", got)
	}
	if got := s.Next(time.Date(2026, 7, 10, 12, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2026, 7, 11, 6, 0, 0, 0, time.UTC)) {
		t.Errorf("summer: %s", got)
	}
}

// After downtime, skip fires the latest missed tick only; catchUp fires each, the latest
// maxCatchUp of them.
func TestDueAppliesTheMissedPolicy(t *testing.T) {
	t.Parallel()
	last := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	now := last.Add(10*time.Minute + 30*time.Second)
	skip := mustParse(t, map[string]any{"cron": "* * * * *"})
	ticks, next := skip.Due(last, now)
	if len(ticks) != 1 || !ticks[0].Equal(last.Add(10*time.Minute)) || !next.Equal(last.Add(11*time.Minute)) {
		t.Errorf("skip: %v, next %s", ticks, next)
	}
	catch := mustParse(t, map[string]any{"cron": "* * * * *", "missed": "catchUp", "maxCatchUp": 3})
	ticks, _ = catch.Due(last, now)
	if len(ticks) != 3 || !ticks[0].Equal(last.Add(8*time.Minute)) || !ticks[2].Equal(last.Add(10*time.Minute)) {
		t.Errorf("catchUp: %v", ticks)
	}
	if ticks, _ := catch.Due(last, last.Add(59*time.Second)); len(ticks) != 0 {
		t.Errorf("nothing due yet: %v", ticks)
	}
}

// A schedule of every second, down for a month, is not walked tick by tick, and still fires
// the latest ticks.
func TestDueAfterALongOutage(t *testing.T) {
	t.Parallel()
	s := mustParse(t, map[string]any{"cron": "* * * * * *", "missed": "catchUp", "maxCatchUp": 5})
	last := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	now := last.Add(30 * 24 * time.Hour)
	ticks, _ := s.Due(last, now)
	if len(ticks) != 5 || !ticks[4].Equal(now) || !ticks[0].Equal(now.Add(-4*time.Second)) {
		t.Errorf("ticks %v", ticks)
	}
}
