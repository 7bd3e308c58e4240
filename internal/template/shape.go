package template

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tasker/tasker/internal/suggest"
)

// The strict pre-check. Before decoding, the document tree (YAML, or JSON
// turned into the same node tree) is walked against a description of the
// format, so that an unknown key, a duplicated key or a value of the wrong
// type is reported with its path and line, all of them at once, rather than
// as the decoder's first complaint in terms of Go types.

type valueKind int

const (
	kindString  valueKind = iota
	kindInt               // fits in an int
	kindBool              // true or false, never yes/no
	kindStrings           // a list of strings
	kindMap               // a mapping with the fields listed
	kindList              // a list of elem
	kindSchema            // any value; converted and checked in schema.go
)

type shape struct {
	kind   valueKind
	fields []field // kindMap
	elem   *shape  // kindList
	// limits says which whole numbers a kindInt field takes, in Validate's
	// words: the checker gives it for a number too large for an int, which
	// Validate never sees.
	limits string
}

type field struct {
	key   string
	shape *shape
}

var (
	stringShape  = &shape{kind: kindString}
	boolShape    = &shape{kind: kindBool}
	stringsShape = &shape{kind: kindStrings}

	backoffShape = &shape{kind: kindMap, fields: []field{
		{"base_ms", &shape{kind: kindInt, limits: baseMsLimits}},
		{"cap_ms", &shape{kind: kindInt, limits: capMsLimits}},
	}}
	retryShape = &shape{kind: kindMap, fields: []field{
		{"max_attempts", &shape{kind: kindInt, limits: maxAttemptsLimits}},
		{"retryable", boolShape},
		{"backoff", backoffShape},
	}}
	eventShape = &shape{kind: kindMap, fields: []field{
		{"name", stringShape},
		{"on", stringShape},
	}}
	stepShape = &shape{kind: kindMap, fields: []field{
		{"name", stringShape},
		{"handler", stringShape},
		{"description", stringShape},
		{"depends_on", stringsShape},
		{"timeout_seconds", &shape{kind: kindInt, limits: timeoutLimits}},
		{"retry", retryShape},
		{"events", &shape{kind: kindList, elem: eventShape}},
	}}
	templateShape = &shape{kind: kindMap, fields: []field{
		{"namespace", stringShape},
		{"name", stringShape},
		{"version", stringShape},
		{"description", stringShape},
		{"failure_policy", stringShape},
		{"stale_after_seconds", &shape{kind: kindInt, limits: staleAfterLimits}},
		{"context_schema", &shape{kind: kindSchema}},
		{"domain_events", stringsShape},
		{"steps", &shape{kind: kindList, elem: stepShape}},
	}}
)

func (s *shape) field(key string) (*shape, bool) {
	for _, f := range s.fields {
		if f.key == key {
			return f.shape, true
		}
	}
	return nil, false
}

func (s *shape) keys() []string {
	keys := make([]string, len(s.fields))
	for i, f := range s.fields {
		keys[i] = f.key
	}
	return keys
}

// checker walks a document against templateShape.
type checker struct {
	// jsonInput makes string fields accept only strings. YAML input also
	// takes a plain number as a string (`version: 1.0` means "1.0"), which
	// is what a YAML author expects.
	jsonInput bool
	probs     problems
	// schema is the context_schema value node, if the document has one.
	schema *yaml.Node
	// unstorable maps the string nodes of JSON input that held text
	// Postgres cannot store (invalid UTF-8, an unpaired surrogate escape),
	// which encoding/json replaced with U+FFFD, to why. YAML input never
	// gets that far: its parser refuses such text.
	unstorable map[*yaml.Node]error
	// unknownKeys counts the problems that are unknown keys: a document
	// whose only problems they are decodes fine (the keys are ignored), so
	// its settings can be validated too and every problem reported at once.
	unknownKeys int
}

// checkDocument checks root, the document's top node.
func (c *checker) checkDocument(root *yaml.Node) {
	n := resolve(root)
	if n == nil || isNull(n) {
		c.probs.add("", "the document is empty")
		return
	}
	if n.Kind != yaml.MappingNode {
		c.probs.add("", "line %d: a template must be a mapping, got %s", n.Line, describe(n))
		return
	}
	c.check(n, templateShape, "")
}

