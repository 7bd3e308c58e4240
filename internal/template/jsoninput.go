package template

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/tasker/tasker/internal/pgtext"
)

// JSON input is turned into the same node tree YAML gives, with lines, so
// that both formats go through one checker, one decoder and one set of
// messages. Building the tree token by token is also what lets a duplicate
// key be refused: encoding/json would silently keep the last one. It would
// also silently replace invalid UTF-8 and unpaired surrogate escapes
// (\ud800) in a string with U+FFFD, where YAML refuses them: such strings
// are noted, for the checker to refuse with their path.

// maxJSONDepth bounds nesting; far deeper than any template needs.
const maxJSONDepth = 200

var jsonIntRE = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

type jsonReader struct {
	data  []byte
	dec   *json.Decoder
	lines []int // offsets of '\n'
	// unstorable maps the string nodes (keys and values) whose text is not
	// what the document holds, to why: see checker.unstorable.
	unstorable map[*yaml.Node]error
}

func parseJSON(data []byte) (*yaml.Node, map[*yaml.Node]error, error) {
	if err := checkSize(data); err != nil {
		return nil, nil, err
	}
	if len(bytes.Trim(data, " \t\r\n")) == 0 {
		return nil, nil, documentError("the document is empty") // as from YAML
	}
	r := &jsonReader{data: data, dec: json.NewDecoder(bytes.NewReader(data)), unstorable: map[*yaml.Node]error{}}
	r.dec.UseNumber()
	for i, b := range data {
		if b == '\n' {
			r.lines = append(r.lines, i)
		}
	}
	n, err := r.value(0)
	if err != nil {
		return nil, nil, err
	}
	if _, err := r.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, documentError(fmt.Sprintf("line %d: unexpected data after the JSON document", r.line(r.next())))
	}
	return &yaml.Node{Kind: yaml.DocumentNode, Line: n.Line, Content: []*yaml.Node{n}}, r.unstorable, nil
}

// value reads one JSON value.
func (r *jsonReader) value(depth int) (*yaml.Node, error) {
	if depth > maxJSONDepth {
		return nil, documentError(fmt.Sprintf("line %d: nested more than %d levels deep", r.line(r.next()), maxJSONDepth))
	}
	start := r.next()
	line := r.line(start)
	tok, err := r.dec.Token()
	if err != nil {
		return nil, r.syntaxError(err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return r.object(line, depth)
		case '[':
			return r.array(line, depth)
		}
		return nil, documentError(fmt.Sprintf("line %d: unexpected %q", line, t))
	case string:
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t, Style: yaml.DoubleQuotedStyle, Line: line}
		r.noteUnstorable(n, start)
		return n, nil
	case json.Number:
		tag := "!!float"
		if jsonIntRE.MatchString(string(t)) {
			tag = "!!int"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t), Line: line}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(t), Line: line}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null", Line: line}, nil
	}
	return nil, documentError(fmt.Sprintf("line %d: unexpected token %v", line, tok))
}

func (r *jsonReader) object(line, depth int) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
	for r.dec.More() {
		keyStart := r.next()
		tok, err := r.dec.Token()
		if err != nil {
			return nil, r.syntaxError(err)
		}
		key, _ := tok.(string) // the decoder only returns strings here
		k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key, Style: yaml.DoubleQuotedStyle, Line: r.line(keyStart)}
		r.noteUnstorable(k, keyStart)
		v, err := r.value(depth + 1)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, k, v)
	}
	return n, r.closing()
}

func (r *jsonReader) array(line, depth int) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: line}
	for r.dec.More() {
		v, err := r.value(depth + 1)
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, v)
	}
	return n, r.closing()
}

// noteUnstorable records string node n, just read from the token at offset
// start, if the decoder replaced invalid UTF-8 or an unpaired surrogate
// escape in it with U+FFFD. A NUL character comes through as it is and is
// refused wherever it is, as from YAML (by Validate, or by the patterns and
// lists a field's value must match), so a string whose first problem is a
// \u0000 is refused for that.
func (r *jsonReader) noteUnstorable(n *yaml.Node, start int) {
	if !strings.ContainsRune(n.Value, utf8.RuneError) {
		return // nothing was replaced
	}
	_, err := pgtext.FindJSONProblem(r.data[start:r.dec.InputOffset()])
	if errors.Is(err, pgtext.ErrInvalidUTF8) || errors.Is(err, pgtext.ErrSurrogate) {
		r.unstorable[n] = err
	}
}

// closing reads the '}' or ']' that ends a value.
func (r *jsonReader) closing() error {
	if _, err := r.dec.Token(); err != nil {
		return r.syntaxError(err)
	}
	return nil
}

func (r *jsonReader) syntaxError(err error) error {
	off := r.next()
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = int(se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return documentError(fmt.Sprintf("line %d: the JSON document ends early", r.line(len(r.data))))
	}
	return documentError(fmt.Sprintf("line %d: invalid JSON: %v", r.line(off), err))
}

// next is the offset where the next token starts: past the decoder's
// position, whitespace and the separators it has not consumed yet.
func (r *jsonReader) next() int {
	off := int(r.dec.InputOffset())
	for off < len(r.data) {
		switch r.data[off] {
		case ' ', '\t', '\r', '\n', ',', ':':
			off++
		default:
			return off
		}
	}
	return off
}

// line is the 1-based line of offset off.
func (r *jsonReader) line(off int) int {
	return sort.SearchInts(r.lines, off) + 1
}
