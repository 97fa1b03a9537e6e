package problem

import "testing"

func TestPointer(t *testing.T) {
	for _, tc := range []struct {
		tokens []string
		want   string
	}{
		{nil, ""},
		{[]string{""}, "/"},
		{[]string{"a", "0"}, "/a/0"},
		{[]string{"a/b", "m~n"}, "/a~1b/m~0n"},
		{[]string{"~1"}, "/~01"},
	} {
		if got := Pointer(tc.tokens...); got != tc.want {
			t.Errorf("Pointer(%q) = %q, want %q", tc.tokens, got, tc.want)
		}
	}
}

func TestWithin(t *testing.T) {
	cases := []struct {
		p     string
		roots []string
		want  bool
	}{
		{"/source", []string{"/source"}, true},
		{"/opts/a/0", []string{"/source", "/opts"}, true},
		{"/sourceMap", []string{"/source"}, false}, // a sibling sharing the prefix
		{"/source", []string{"/source/x"}, false},
		{"/anything", []string{""}, true},
		{"", []string{""}, true},
		{"/a", nil, false},
	}
	for _, c := range cases {
		if got := Within(c.p, c.roots...); got != c.want {
			t.Errorf("Within(%q, %q) = %v, want %v", c.p, c.roots, got, c.want)
		}
	}
}
