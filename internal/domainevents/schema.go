package domainevents

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/tasker/tasker/domainevents"
)

// schemaURL is the $id of domainevents/envelope.schema.json.
const schemaURL = "https://github.com/tasker/tasker/domainevents/envelope.schema.json"

var envelopeSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(domainevents.EnvelopeSchema))
	if err != nil {
		return nil, fmt.Errorf("envelope schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("envelope schema: %w", err)
	}
	s, err := c.Compile(schemaURL)
	if err != nil {
		return nil, fmt.Errorf("envelope schema: %w", err)
	}
	return s, nil
})

// ValidateEvent checks a message body against the envelope's JSON Schema
// (domainevents/envelope.schema.json), formats (date-time) included.
func ValidateEvent(body []byte) error {
	s, err := envelopeSchema()
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("event is not JSON: %w", err)
	}
	return s.Validate(v)
}
