package measure

import (
	"fmt"
	"slices"
	"time"
)

// Invalid data: timestamps no cold start can have. A log line in year 9999,
// a Ready condition before the pod's creation, a pull that lasted a
// negative time would give nonsense steps or a silent 0 s cold start; each
// is reported (ColdStart.Invalid, naming the file and field) and ignored,
// so the phase it would have bounded falls back to another source or is
// left unattributed, never wrong.

// clockSkew is how far before the pod's creation a timestamp written by a
// node (an event, a log line, a container start) may read before it is
// invalid: a node's clock may lag the API server's a little.
const clockSkew = time.Minute

// futureSlack is how far past the analysis's own time a timestamp may read:
// a bundle is recorded before it is read.
const futureSlack = 24 * time.Hour

// validator checks one pod's timestamps.
type validator struct {
	created time.Time // the pod's metadata.creationTimestamp
	latest  time.Time // now plus futureSlack
	invalid []string
}

func newValidator(p *Pod, now time.Time) *validator {
	return &validator{created: p.Created, latest: now.Add(futureSlack)}
}

// bad says why t is invalid ("" when it is not); strict allows no clock
// skew before creation (times the API server writes to the second).
func (v *validator) bad(t time.Time, strict bool) string {
	ts := t.UTC().Format(time.RFC3339Nano)
	switch {
	case t.IsZero():
		return ""
	case t.After(v.latest):
		return ts + " is in the future"
	case strict && t.Before(v.created), t.Before(v.created.Add(-clockSkew)):
		return ts + " is before the pod's creation (" + v.created.UTC().Format(time.RFC3339) + ")"
	}
	return ""
}

func (v *validator) report(source, why, what string) {
	v.invalid = append(v.invalid, fmt.Sprintf("%s: %s: %s ignored", source, why, what))
}

// pod returns p with its invalid conditions and container times dropped.
func (v *validator) pod(p *Pod) *Pod {
	q := *p
	q.Conditions = slices.DeleteFunc(slices.Clone(p.Conditions), func(c Condition) bool {
		why := v.bad(c.LastTransition, c.Type == "Ready") // Ready before creation: a 0 s cold start
		if why != "" {
			v.report(fmt.Sprintf("%s: status.conditions[%s].lastTransitionTime", PodsFile, c.Type), why, "the condition is")
		}
		return why != ""
	})
	q.Statuses = slices.Clone(p.Statuses)
	for i := range q.Statuses {
		s := &q.Statuses[i]
		list := "containerStatuses"
		if s.Init {
			list = "initContainerStatuses"
		}
		if why := v.bad(s.StartedAt, false); why != "" {
			v.report(fmt.Sprintf("%s: status.%s[%s].state.startedAt", PodsFile, list, s.Name), why, "the container's start is")
			s.StartedAt = time.Time{}
		}
		if why := v.bad(s.FinishedAt, false); why != "" {
			v.report(fmt.Sprintf("%s: status.%s[%s].state.terminated.finishedAt", PodsFile, list, s.Name), why, "it is")
			s.FinishedAt = time.Time{}
		}
	}
	return &q
}

// event reports whether e's time is valid, reporting it when it is not.
func (v *validator) event(e *Event) bool {
	why := v.bad(e.Time, false)
	if why != "" {
		v.report(fmt.Sprintf("%s: %s event (uid %s) time", EventsFile, e.Reason, e.UID), why, "the event is")
	}
	return why == ""
}

// pulled checks a Pulled event's stated durations and the start they give.
func (v *validator) pulled(e *Event, m pulledMessage) bool {
	source := fmt.Sprintf("%s: %s event (uid %s) message", EventsFile, e.Reason, e.UID)
	switch {
	case m.pull < 0 || m.inclusive < 0:
		v.report(source, fmt.Sprintf("the pull took %s (%s including waiting), a negative time", m.pull, m.inclusive), "the pull is")
		return false
	case m.inclusive > 0:
		if why := v.bad(e.Time.Add(-m.inclusive), false); why != "" {
			v.report(source, fmt.Sprintf("the pull's start (%s before the event) %s", m.inclusive, why), "the pull is")
			return false
		}
	}
	return true
}

// logs returns the logs with their invalid lines blanked (the lines
// keep their place, so line numbers in sources stay right), reporting the
// first of each file and how many more.
func (v *validator) logs(logs []*Log) []*Log {
	out := logs
	for i, l := range logs {
		var first string
		n := 0
		var lines []LogLine
		for j, ln := range l.Lines {
			why := v.bad(ln.Time, false)
			if why == "" {
				continue
			}
			if lines == nil {
				lines = slices.Clone(l.Lines)
				first = fmt.Sprintf("%s:%d: timestamp %s", l.File, j+1, why)
			}
			lines[j] = LogLine{} // no time, no text: no step comes from it
			n++
		}
		if lines == nil {
			continue
		}
		what := "the line is"
		if n > 1 {
			what = fmt.Sprintf("it and %d more such lines are", n-1)
		}
		v.invalid = append(v.invalid, first+": "+what+" ignored")
		if out[i] == l {
			out = slices.Clone(out)
		}
		c := *l
		c.Lines = lines
		out[i] = &c
	}
	return out
}

// node returns n with its invalid times dropped (nil for nil).
func (v *validator) node(n *Node) *Node {
	if n == nil {
		return nil
	}
	c := *n
	if t := n.Created; t.After(v.latest) {
		v.report(fmt.Sprintf("%s: node %s metadata.creationTimestamp", NodesFile, n.Name), v.bad(t, false), "the node's creation is")
		c.Created = time.Time{}
	}
	c.Conditions = slices.DeleteFunc(slices.Clone(n.Conditions), func(cd Condition) bool {
		if cd.LastTransition.After(v.latest) {
			v.report(fmt.Sprintf("%s: node %s status.conditions[%s].lastTransitionTime", NodesFile, n.Name, cd.Type), v.bad(cd.LastTransition, false), "the condition is")
			return true
		}
		return false
	})
	if t := n.GPUAllocatableAt; t.After(v.latest) {
		v.report(fmt.Sprintf("%s: node %s annotation %s", NodesFile, n.Name, GPUAllocatableAnnotation), v.bad(t, false), "it is")
		c.GPUAllocatableAt = time.Time{}
	}
	return &c
}
