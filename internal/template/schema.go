package template

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"go.yaml.in/yaml/v3"
)

// Limits on a context schema, which is arbitrary JSON: nesting and size far
// beyond any real schema, low enough that compiling one stays cheap.
const (
	maxSchemaDepth = 64
	maxSchemaNodes = 100_000
)

// schemaURL is the name the context schema is compiled under. Nothing is
// ever fetched from it: see refuseLoader.
const schemaURL = "urn:tasker:context_schema"

// schemaFromNode turns the context_schema node into canonical JSON (compact,
// keys sorted, numbers in one spelling), so that the stored template and
// its hash do not depend on how the schema was written. A nil or null node
// means no schema.
func schemaFromNode(n *yaml.Node) (json.RawMessage, error) {
	if n == nil || isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, problemError("context_schema", fmt.Sprintf("line %d: a JSON Schema must be a mapping, got %s", n.Line, describe(n)))
	}
	var p problems
	prepareSchemaNode(n, "context_schema", map[*yaml.Node]bool{}, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, problemError("context_schema", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	v, err := canonicalValue(v, 0, new(int))
	if err != nil {
		return nil, problemError("context_schema", err.Error())
	}
	return json.Marshal(v)
}

// prepareSchemaNode makes plain scalars that YAML would read as timestamps
// (`2024-01-31`) strings, as JSON has no timestamps, prepares numbers (see
// prepareSchemaNumber) and reports duplicate keys in the words the checker
// uses. path names n (`context_schema.properties.n`); seen keeps aliased
// nodes from being walked more than once.
func prepareSchemaNode(n *yaml.Node, path string, seen map[*yaml.Node]bool, p *problems) {
	if n == nil || seen[n] {
		return
	}
	seen[n] = true
	switch n.Kind {
	case yaml.ScalarNode:
		stringifyTimestamp(n)
		prepareSchemaNumber(n, path, p)
	case yaml.MappingNode:
		lines := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				prepareSchemaNode(k, path, seen, p) // refused as a key later
				prepareSchemaNode(v, path, seen, p)
				continue
			}
			stringifyTimestamp(k)
			if k.ShortTag() == "!!merge" {
				prepareSchemaNode(v, path, seen, p) // merged into this mapping
				continue
			}
			if first, dup := lines[k.Value]; dup {
				p.add("context_schema", "line %d: duplicate key %s (first at line %d)", k.Line, quoteShort(k.Value), first)
			}
			lines[k.Value] = k.Line
			prepareSchemaNode(v, path+pathKey(k.Value), seen, p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			prepareSchemaNode(c, fmt.Sprintf("%s[%d]", path, i), seen, p)
		}
	case yaml.AliasNode:
		prepareSchemaNode(n.Alias, path, seen, p)
	}
}

func stringifyTimestamp(n *yaml.Node) {
	if n.Style&yaml.TaggedStyle == 0 && n.ShortTag() == "!!timestamp" {
		n.Tag = "!!str"
	}
}

// prepareSchemaNumber makes a number read the same whether the schema came
// as JSON or as YAML, and refuses one a float64 cannot hold. YAML reads an
// integer too large for 64 bits as a float, and a float too large as a
// string; given the tags JSON input carries, the decoder would instead give
// up on either without saying where.
func prepareSchemaNumber(n *yaml.Node, path string, p *problems) {
	if !numberSpelling(n) {
		return
	}
	v := strings.ReplaceAll(n.Value, "_", "")
	if !yamlFloatRE.MatchString(v) {
		return // hexadecimal, octal, .inf, .nan: as YAML reads them
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		p.add(path, "line %d: number %s is out of range: a context schema's numbers must lie within about ±1.8e308", n.Line, shortNumber(n.Value))
		return
	}
	if n.ShortTag() == "!!int" {
		_, errInt := strconv.ParseInt(v, 10, 64)
		_, errUint := strconv.ParseUint(v, 10, 64)
		if errInt != nil && errUint != nil {
			n.Tag, n.Value = "!!float", strconv.FormatFloat(f, 'g', -1, 64)
		}
	}
}

// errSchemaTooDeep and errSchemaTooLarge concern the whole schema: they
// are not prefixed with where the walk stopped (64 levels of "[0]: ").
var (
	errSchemaTooDeep  = fmt.Errorf("nested more than %d levels deep", maxSchemaDepth)
	errSchemaTooLarge = fmt.Errorf("more than %d values", maxSchemaNodes)
)

