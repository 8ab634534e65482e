package jobs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// JobTypeExport is the only job type revsync runs.
const JobTypeExport = "export"

// DefaultBatchSize is a step's batch_size when its parameters name none.
const DefaultBatchSize = 100

// Job is a job definition: ordered steps run one after the other, in the
// spirit of Oro's batch_jobs.yml.
type Job struct {
	Name  string `yaml:"name"`
	Title string `yaml:"title"`
	Type  string `yaml:"type"` // "export"
	Steps []Step `yaml:"steps"`

	file string // where it was defined, for errors
}

// Step is one reader → processor → writer stage of a job. Reader, Processor
// and Writer are service names from the Registry.
type Step struct {
	Name       string         `yaml:"name"`
	Title      string         `yaml:"title"`
	Reader     string         `yaml:"reader"`
	Processor  string         `yaml:"processor"` // optional: items pass unchanged
	Writer     string         `yaml:"writer"`
	Parameters StepParameters `yaml:"parameters"`
}

// StepParameters are a step's settings.
type StepParameters struct {
	// BatchSize is how many processed items go to one Write call.
	// Default DefaultBatchSize.
	BatchSize int `yaml:"batch_size"`
}

// File returns the file the job was loaded from, if any.
func (j *Job) File() string { return j.file }

// jobFile is the shape of a job definitions file.
type jobFile struct {
	Jobs []Job `yaml:"jobs"`
}

// DefinitionError is a problem in a job definition or integration
// configuration. It names the file, the job or integration, the step or
// connector and the key that is wrong.
type DefinitionError struct {
	File  string
	Path  string // e.g. `job "x" step "export" key "reader"`
	Cause string
}

func (e *DefinitionError) Error() string {
	switch {
	case e.File != "" && e.Path != "":
		return fmt.Sprintf("%s: %s: %s", e.File, e.Path, e.Cause)
	case e.File != "":
		return fmt.Sprintf("%s: %s", e.File, e.Cause)
	case e.Path != "":
		return fmt.Sprintf("%s: %s", e.Path, e.Cause)
	}
	return e.Cause
}

// LoadJobFiles reads job definitions from files, in order, and checks them
// with ValidateJobs. Services are checked against reg when it is not nil.
func LoadJobFiles(reg *Registry, files ...string) ([]*Job, error) {
	var all []*Job
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, &DefinitionError{File: file, Cause: fmt.Sprintf("read job definitions: %v", err)}
		}
		jobs, err := ParseJobs(file, data)
		if err != nil {
			return nil, err
		}
		all = append(all, jobs...)
	}
	if err := ValidateJobs(reg, all); err != nil {
		return nil, err
	}
	return all, nil
}

// ParseJobs decodes a job definitions document strictly: an unknown key is
// an error. name is used in errors. It does not validate the jobs.
func ParseJobs(name string, data []byte) ([]*Job, error) {
	var f jobFile
	if err := decodeStrict(data, &f); err != nil {
		return nil, &DefinitionError{File: name, Cause: err.Error()}
	}
	jobs := make([]*Job, len(f.Jobs))
	for i := range f.Jobs {
		f.Jobs[i].file = name
		jobs[i] = &f.Jobs[i]
	}
	return jobs, nil
}

// ValidateJobs checks every job: a name, unique across all files; type
// export; at least one step; each step named uniquely within its job, with
// a reader and a writer; service names known to reg (when not nil); a
// batch_size that is not negative. Missing batch sizes get the default.
func ValidateJobs(reg *Registry, jobs []*Job) error {
	var errs []error
	seen := map[string]*Job{}
	for i, j := range jobs {
		bad := func(path, format string, args ...any) {
			errs = append(errs, &DefinitionError{File: j.file, Path: path, Cause: fmt.Sprintf(format, args...)})
		}
		if j.Name == "" {
			bad(fmt.Sprintf("jobs[%d]", i), `missing key "name"`)
			continue
		}
		jp := fmt.Sprintf("job %q", j.Name)
		if prev, ok := seen[j.Name]; ok {
			bad(jp, "duplicate job name (first defined in %s)", prev.file)
		}
		seen[j.Name] = j
		switch j.Type {
		case JobTypeExport:
		case "":
			bad(jp, `missing key "type" (want %q)`, JobTypeExport)
		default:
			bad(jp, `key "type": unknown job type %q (want %q)`, j.Type, JobTypeExport)
		}
		if len(j.Steps) == 0 {
			bad(jp, `missing key "steps": a job needs at least one step`)
		}
		steps := map[string]bool{}
		for k := range j.Steps {
			s := &j.Steps[k]
			if s.Name == "" {
				bad(fmt.Sprintf("%s steps[%d]", jp, k), `missing key "name"`)
				continue
			}
			sp := fmt.Sprintf("%s step %q", jp, s.Name)
			if steps[s.Name] {
				bad(sp, "duplicate step name")
			}
			steps[s.Name] = true
			check := func(key, name string, required bool, known func(string) bool) {
				switch {
				case name == "" && required:
					bad(sp, "missing key %q", key)
				case name != "" && reg != nil && !known(name):
					bad(sp, "key %q: unknown %s service %q (registered: %v)", key, key, name, reg.names(key))
				}
			}
			check("reader", s.Reader, true, reg.hasReader)
			check("processor", s.Processor, false, reg.hasProcessor)
			check("writer", s.Writer, true, reg.hasWriter)
			switch {
			case s.Parameters.BatchSize < 0:
				bad(sp, `key "parameters.batch_size": must be positive, got %d`, s.Parameters.BatchSize)
			case s.Parameters.BatchSize == 0:
				s.Parameters.BatchSize = DefaultBatchSize
			}
		}
	}
	return errors.Join(errs...)
}

// decodeStrict decodes YAML into v, refusing unknown keys. An empty document
// leaves v as it is.
func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
