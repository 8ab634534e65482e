package jobs

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
)

// Binding is what a service factory gets to build one service instance: the
// integration and connector it serves and the step it runs in.
type Binding struct {
	File        string // the configuration file, for errors
	Integration *Integration
	Connector   *Connector
	Job         *Job
	Step        *Step

	mu   sync.Mutex
	used map[string]bool
}

// Section decodes the connector's settings section name (for example
// "mapping" or "remote") into v, strictly: an unknown key is an error naming
// the file, integration, connector and key. A missing section leaves v
// unchanged and returns false.
func (b *Binding) Section(name string, v any) (bool, error) {
	n, ok := b.Connector.Sections[name]
	if !ok {
		return false, nil
	}
	b.mu.Lock()
	if b.used == nil {
		b.used = map[string]bool{}
	}
	b.used[name] = true
	b.mu.Unlock()
	if err := decodeNode(&n, v); err != nil {
		return true, b.Errorf("key %q: %v", name, err)
	}
	return true, nil
}

// Errorf returns a DefinitionError located at this binding's connector.
func (b *Binding) Errorf(format string, args ...any) error {
	return &DefinitionError{
		File:  b.File,
		Path:  fmt.Sprintf("integration %q connector %q", b.Integration.Name, b.Connector.Name),
		Cause: fmt.Sprintf(format, args...),
	}
}

// ReaderFactory builds a Reader for one binding.
type ReaderFactory func(b *Binding) (Reader, error)

// ProcessorFactory builds a Processor for one binding.
type ProcessorFactory func(b *Binding) (Processor, error)

// WriterFactory builds a Writer for one binding.
type WriterFactory func(b *Binding) (Writer, error)

// Registry maps service names, as job definitions use them, to factories.
// The zero value is empty and ready to use.
type Registry struct {
	readers    map[string]ReaderFactory
	processors map[string]ProcessorFactory
	writers    map[string]WriterFactory
}

// RegisterReader registers a reader factory under name, replacing any other.
func (r *Registry) RegisterReader(name string, f ReaderFactory) {
	if r.readers == nil {
		r.readers = map[string]ReaderFactory{}
	}
	r.readers[name] = f
}

// RegisterProcessor registers a processor factory under name.
func (r *Registry) RegisterProcessor(name string, f ProcessorFactory) {
	if r.processors == nil {
		r.processors = map[string]ProcessorFactory{}
	}
	r.processors[name] = f
}

// RegisterWriter registers a writer factory under name.
func (r *Registry) RegisterWriter(name string, f WriterFactory) {
	if r.writers == nil {
		r.writers = map[string]WriterFactory{}
	}
	r.writers[name] = f
}

func (r *Registry) hasReader(n string) bool    { _, ok := r.readers[n]; return ok }
func (r *Registry) hasProcessor(n string) bool { _, ok := r.processors[n]; return ok }
func (r *Registry) hasWriter(n string) bool    { _, ok := r.writers[n]; return ok }