// canonicalValue turns a decoded YAML or JSON value into one json.Marshal
// encodes canonically. count bounds the total size, aliases included. Other
// errors than the two above are prefixed with the key or index they concern.
func canonicalValue(v any, depth int, count *int) (any, error) {
	if depth > maxSchemaDepth {
		return nil, errSchemaTooDeep
	}
	if *count++; *count > maxSchemaNodes {
		return nil, errSchemaTooLarge
	}
	switch x := v.(type) {
	case nil, bool, string:
		return x, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := canonicalValue(e, depth+1, count)
			if err != nil {
				return nil, wrapSchemaError(k, err)
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		// YAML gives this type when some key is not a string (`200:`).
		m := make(map[string]any, len(x))
		for k, e := range x {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("key %v is not a string (quote it)", k)
			}
			m[ks] = e
		}
		return canonicalValue(m, depth, count)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := canonicalValue(e, depth+1, count)
			if err != nil {
				return nil, wrapSchemaError(fmt.Sprintf("[%d]", i), err)
			}
			out[i] = c
		}
		return out, nil
	case int:
		return json.Number(strconv.Itoa(x)), nil
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(x, 10)), nil
	case float64:
		return canonicalFloat(x)
	case json.Number:
		return canonicalNumber(x)
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	}
	return nil, fmt.Errorf("unsupported value %T", v)
}

func wrapSchemaError(where string, err error) error {
	if errors.Is(err, errSchemaTooDeep) || errors.Is(err, errSchemaTooLarge) {
		return err
	}
	return fmt.Errorf("%s: %w", where, err)
}

var jsonNumberRE = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// canonicalNumber keeps integers exactly (whatever their size) and writes
// other numbers the way json.Marshal writes a float64.
func canonicalNumber(n json.Number) (any, error) {
	s := string(n)
	if jsonIntRE.MatchString(s) {
		if s == "-0" {
			s = "0"
		}
		return json.Number(s), nil
	}
	if !jsonNumberRE.MatchString(s) {
		return nil, fmt.Errorf("invalid number %s", quoteShort(s))
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("number %s is out of range", quoteShort(s))
	}
	return canonicalFloat(f)
}

func canonicalFloat(f float64) (any, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%v is not a JSON number", f)
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	if string(b) == "-0" {
		return json.Number("0"), nil
	}
	// json.Marshal's spelling is a fixed point: reading it back as a
	// float64 and writing it again gives the same text.
	return json.Number(b), nil
}

// canonicalSchema re-encodes schema JSON canonically.
func canonicalSchema(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("context_schema: %w", err)
	}
	v, err = canonicalValue(v, 0, new(int))
	if err != nil {
		return nil, fmt.Errorf("context_schema: %w", err)
	}
	return json.Marshal(v)
}

func problemError(path, msg string) error {
	return &ValidationError{Problems: []Problem{newProblem(path, msg)}}
}

// refuseLoader keeps $ref from reaching files or the network: a template
// registered through the API must not make the orchestrator read its own
// disk. The draft meta-schemas are built into the library and still resolve.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("external $ref %q is not allowed; keep the schema self-contained (use $defs)", url)
}

// compileSchema compiles a context schema (draft 2020-12 unless it says
// otherwise with $schema).
func compileSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, err
	}
	return c.Compile(schemaURL)
}

// schemaTypeProblem says why a schema's top-level "type" does not describe
// an object, or returns "" when it does (or has no type).
func schemaTypeProblem(raw json.RawMessage) string {
	var top map[string]any
	if err := json.Unmarshal(raw, &top); err != nil {
		return "a JSON Schema must be an object"
	}
	switch typ := top["type"].(type) {
	case nil:
		return ""
	case string:
		if typ == "object" {
			return ""
		}
		return fmt.Sprintf("the task context is a JSON object, but the schema's type is %q", typ)
	case []any:
		if slices.Contains(typ, any("object")) {
			return ""
		}
		return fmt.Sprintf("the task context is a JSON object, but the schema's type %v does not include \"object\"", typ)
	}
	return "" // a malformed type is the compiler's to report
}

// compiledSchema returns the compiled ContextSchema, compiling it once per
// distinct schema and template (see schemaCache).
func (t *Template) compiledSchema() (*jsonschema.Schema, error) {
	c := t.cache
	if c == nil {
		return compileSchema(t.ContextSchema)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if (c.schema == nil && c.err == nil) || !bytes.Equal(c.src, t.ContextSchema) {
		c.src = bytes.Clone(t.ContextSchema)
		c.schema, c.err = compileSchema(t.ContextSchema)
	}
	return c.schema, c.err
}

// ValidateContext checks a task context: it must be a JSON object and
// satisfy ContextSchema, if the template has one. A bad context gives a
// *ValidationError whose problems name the failing fields
// (`context.items[0].sku: missing property`).
func (t *Template) ValidateContext(ctx json.RawMessage) error {
	// Without a schema, a valid JSON text that opens with '{' is all there
	// is to check, and decoding it into a tree of maps only to look at its
	// kind cost in proportion to the context, for every task. Anything else
	// takes the decoding path below, which words the error.
	if len(t.ContextSchema) == 0 && json.Valid(ctx) {
		if trimmed := bytes.TrimLeft(ctx, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' {
			return nil
		}
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(ctx))
	if err != nil {
		return problemError("context", fmt.Sprintf("invalid JSON: %v", err))
	}
	if _, ok := v.(map[string]any); !ok {
		return problemError("context", fmt.Sprintf("must be a JSON object, got %s", jsonKind(v)))
	}
	if len(t.ContextSchema) == 0 {
		return nil
	}
	sch, err := t.compiledSchema()
	if err != nil {
		return fmt.Errorf("template %s: compile context_schema: %w", t.Key(), err)
	}
	err = sch.Validate(v)
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		return contextProblems("context", ve, v)
	}
	return err
}

