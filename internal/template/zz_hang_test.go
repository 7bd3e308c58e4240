package template

import (
	"fmt"
	"testing"
	"time"
)

func FuzzHang(f *testing.F) {
	f.Add(readDemo(f))
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tm := time.AfterFunc(3*time.Second, func() { panic(fmt.Sprintf("hang on %q", data)) })
		defer tm.Stop()
		tmpl, err := Parse(data)
		checkParsed(t, tmpl, err)
	})
}
