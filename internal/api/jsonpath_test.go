package api

import (
	"encoding/json"
	"errors"
	"testing"
)

// jsonPathAt names the value encoding/json refused, with array indexes,
// wherever it sits.
func TestJSONPathAtNamesTheRefusedValue(t *testing.T) {
	type item struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
		Tags     []int  `json:"tags"`
	}
	type body struct {
		Name  string          `json:"name"`
		Items []item          `json:"items"`
		Grid  [][]int         `json:"grid"`
		Meta  map[string]item `json:"meta"`
		Flag  bool            `json:"flag"`
	}
	cases := []struct{ body, want string }{
		{`{"name":5}`, "name"},
		{`{"name":"a","flag":"yes"}`, "flag"},
		{`{"items":[{"sku":"a","quantity":1},{"sku":"b","quantity":"2"}]}`, "items[1].quantity"},
		{`{"items":[{"sku":"a","tags":[1,2,"3"]}]}`, "items[0].tags[2]"},
		{`{"items":[{"sku":{"x":[1,{"y":2}]},"quantity":1}]}`, "items[0].sku"},
		{`{"items":[{"sku":"a","quantity":[]}]}`, "items[0].quantity"},
		{`{"grid":[[1],[2,3,{}]]}`, "grid[1][2]"},
		{`{"meta":{"k1":{"sku":"a"},"k2":{"quantity":true}}}`, "meta.k2.quantity"},
		{`{"items":{}}`, "items"},
		{`{"name":"a", "items" : [ {"quantity" : 1} , { "quantity" : 1.5 } ] }`, "items[1].quantity"},
	}
	for _, c := range cases {
		var v body
		err := json.Unmarshal([]byte(c.body), &v)
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			t.Fatalf("%s: %v is not a type error", c.body, err)
		}
		if got := jsonPathAt([]byte(c.body), te.Offset); got != c.want {
			t.Errorf("%s: path %q, want %q (encoding/json says %q at %d)", c.body, got, c.want, te.Field, te.Offset)
		}
	}
	if got := jsonPathAt([]byte(`{"a":1}`), 1000); got != "" {
		t.Errorf("offset past the body: %q, want none", got)
	}
}