// schemaProblems words a compile error. A schema the draft's meta-schema
// rejects gets one problem per failure, at the failing keyword's path
// (`context_schema.properties.n.type`); anything else (a bad regex, a $ref
// that does not resolve) one problem for the whole schema.
func schemaProblems(raw json.RawMessage, err error) []Problem {
	var sve *jsonschema.SchemaValidationError
	var ve *jsonschema.ValidationError
	if errors.As(err, &sve) && errors.As(sve.Err, &ve) {
		if doc, derr := jsonschema.UnmarshalJSON(bytes.NewReader(raw)); derr == nil {
			var out *ValidationError
			if errors.As(contextProblems("context_schema", ve, doc), &out) {
				for i := range out.Problems {
					out.Problems[i].Message = "invalid schema: " + out.Problems[i].Message
				}
				return out.Problems
			}
		}
	}
	msg := strings.ReplaceAll(err.Error(), schemaURL, "context_schema")
	return []Problem{newProblem("context_schema", "does not compile: "+oneLine(msg))}
}

// oneLine folds a multi-line message onto one line: a problem is one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// contextProblems turns the schema validator's error tree into one problem
// per failed leaf, with the instance location spelt as a path from root.
func contextProblems(root string, ve *jsonschema.ValidationError, instance any) error {
	var p problems
	seen := map[Problem]bool{}
	for _, leaf := range leaves(ve, nil) {
		path := instancePath(root, instance, leaf.InstanceLocation)
		for _, pr := range leafProblems(path, leaf) {
			if !seen[pr] {
				seen[pr] = true
				p.list = append(p.list, pr)
			}
		}
	}
	slices.SortStableFunc(p.list, func(a, b Problem) int { return strings.Compare(a.Path, b.Path) })
	if len(p.list) > maxProblems {
		p.dropped, p.list = len(p.list)-maxProblems, p.list[:maxProblems]
	}
	if p.empty() {
		return problemError(root, oneLine(ve.Error()))
	}
	return p.err()
}

func leaves(e *jsonschema.ValidationError, out []*jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(e.Causes) == 0 {
		return append(out, e)
	}
	for _, c := range e.Causes {
		out = leaves(c, out)
	}
	return out
}

// leafProblems words one failure; a missing property is reported at the
// property's own path, which is where a user looks for it.
func leafProblems(path string, e *jsonschema.ValidationError) []Problem {
	if req, ok := e.ErrorKind.(*kind.Required); ok {
		out := make([]Problem, len(req.Missing))
		for i, name := range req.Missing {
			out[i] = newProblem(path+pathKey(name), "missing property")
		}
		return out
	}
	return []Problem{newProblem(path, kindMessage(e.ErrorKind))}
}

// kindMessage words a failure the way the library does, without importing
// its message printer: the basic output of a lone error carries the text.
func kindMessage(k jsonschema.ErrorKind) string {
	out := (&jsonschema.ValidationError{ErrorKind: k}).BasicOutput()
	if out.Error == nil {
		return "invalid"
	}
	return out.Error.String()
}

// instancePath spells a JSON pointer's tokens as `context.items[0].sku`,
// looking at the instance to tell array indexes from object keys.
func instancePath(root string, instance any, tokens []string) string {
	var sb strings.Builder
	sb.WriteString(root)
	cur := instance
	for _, tok := range tokens {
		switch x := cur.(type) {
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				sb.WriteString(pathKey(tok))
				cur = nil
				continue
			}
			fmt.Fprintf(&sb, "[%d]", i)
			cur = x[i]
		case map[string]any:
			sb.WriteString(pathKey(tok))
			cur = x[tok]
		default:
			sb.WriteString(pathKey(tok))
			cur = nil
		}
	}
	return sb.String()
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// pathKey writes an object key as `.key`, or `["odd key"]` when it is not
// a plain identifier.
func pathKey(k string) string {
	if identRE.MatchString(k) {
		return "." + k
	}
	return "[" + strconv.Quote(k) + "]"
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return "a number"
	}
}