func (c *checker) check(n *yaml.Node, s *shape, path string) {
	n = resolve(n)
	if isNull(n) {
		// null is the same as leaving the key out.
		return
	}
	if err := c.unstorable[n]; err != nil {
		c.probs.add(path, "%v", err)
		return
	}
	switch s.kind {
	case kindMap:
		if n.Kind != yaml.MappingNode {
			c.wrongType(n, path, "a mapping")
			return
		}
		c.checkMap(n, s, path, map[string]int{})
	case kindList:
		if n.Kind != yaml.SequenceNode {
			c.wrongType(n, path, "a list")
			return
		}
		for i, item := range n.Content {
			c.check(item, s.elem, itemPath(path, i, item, s.elem))
		}
	case kindStrings:
		if n.Kind != yaml.SequenceNode {
			c.wrongType(n, path, "a list of strings")
			return
		}
		for i, item := range n.Content {
			item, itemPath := resolve(item), fmt.Sprintf("%s[%d]", path, i)
			if err := c.unstorable[item]; err != nil {
				c.probs.add(itemPath, "%v", err)
				continue
			}
			c.checkString(item, itemPath)
		}
	case kindString:
		c.checkString(n, path)
	case kindInt:
		c.checkInt(n, s, path)
	case kindBool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			c.wrongType(n, path, "true or false")
		}
	case kindSchema:
		c.schema = n
		c.checkSchemaText(n)
	}
}

// checkSchemaText refuses the strings in a context schema that held text
// Postgres cannot store, at the path its other problems of stored text
// have.
func (c *checker) checkSchemaText(n *yaml.Node) {
	if len(c.unstorable) == 0 {
		return
	}
	if err := c.unstorable[n]; err != nil {
		c.probs.add("context_schema", "line %d: %v", n.Line, err)
	}
	for _, child := range n.Content {
		c.checkSchemaText(child) // JSON input: no aliases, no cycles
	}
}

// checkMap checks a mapping's keys against s. seen maps each key written
// directly in this mapping to its line, to catch duplicates; keys brought in
// by a YAML merge (<<: *anchor) may be overridden and so are not duplicates.
func (c *checker) checkMap(n *yaml.Node, s *shape, path string, seen map[string]int) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			c.probs.add(path, "line %d: a key must be a string, got %s", k.Line, describe(k))
			continue
		}
		if err := c.unstorable[k]; err != nil {
			c.probs.add(path, "line %d: a key %v", k.Line, err)
			continue
		}
		if k.ShortTag() == "!!merge" {
			c.checkMerge(v, s, path)
			continue
		}
		fs, ok := s.field(k.Value)
		if !ok {
			c.unknownKey(k, s, path)
			continue
		}
		if seen != nil {
			if first, dup := seen[k.Value]; dup {
				c.probs.add(join(path, k.Value), "line %d: duplicate key (first at line %d)", k.Line, first)
				continue
			}
			seen[k.Value] = k.Line
		}
		c.check(v, fs, join(path, k.Value))
	}
}

// checkMerge checks the mapping(s) a YAML merge key brings in.
func (c *checker) checkMerge(v *yaml.Node, s *shape, path string) {
	v = resolve(v)
	switch v.Kind {
	case yaml.MappingNode:
		c.checkMap(v, s, path, nil)
	case yaml.SequenceNode:
		for _, m := range v.Content {
			if m = resolve(m); m.Kind == yaml.MappingNode {
				c.checkMap(m, s, path, nil)
			} else {
				c.probs.add(path, "line %d: a merge (<<) takes mappings, got %s", m.Line, describe(m))
			}
		}
	default:
		c.probs.add(path, "line %d: a merge (<<) takes a mapping, got %s", v.Line, describe(v))
	}
}

func (c *checker) unknownKey(k *yaml.Node, s *shape, path string) {
	msg := fmt.Sprintf("line %d: unknown key %s", k.Line, quoteShort(k.Value))
	if guess, ok := suggest.Closest(k.Value, s.keys()); ok {
		msg += fmt.Sprintf(" (did you mean %q?)", guess)
	}
	c.probs.add(path, "%s; known keys: %s", msg, strings.Join(s.keys(), ", "))
	c.unknownKeys++
}

