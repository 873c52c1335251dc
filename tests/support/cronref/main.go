// Command cronref (built by tests/cluster/test_cron_against_kubernetes.py) answers, for each
// schedule read from stdin (one JSON object per line: {"schedule", "after" (RFC 3339), "count"}),
// what Kubernetes' CronJob parser makes of it (robfig/cron/v3's ParseStandard, which
// kube-apiserver validates with and the CronJob controller runs): an error, or the next
// "count" fire times after "after", in UTC.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"time"

	"github.com/robfig/cron/v3"
)

type query struct {
	Schedule string    `json:"schedule"`
	After    time.Time `json:"after"`
	Count    int       `json:"count"`
}

type answer struct {
	Error string      `json:"error,omitempty"`
	Next  []time.Time `json:"next,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var q query
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			panic(err)
		}
		var a answer
		// The CronJob controller evaluates schedules in its own time zone; the tests' is UTC.
		schedule, err := cron.ParseStandard(q.Schedule)
		if err != nil {
			a.Error = err.Error()
		} else {
			t := q.After.UTC()
			for i := 0; i < q.Count; i++ {
				t = schedule.Next(t)
				a.Next = append(a.Next, t.UTC())
			}
		}
		if err := out.Encode(a); err != nil {
			panic(err)
		}
	}
}
