// Package expression compiles and evaluates the expressions flows use in edge conditions,
// control nodes and `{{ ... }}` templates in node config. Expressions are expr-lang programs
// evaluated against a fixed set of top-level names, so a typo is a compile error when the flow
// is saved rather than a silent nil when it runs.
package expression

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
)

// Limits on what a flow author may submit; flows come from strangers over HTTP.
const (
	MaxSourceLen = 4096 // characters per expression
	MaxNodes     = 1000 // AST nodes per expression
)

// Top-level names an expression may use.
const (
	KeyInput     = "input"
	KeySteps     = "steps"
	KeyFlow      = "flow"
	KeySettings  = "settings"
	KeyExecution = "execution"
)

var topLevel = []string{KeyInput, KeySteps, KeyFlow, KeySettings, KeyExecution}

// Env is what an expression sees. Missing top-level keys are treated as empty maps.
type Env map[string]any

// checkEnv declares the names for the type checker. input is `any` because a webhook body may
// be an array or a scalar; the others are always objects.
var checkEnv = func() types.Map {
	obj := types.TypeOf(map[string]any{})
	return types.Map{
		KeyInput:     types.Any,
		KeySteps:     obj,
		KeyFlow:      obj,
		KeySettings:  obj,
		KeyExecution: obj,
	}
}()

// Program is a compiled expression, safe for concurrent use.
type Program struct {
	src     string
	prog    *vm.Program
	boolean bool
}

// Source returns the expression text.
func (p *Program) Source() string { return p.src }

// Compile compiles an expression whose result may be any value.
func Compile(src string) (*Program, error) {
	return compile(src, false)
}

// CompileCondition compiles an expression that must yield a bool; a result that is statically
// not a bool is a compile error, one that is dynamically not a bool is an Eval error.
func CompileCondition(src string) (*Program, error) {
	return compile(src, true)
}

func compile(src string, boolean bool) (p *Program, err error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("expression is empty")
	}
	if n := utf8.RuneCountInString(src); n > MaxSourceLen {
		return nil, fmt.Errorf("expression is %d characters long, the limit is %d", n, MaxSourceLen)
	}
	opts := []expr.Option{expr.Env(checkEnv), expr.MaxNodes(MaxNodes)}
	if boolean {
		opts = append(opts, expr.AsBool())
	}
	// The optimizer folds constants at compile time; never let a bug there take the caller down.
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("expression cannot be compiled: %v", r)
		}
	}()
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, tidy(err)
	}
	return &Program{src: src, prog: prog, boolean: boolean}, nil
}

// tidy turns expr's multi-line error (with a source snippet) into one line with a position,
// which is what fits in a problem message.
func tidy(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return &Error{Message: fe.Message, Line: fe.Line, Column: fe.Column + 1, offset: fe.From}
	}
	return err
}

// Error is a compile or run-time error with a 1-based position in the expression source.
type Error struct {
	Message string
	Line    int
	Column  int
	offset  int // runes from the start of the source, for templates to re-base the position
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d, column %d)", e.Message, e.Line, e.Column)
	}
	return e.Message
}

// Eval runs the program against env.
func (p *Program) Eval(env Env) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("expression %q failed: %v", p.src, r)
		}
	}()
	out, err = expr.Run(p.prog, normalize(env))
	if err != nil {
		return nil, tidy(err)
	}
	return out, nil
}

// EvalBool runs the program and requires a bool result.
func (p *Program) EvalBool(env Env) (bool, error) {
	v, err := p.Eval(env)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("condition %q yielded %T, not a bool", p.src, v)
	}
	return b, nil
}

// normalize fills in missing top-level names with empty maps so `steps.x ?? 1` works before any
// step has run, and hands the vm a plain map (it does not accept named map types).
func normalize(env Env) map[string]any {
	complete := true
	for _, k := range topLevel {
		if _, ok := env[k]; !ok {
			complete = false
			break
		}
	}
	if complete {
		return map[string]any(env)
	}
	m := make(map[string]any, len(env)+len(topLevel))
	for k, v := range env {
		m[k] = v
	}
	for _, k := range topLevel {
		if _, ok := m[k]; !ok {
			m[k] = map[string]any{}
		}
	}
	return m
}