func (r *Registry) names(kind string) []string {
	var names []string
	switch kind {
	case "reader":
		for n := range r.readers {
			names = append(names, n)
		}
	case "processor":
		for n := range r.processors {
			names = append(names, n)
		}
	case "writer":
		for n := range r.writers {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Route is what runs for one integration's connector: its export job with
// every step's services built.
type Route struct {
	Integration *Integration
	Connector   *Connector
	Job         *Job
	Steps       []RouteStep
}

// RouteStep is one job step with its services.
type RouteStep struct {
	Step      *Step
	Reader    Reader
	Processor Processor // nil: items pass unchanged
	Writer    Writer
}

// Catalog holds every configured route, built once at start-up.
type Catalog struct {
	routes       map[[2]string]*Route
	integrations map[string]*Integration
	closers      []Closer
}

// NewCatalog validates the integrations against the jobs and builds the
// services of every connector's export job with the registry's factories.
// Every connector settings section must be used by some service: a section
// no service reads is reported as an unknown key.
func NewCatalog(file string, reg *Registry, jobList []*Job, integrations []Integration) (*Catalog, error) {
	if err := ValidateJobs(reg, jobList); err != nil {
		return nil, err
	}
	if err := ValidateIntegrations(file, integrations, jobList); err != nil {
		return nil, err
	}
	jobsByName := map[string]*Job{}
	for _, j := range jobList {
		jobsByName[j.Name] = j
	}
	c := &Catalog{routes: map[[2]string]*Route{}, integrations: map[string]*Integration{}}
	var errs []error
	for i := range integrations {
		in := &integrations[i]
		c.integrations[in.Name] = in
		for k := range in.Connectors {
			conn := &in.Connectors[k]
			route, err := c.build(file, reg, in, conn, jobsByName[conn.ExportJob])
			if err != nil {
				errs = append(errs, err)
				continue
			}
			c.routes[[2]string{in.Name, conn.Name}] = route
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Catalog) build(file string, reg *Registry, in *Integration, conn *Connector, job *Job) (*Route, error) {
	route := &Route{Integration: in, Connector: conn, Job: job}
	used := map[string]bool{}
	var errs []error
	for i := range job.Steps {
		step := &job.Steps[i]
		b := &Binding{File: file, Integration: in, Connector: conn, Job: job, Step: step}
		rs := RouteStep{Step: step}
		var err error
		if rs.Reader, err = reg.readers[step.Reader](b); err != nil {
			errs = append(errs, err)
		}
		c.track(rs.Reader)
		if step.Processor != "" {
			if rs.Processor, err = reg.processors[step.Processor](b); err != nil {
				errs = append(errs, err)
			}
			c.track(rs.Processor)
		}
		if rs.Writer, err = reg.writers[step.Writer](b); err != nil {
			errs = append(errs, err)
		}
		c.track(rs.Writer)
		for name := range b.used {
			used[name] = true
		}
		route.Steps = append(route.Steps, rs)
	}
	var unused []string
	for name := range conn.Sections {
		if !used[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	for _, name := range unused {
		errs = append(errs, &DefinitionError{
			File:  file,
			Path:  fmt.Sprintf("integration %q connector %q", in.Name, conn.Name),
			Cause: fmt.Sprintf("unknown key %q (no service of job %q reads it)", name, job.Name),
		})
	}
	return route, errors.Join(errs...)
}

func (c *Catalog) track(s any) {
	if cl, ok := s.(Closer); ok && !slices.Contains(c.closers, cl) {
		c.closers = append(c.closers, cl)
	}
}

// Resolve returns the route for an integration's connector. An unknown
// integration or connector is a PermanentError of ClassUnknownRoute; a
// disabled integration (or one with two-way sync off) one of
// ClassIntegrationDisabled.
func (c *Catalog) Resolve(integration, connector string) (*Route, error) {
	in, ok := c.integrations[integration]
	if !ok {
		return nil, PermanentClass(ClassUnknownRoute, fmt.Errorf("unknown integration %q", integration))
	}
	route, ok := c.routes[[2]string{integration, connector}]
	if !ok {
		return nil, PermanentClass(ClassUnknownRoute, fmt.Errorf("integration %q has no connector %q", integration, connector))
	}
	if !in.IsEnabled() {
		return nil, PermanentClass(ClassIntegrationDisabled, fmt.Errorf("integration %q is disabled or has two-way sync off", integration))
	}
	return route, nil
}

// Routes returns every route, for start-up checks and listings.
func (c *Catalog) Routes() []*Route {
	routes := make([]*Route, 0, len(c.routes))
	for _, r := range c.routes {
		routes = append(routes, r)
	}
	sort.Slice(routes, func(i, j int) bool {
		a, b := routes[i], routes[j]
		if a.Integration.Name != b.Integration.Name {
			return a.Integration.Name < b.Integration.Name
		}
		return a.Connector.Name < b.Connector.Name
	})
	return routes
}

// Close closes every service that holds resources.
func (c *Catalog) Close() error {
	var errs []error
	for _, cl := range c.closers {
		errs = append(errs, cl.Close())
	}
	c.closers = nil
	return errors.Join(errs...)
}
