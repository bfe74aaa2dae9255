// Package config is m3sup's own configuration file: its types, their
// defaults (Default), their checks (Validate) and the loader (Load) that
// reads one or more YAML files with go.uber.org/config, strictly and with
// ${VAR:default} expansion.
//
// Every error this package returns is a *FileError or a *FieldError (possibly
// several joined with errors.Join); IsConfigError tells them apart from other
// failures so the CLI can exit with a usage status.
//
// Import rule: standard library, go.uber.org/config, gopkg.in/yaml.v2 and
// internal/regularfile only; nothing else from m3sup.
package config
