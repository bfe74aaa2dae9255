// Package etcdtest starts a real single-member embedded etcd for tests.
package etcdtest
