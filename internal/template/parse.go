package template

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse reads a template written in YAML, applies the defaults and validates
// it. Content errors (syntax, unknown keys, wrong types, invalid settings)
// come back as a *ValidationError listing all of them.
func Parse(data []byte) (*Template, error) {
	root, err := parseYAML(data)
	if err != nil {
		return nil, err
	}
	return fromNode(root, checker{})
}

// ParseJSON reads the same document written as JSON (as the REST API takes
// it, and as JSON writes it), with the same strictness: duplicate and
// unknown keys are refused.
func ParseJSON(data []byte) (*Template, error) {
	root, unstorable, err := parseJSON(data)
	if err != nil {
		return nil, err
	}
	return fromNode(root, checker{jsonInput: true, unstorable: unstorable})
}

// LoadDir parses every *.yaml and *.yml file in dir (not its subdirectories;
// names starting with a dot, such as editor lock files, are skipped), in
// file name order. Every broken file is reported, each error naming its
// file; two files defining the same namespace/name@version is an error too.
func LoadDir(dir string) ([]*Template, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("load templates: %w", err)
	}
	var (
		out  []*Template
		errs []error
		seen = map[string]string{} // key -> file defining it
	)
	for _, e := range entries {
		if !isTemplateFile(e) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		t, err := loadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := seen[t.Key()]; dup {
			errs = append(errs, fmt.Errorf("template file %s: %s is already defined in %s", path, t.Key(), prev))
			continue
		}
		seen[t.Key()] = path
		out = append(out, t)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func isTemplateFile(e os.DirEntry) bool {
	name := e.Name()
	ext := strings.ToLower(filepath.Ext(name))
	return !e.IsDir() && !strings.HasPrefix(name, ".") && (ext == ".yaml" || ext == ".yml")
}

func loadFile(path string) (*Template, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("template file %s: %w", path, err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("template file %s: %w", path, err)
	}
	return t, nil
}

// parseYAML reads exactly one YAML document into a node tree.
func parseYAML(data []byte) (*yaml.Node, error) {
	if err := checkSize(data); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, documentError("the document is empty")
		}
		return nil, documentError(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	// A second document would be ignored by a plain decode; a template file
	// holding two templates is a mistake worth saying so.
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, documentError(strings.TrimPrefix(err.Error(), "yaml: "))
	default:
		return nil, documentError(fmt.Sprintf("line %d: a file holds one template; found a second YAML document", extra.Line))
	}
	if err := checkExpansion(&root); err != nil {
		return nil, err
	}
	return &root, nil
}

// maxExpandedNodes bounds the nodes a YAML document stands for once its
// aliases are expanded. The decoder's own guard only catches documents that
// are mostly aliases; a long list used by alias from many places (a
// quadratic, not exponential, blow-up) passes it. A legitimate template at
// MaxDocumentBytes is well under this.
const maxExpandedNodes = 1 << 21

// checkExpansion refuses a document whose aliases expand past
// maxExpandedNodes, or that contains itself through an alias. It costs one
// visit per distinct node.
func checkExpansion(root *yaml.Node) error {
	sizes := map[*yaml.Node]int{}
	var size func(n *yaml.Node) (int, error)
	size = func(n *yaml.Node) (int, error) {
		if n == nil {
			return 0, nil
		}
		switch s, seen := sizes[n]; {
		case seen && s < 0:
			return 0, documentError(fmt.Sprintf("line %d: an alias refers to the value that contains it", n.Line))
		case seen:
			return s, nil
		}
		sizes[n] = -1 // in progress
		total := 1
		children := n.Content
		if n.Alias != nil {
			children = []*yaml.Node{n.Alias}
		}
		for _, c := range children {
			s, err := size(c)
			if err != nil {
				return 0, err
			}
			if total += s; total > maxExpandedNodes {
				return 0, documentError(fmt.Sprintf("the document's aliases expand to more than %d values", maxExpandedNodes))
			}
		}
		sizes[n] = total
		return total, nil
	}
	_, err := size(root)
	return err
}

func checkSize(data []byte) error {
	if len(data) > MaxDocumentBytes {
		return documentError(fmt.Sprintf("the document is %d bytes; at most %d are accepted", len(data), MaxDocumentBytes))
	}
	return nil
}

func documentError(msg string) error {
	return &ValidationError{Problems: []Problem{newProblem("", msg)}}
}

// fromNode checks (with c, set up for the input's format), decodes, defaults
// and validates a document tree.
func fromNode(root *yaml.Node, c checker) (*Template, error) {
	// The checker follows aliases; checkExpansion has bounded what that
	// costs (JSON has no aliases). The decoder's errors are only a fallback
	// for anything the checker lets through: the checker's come first, as
	// they name the field (the decoder gives up on a number it cannot hold
	// without saying where).
	var doc docTemplate
	decodeErr := root.Decode(&doc)
	c.checkDocument(root)
	onlyUnknownKeys := decodeErr == nil && c.probs.dropped == 0 && len(c.probs.list) == c.unknownKeys
	if err := c.probs.err(); err != nil && !onlyUnknownKeys {
		return nil, err
	}
	if decodeErr != nil {
		// The checker should have caught whatever the decoder refused; if
		// it did not, the decoder's own words are better than nothing.
		var typeErr *yaml.TypeError
		if !errors.As(decodeErr, &typeErr) {
			return nil, documentError(strings.TrimPrefix(decodeErr.Error(), "yaml: "))
		}
		var p problems
		for _, msg := range typeErr.Errors {
			p.add("", "%s", msg)
		}
		return nil, p.err()
	}
	// Unknown keys first, then what is wrong with the settings.
	withUnknownKeys := func(err error) error {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			return err
		}
		for _, p := range ve.Problems {
			c.probs.add(p.Path, "%s", p.Message)
		}
		return c.probs.err()
	}
	schema, err := schemaFromNode(c.schema)
	if err != nil {
		return nil, withUnknownKeys(err)
	}
	doc.ContextSchema = schema
	t := doc.template()
	if err := t.Validate(); err != nil {
		return nil, withUnknownKeys(err)
	}
	if err := c.probs.err(); err != nil {
		return nil, err
	}
	t.cache = &schemaCache{}
	t.byName = make(map[string]int, len(t.Steps))
	for i := range t.Steps {
		t.byName[t.Steps[i].Name] = i
	}
	return t, nil
}
