package template

import (
	"fmt"
	"strconv"
	"strings"
)

// maxProblems bounds how many problems one ValidationError lists, so that a
// pathological document cannot produce an unbounded error body; the rest are
// counted in a final problem.
const maxProblems = 200

// ValidationError lists every problem found in a template (or, from
// ValidateContext, in a task context).
type ValidationError struct {
	Problems []Problem
}

// Problem is one thing wrong with a document.
type Problem struct {
	// Path locates the offending field: `namespace`,
	// `steps[2] (create_order).depends_on[1]`, `context.items[0].sku`.
	// Empty when the problem concerns the whole document.
	Path    string
	Message string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Error lists the problems one per line.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems collects Problems up to maxProblems.
type problems struct {
	list    []Problem
	dropped int
}

func (p *problems) add(path, format string, args ...any) {
	if len(p.list) >= maxProblems {
		p.dropped++
		return
	}
	p.list = append(p.list, newProblem(path, fmt.Sprintf(format, args...)))
}

// lineBreaks folds line breaks into spaces: Error lists one problem per
// line, and messages quote input (YAML tags, library errors) that may hold
// line breaks.
var lineBreaks = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")

func newProblem(path, msg string) Problem {
	return Problem{Path: lineBreaks.Replace(path), Message: lineBreaks.Replace(msg)}
}

func (p *problems) empty() bool { return len(p.list) == 0 }

// full reports whether further problems would only be counted, so that
// callers can skip the work of wording them.
func (p *problems) full() bool { return len(p.list) >= maxProblems }

// err returns nil when nothing was found, else a *ValidationError.
func (p *problems) err() error {
	if p.empty() {
		return nil
	}
	list := p.list
	if p.dropped > 0 {
		list = append(list, Problem{Message: fmt.Sprintf("... and %d more problems", p.dropped)})
	}
	return &ValidationError{Problems: list}
}

// stepPath names a step by index and, when it has one, by name:
// `steps[2] (create_order)`. A name that is not a valid step name is quoted
// and shortened, so that whatever it holds the path stays one readable line.
func stepPath(i int, name string) string {
	switch {
	case name == "":
		return fmt.Sprintf("steps[%d]", i)
	case nameRE.MatchString(name):
		return fmt.Sprintf("steps[%d] (%s)", i, name)
	default:
		return fmt.Sprintf("steps[%d] (%s)", i, quoteShort(name))
	}
}

// quoteShort quotes s for a message, cut to a readable length.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