func (c *checker) checkString(n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!str":
			return
		case "!!int", "!!float":
			if !c.jsonInput {
				return
			}
		}
	}
	c.wrongType(n, path, "a string")
}

func (c *checker) checkInt(n *yaml.Node, s *shape, path string) {
	// An integer too large for an int is out of the field's range, whatever
	// YAML makes of it (a float, or a string past a float's range) and
	// however the decoder would word its refusal.
	if isInt, fits := integerLiteral(n); isInt && !fits {
		c.probs.add(path, "line %d: %s, got %s", n.Line, s.limits, shortNumber(n.Value))
		return
	}
	var v int
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		c.wrongType(n, path, "an integer")
	}
}

// integerLiteral reports whether a scalar is written as an integer, of any
// size (a JSON integer, or a plain YAML one: `30`, `-7`, `0x1e`, `1_000`;
// not a quoted string), and whether that integer fits an int.
func integerLiteral(n *yaml.Node) (isInt, fits bool) {
	if !numberSpelling(n) {
		return false, false
	}
	v := strings.ReplaceAll(n.Value, "_", "")
	if !yamlIntRE.MatchString(v) {
		return false, false
	}
	_, err := strconv.ParseInt(v, 0, strconv.IntSize)
	switch {
	case err == nil:
		return true, true
	case errors.Is(err, strconv.ErrRange):
		return true, false
	}
	return false, false // `09`: not octal; YAML reads it as a float
}

// numberSpelling reports whether a scalar is written as a number: a JSON
// number, a plain YAML scalar YAML reads as one, or one YAML would read as
// one but for its size (`1e400` is then a string).
func numberSpelling(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return true
	case "!!str":
		const notPlain = yaml.TaggedStyle | yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle
		if n.Style&notPlain != 0 {
			return false
		}
		v := strings.ReplaceAll(n.Value, "_", "")
		return yamlIntRE.MatchString(v) || yamlFloatRE.MatchString(v)
	}
	return false
}

// How YAML spells an integer (underscores removed) and a decimal float (its
// resolver's own pattern). Both cover JSON's numbers.
var (
	yamlIntRE   = regexp.MustCompile(`^[-+]?([0-9]+|0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+)$`)
	yamlFloatRE = regexp.MustCompile(`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)
)

// shortNumber is a number as written, cut to a readable length.
func shortNumber(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return fmt.Sprintf("%s... (%d characters)", s[:max], len(s))
}

func (c *checker) wrongType(n *yaml.Node, path, want string) {
	hint := ""
	if want == "a string" && n.Kind == yaml.ScalarNode {
		hint = " (quote it)"
	}
	c.probs.add(path, "line %d: expected %s, got %s%s", n.Line, want, describe(n), hint)
}

// resolve follows aliases and unwraps a document node.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil {
		switch {
		case n.Kind == yaml.AliasNode && n.Alias != nil:
			n = n.Alias
		case n.Kind == yaml.DocumentNode && len(n.Content) == 1:
			n = n.Content[0]
		default:
			return n
		}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's type for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			if numberSpelling(n) {
				return "a number " + quoteShort(n.Value)
			}
			return "a string " + quoteShort(n.Value)
		case "!!int":
			return "an integer " + quoteShort(n.Value)
		case "!!float":
			return "a number " + quoteShort(n.Value)
		case "!!bool":
			return n.Value
		case "!!null":
			return "null"
		default:
			return "a value tagged " + quoteShort(n.ShortTag())
		}
	}
	return "an unexpected node"
}

// join appends a key to a path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// itemPath names list item i; steps also by their name, when written.
func itemPath(path string, i int, item *yaml.Node, elem *shape) string {
	if elem != stepShape {
		return fmt.Sprintf("%s[%d]", path, i)
	}
	name := ""
	if m := resolve(item); m.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(m.Content); j += 2 {
			k, v := resolve(m.Content[j]), resolve(m.Content[j+1])
			if k.Value == "name" && v.Kind == yaml.ScalarNode {
				name = v.Value
			}
		}
	}
	return stepPath(i, name)
}
