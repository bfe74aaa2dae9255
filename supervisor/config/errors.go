package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// FileError is a problem with a whole file: it cannot be read, it is not
// valid YAML, or an ${VAR} in it cannot be expanded.
type FileError struct {
	File string
	Line int // 1-based; 0 when unknown
	Err  error
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(": line ")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FileError) Unwrap() error { return e.Err }

// FieldError is a problem with one field: an unknown key, a value of the
// wrong type, or a value Validate rejects.
type FieldError struct {
	// File is the file that set the field; empty when the value is a default
	// or several files contributed.
	File string
	// Path is the field's YAML path, like "cluster.namespaces[0].retention";
	// empty for the document itself.
	Path string
	// Unknown is set when the file has a key the configuration does not know.
	Unknown bool
	// Msg says what is wrong: for an unknown key, an optional did-you-mean
	// suggestion such as `did you mean "etcd.clientURL"?`.
	Msg string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	switch {
	case e.Unknown:
		fmt.Fprintf(&b, "unknown field %q", e.Path)
		if e.Msg != "" {
			b.WriteString(" (")
			b.WriteString(e.Msg)
			b.WriteString(")")
		}
		return b.String()
	case e.Path != "":
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// IsConfigError reports whether err (or any error joined or wrapped in it) is
// a *FileError or a *FieldError: the user's configuration is wrong, as opposed
// to m3sup failing.
func IsConfigError(err error) bool {
	var fe *FileError
	var de *FieldError
	return errors.As(err, &fe) || errors.As(err, &de)
}

// joinFieldErrors returns nil for no errors, and errors.Join otherwise.
func joinFieldErrors(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}
